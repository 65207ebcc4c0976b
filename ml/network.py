"""A sensor network: its readings, sensor locations, road graph, step length, split, and how it is shown.

A network is a directory with one manifest, ``network.json``, beside its files::

    network.json   {"name", "title", "step_s", "split": {"train_end", "val_end", "how"}, "graph": "<how it was made>"}
    speed.npz      readings, wide: speed (T, N) float64 with 0 = missing, timestamps, sensor_ids
    sensors.csv    sensor_id,latitude,longitude
    adjacency.npz  adjacency (N, N) weights (diagonal 1), sensor_ids

The bundled METR-LA copy (``data/metr-la/``) is such a directory, and the
default. ``traffic network import`` (``ml.network_import``) turns a user's
files into one under ``<work_dir>/networks/<name>/``. Every command takes
``--network NAME|DIR``; the default is the ``TRAFFIC_NETWORK`` setting.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from config.settings import PlatformSettings
from ml.dataset import BUNDLED_DIR, MetrLA, Split, load_adjacency, load_metrla, load_sensor_locations
from ml.exceptions import DataError

__all__ = [
    "BUNDLED_NETWORK",
    "MANIFEST",
    "Network",
    "add_network_argument",
    "check_network",
    "load_network",
    "network_dir",
    "network_of",
    "parse_time_ms",
    "known_networks",
    "write_manifest",
]

BUNDLED_NETWORK = "metr-la"
MANIFEST = "network.json"
_ISO = "%Y-%m-%dT%H:%M"


def parse_time_ms(text: str, what: str) -> int:
    try:
        return int(np.datetime64(text, "ms").astype(np.int64))
    except ValueError:
        raise DataError(f"{what}: {text!r} is not a date or time (YYYY-MM-DD[THH:MM])") from None


def _iso(ms: int) -> str:
    return str(np.datetime64(int(ms), "ms").astype("datetime64[m]"))


@dataclass(frozen=True)
class Network:
    """One network directory, read from its manifest. Arrays are loaded on demand."""

    name: str
    title: str
    root: Path
    step_ms: int
    split: Split
    split_how: str
    graph_how: str

    @cached_property
    def sensor_ids(self) -> tuple[str, ...]:
        """Every sensor of the network, in ``sensors.csv`` order: what validation accepts."""
        from ml.dataset import network_sensor_ids

        return network_sensor_ids(self.root / "sensors.csv")

    def readings(self, path: str | Path | None = None, hdfs_options: dict | None = None) -> MetrLA:
        """The network's readings (or ``path``'s, which must hold only its sensors), with its split and step."""
        data = load_metrla(path if path is not None else self.root / "speed.npz", hdfs_options)
        unknown = sorted(set(data.sensor_ids) - set(self.sensor_ids))
        if unknown:
            raise DataError(f"{path} holds {len(unknown)} sensors that network {self.name!r} does not have: "
                            f"{', '.join(unknown[:5])}")
        return data.with_split(self.split).with_step(self.step_ms)

    def locations(self, sensor_ids: tuple[str, ...] | None = None) -> np.ndarray:
        """(N, 2) latitude, longitude in ``sensor_ids`` order (default: every sensor)."""
        return load_sensor_locations(sensor_ids or self.sensor_ids, self.root / "sensors.csv")

    def adjacency(self, sensor_ids: tuple[str, ...] | None = None) -> np.ndarray:
        """(N, N) road-graph weights in ``sensor_ids`` order (default: every sensor)."""
        return load_adjacency(tuple(sensor_ids or self.sensor_ids), self.root / "adjacency.npz")

    def road_links(self, sensor_ids: tuple[str, ...] | None = None) -> tuple[tuple[str, str], ...]:
        """The undirected road links between ``sensor_ids`` that incidents follow and the dashboard draws."""
        from ml.road_graph import road_links

        ids = tuple(sensor_ids or self.sensor_ids)
        return tuple((ids[i], ids[j]) for i, j in road_links(self.adjacency(ids)))

    def home_under(self, root: str) -> str:
        """Where this network's files (models, training tables) live under ``root``: METR-LA's at the root itself,
        an imported network's under ``root/networks/<name>``."""
        return root if self.name == BUNDLED_NETWORK else f"{root.rstrip('/')}/networks/{self.name}"

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, "root": str(self.root), "step_s": self.step_ms // 1000,
                "sensors": len(self.sensor_ids), "split": {"train_end": _iso(self.split.train_end_ms),
                                                           "val_end": _iso(self.split.val_end_ms),
                                                           "how": self.split_how},
                "graph": self.graph_how}


def write_manifest(root: Path, *, name: str, title: str, step_ms: int, split: Split, split_how: str,
                   graph_how: str) -> Path:
    """Write ``root/network.json`` (the other files must already be there)."""
    manifest = {"name": name, "title": title, "step_s": step_ms // 1000,
                "split": {"train_end": _iso(split.train_end_ms), "val_end": _iso(split.val_end_ms), "how": split_how},
                "graph": graph_how}
    path = root / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _networks_home(settings: PlatformSettings | None = None) -> Path:
    return (settings or PlatformSettings()).work_dir / "networks"


def known_networks(settings: PlatformSettings | None = None) -> tuple[str, ...]:
    """The bundled network and every imported one, by name."""
    home = _networks_home(settings)
    imported = sorted(p.parent.name for p in home.glob(f"*/{MANIFEST}")) if home.is_dir() else []
    return (BUNDLED_NETWORK, *imported)


def network_dir(ref: str | Path, settings: PlatformSettings | None = None) -> Path:
    """The directory of network ``ref``: a name (bundled or imported) or a path to a network directory."""
    text = str(ref)
    if text == BUNDLED_NETWORK:
        return BUNDLED_DIR
    as_path = Path(text).expanduser()
    if (as_path / MANIFEST).is_file():
        return as_path
    named = _networks_home(settings) / text
    if "/" not in text and (named / MANIFEST).is_file():
        return named
    if as_path.exists():
        raise DataError(f"{text} is not a network directory (it has no {MANIFEST}); "
                        "make one with `traffic network import`")
    raise DataError(f"no network {text!r}; known: {', '.join(known_networks(settings))} "
                    "(add one with `traffic network import`)")


def load_network(ref: str | Path | None = None, settings: PlatformSettings | None = None) -> Network:
    """The network ``ref`` names (default: the ``TRAFFIC_NETWORK`` setting, METR-LA unless set)."""
    settings = settings or PlatformSettings()
    root = network_dir(ref if ref is not None else settings.network, settings)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        split = manifest["split"]
        return Network(
            name=str(manifest["name"]), title=str(manifest.get("title") or manifest["name"]), root=root,
            step_ms=int(manifest["step_s"]) * 1000,
            split=Split(parse_time_ms(split["train_end"], "split train_end"),
                        parse_time_ms(split["val_end"], "split val_end")),
            split_how=str(split.get("how", "")), graph_how=str(manifest.get("graph", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{root / MANIFEST} is not a valid network manifest ({type(exc).__name__}: {exc})") from None


def check_network(bundle: object, network: Network) -> None:
    """A one-line DataError when a model bundle was trained on another network (older bundles: METR-LA)."""
    trained_on = getattr(bundle, "metadata", {}).get("network", BUNDLED_NETWORK)
    if trained_on != network.name:
        raise DataError(f"model {getattr(bundle, 'version', '?')} was trained on network {trained_on!r}, not "
                        f"{network.name!r}: train one with `traffic train --network {network.name}`")


def add_network_argument(parser: argparse.ArgumentParser) -> None:
    """``--network NAME|DIR`` for a command (the default is the TRAFFIC_NETWORK setting, METR-LA unless set)."""
    parser.add_argument("--network", default=None, metavar="NAME|DIR",
                        help="the sensor network: 'metr-la' (bundled), a name imported with `traffic network "
                             "import`, or a network directory (default: $TRAFFIC_NETWORK, else metr-la)")


def network_of(args: argparse.Namespace) -> Network:
    """The network a parsed command line names (``--network``, else the setting)."""
    return load_network(getattr(args, "network", None))
