"""The METR-LA dataset: speeds, sensor locations, road-graph adjacency, and the split.

``load_metrla()`` reads the bundled training+validation copy in ``data/metr-la/``
by default, or a user's file: the full dataset as ``metr-la.h5`` (pandas
HDFStore, key ``df``, 34,272 x 207) or an ``.npz`` with the bundled keys
(``speed``, ``timestamps``, ``sensor_ids``), from a local path or any Beam
filesystem (``hdfs://``, ``gs://``). A speed of exactly 0 means missing.

The split follows the standard protocol (DCRNN, Graph WaveNet): windows of 12
input steps ending at step t, targets t+1..t+12; the first 70% of the full
dataset's 34,249 windows train, the last 20% test, the 10% between validate.
Boundaries are fixed as timestamps of t, so any file (bundled, full, a slice)
splits the same way.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from config.settings import REPO_ROOT
from ml.exceptions import DataError

__all__ = [
    "BUNDLED_DIR",
    "DAY_MS",
    "day_parity",
    "STEP_MS",
    "TRAIN_END_MS",
    "VAL_END_MS",
    "METR_LA_SPLIT",
    "MetrLA",
    "Split",
    "load_metrla",
    "read_bytes",
    "load_sensor_locations",
    "network_sensor_ids",
    "load_adjacency",
    "split_of",
]

BUNDLED_DIR = REPO_ROOT / "data" / "metr-la"
STEP_MS = 5 * 60 * 1000
DAY_MS = 24 * 60 * 60 * 1000
_START_MS = int(np.datetime64("2012-03-01T00:00", "ms").astype(np.int64))
# The full dataset has 34,272 steps, hence 34,249 windows: train = first 23,974,
# test = last 6,850, validation = the 3,425 between. Window i ends at step t = i + 11.
TRAIN_END_MS = _START_MS + (23_974 + 11) * STEP_MS  # first t of validation
VAL_END_MS = _START_MS + (23_974 + 3_425 + 11) * STEP_MS  # first t of test


@dataclass(frozen=True)
class Split:
    """Chronological split by the time t of a window's last input step: train < train_end <= val < val_end <= test."""

    train_end_ms: int
    val_end_ms: int

    def __post_init__(self) -> None:
        if self.val_end_ms < self.train_end_ms:
            raise DataError("the split's validation period ends before its training period")

    def of(self, times_ms: np.ndarray) -> np.ndarray:
        """'train', 'val' or 'test' for each step t used as a window's last input."""
        times_ms = np.asarray(times_ms)
        return np.where(times_ms < self.train_end_ms, "train", np.where(times_ms < self.val_end_ms, "val", "test"))


METR_LA_SPLIT = Split(TRAIN_END_MS, VAL_END_MS)


@dataclass(frozen=True)
class MetrLA:
    """Speeds (T, N) with 0 = missing, step times in epoch ms, sensor ids in column order, and their split.

    The name is historical: any network's readings load into this (``ml.network``); ``split`` is METR-LA's
    protocol unless the network says otherwise.
    """

    speed: np.ndarray
    times_ms: np.ndarray
    sensor_ids: tuple[str, ...]
    split: Split = METR_LA_SPLIT
    step_ms: int = STEP_MS  # the network's step length (rows are steps; gaps are whole steps)

    def __post_init__(self) -> None:
        if self.speed.ndim != 2 or self.speed.shape != (len(self.times_ms), len(self.sensor_ids)):
            raise DataError(
                f"speed has shape {self.speed.shape}, expected ({len(self.times_ms)}, {len(self.sensor_ids)})"
            )
        if len(self.times_ms) > 1 and np.any(np.diff(self.times_ms) <= 0):
            at = int(np.flatnonzero(np.diff(self.times_ms) <= 0)[0]) + 1
            what = "a duplicate time" if self.times_ms[at] == self.times_ms[at - 1] else "out of order"
            raise DataError(f"timestamps are not strictly increasing: step {at} "
                            f"({np.datetime64(int(self.times_ms[at]), 'ms')}) is {what}")

    @property
    def n_steps(self) -> int:
        return len(self.times_ms)

    def between(self, start_ms: int | None = None, end_ms: int | None = None) -> MetrLA:
        """Steps with start_ms <= time < end_ms."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.times_ms, start_ms, side="left"))
        hi = self.n_steps if end_ms is None else int(np.searchsorted(self.times_ms, end_ms, side="left"))
        return replace(self, speed=self.speed[lo:hi], times_ms=self.times_ms[lo:hi])

    def only(self, sensor_ids: list[str] | tuple[str, ...]) -> MetrLA:
        index = {sid: i for i, sid in enumerate(self.sensor_ids)}
        unknown = [sid for sid in sensor_ids if sid not in index]
        if unknown:
            raise DataError(f"unknown sensor ids: {', '.join(unknown[:5])}")
        cols = [index[sid] for sid in sensor_ids]
        return replace(self, speed=self.speed[:, cols], sensor_ids=tuple(sensor_ids))

    def with_split(self, split: Split) -> MetrLA:
        return replace(self, split=split)

    def with_step(self, step_ms: int) -> MetrLA:
        return replace(self, step_ms=int(step_ms))


def read_bytes(path: str, hdfs_options: dict | None = None) -> bytes:
    """The bytes of a local file or a Beam filesystem URL (``hdfs://``, ``gs://``), or a one-line DataError."""
    if "://" not in path:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            raise DataError(f"data file {path} does not exist") from None
        except IsADirectoryError:
            raise DataError(f"{path} is a directory, not a data file") from None
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    if hdfs_options:
        FileSystems.set_options(PipelineOptions.from_dictionary(hdfs_options))
    try:
        with FileSystems.open(path) as handle:
            return handle.read()
    except Exception as exc:  # noqa: BLE001 - filesystems raise their own types
        raise DataError(f"cannot read {path}: {exc}") from None


def _from_npz(data: bytes, source: str) -> MetrLA:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            speed = np.asarray(npz["speed"], dtype=np.float64)
            times = np.asarray(npz["timestamps"]).astype("datetime64[ms]").astype(np.int64)
            sensor_ids = tuple(str(s) for s in npz["sensor_ids"])
    except KeyError as exc:
        raise DataError(f"{source} lacks the key {exc}; expected speed, timestamps, sensor_ids") from None
    except ValueError as exc:
        raise DataError(f"{source} is not a readable .npz file: {exc}") from None
    return MetrLA(speed, times, sensor_ids)


def _from_h5(data: bytes, source: str) -> MetrLA:
    import pandas as pd

    with tempfile.NamedTemporaryFile(suffix=".h5") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            frame = pd.read_hdf(tmp.name, key="df")
        except Exception as exc:  # noqa: BLE001 - PyTables raises its own HDF5ExtError on corrupt files
            raise DataError(f"{source} is not a METR-LA HDFStore with key 'df': {type(exc).__name__}") from None
    times = pd.DatetimeIndex(frame.index).as_unit("ms").asi8.astype(np.int64)
    return MetrLA(frame.to_numpy(dtype=np.float64), times, tuple(str(c) for c in frame.columns))


def day_parity(times_ms: np.ndarray) -> np.ndarray:
    """0 or 1 for each time: the parity of its UTC day number. The project's two halves of the days: validation
    selects models on even days and calibrates intervals on odd ones; the network ridge is cross-fitted on them."""
    return (np.asarray(times_ms, dtype=np.int64) // DAY_MS) % 2


def load_metrla(path: str | Path | None = None, hdfs_options: dict | None = None) -> MetrLA:
    """Load speeds from ``path`` (.npz or .h5, local or a Beam filesystem URL); bundled data by default."""
    source = str(path) if path is not None else str(BUNDLED_DIR / "speed.npz")
    data = read_bytes(source, hdfs_options)
    if source.endswith((".h5", ".hdf5")):
        return _from_h5(data, source)
    if source.endswith(".npz"):
        return _from_npz(data, source)
    raise DataError(f"{source}: unsupported format; give a .npz or .h5 file")


def network_sensor_ids(path: Path | None = None) -> tuple[str, ...]:
    """Every sensor of the network (``sensors.csv``), in file order: what validation accepts."""
    path = path or BUNDLED_DIR / "sensors.csv"
    try:
        rows = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"sensor metadata {path} does not exist") from None
    return tuple(str(r["sensor_id"]) for r in np.atleast_1d(rows))


def load_sensor_locations(sensor_ids: tuple[str, ...], path: Path | None = None) -> np.ndarray:
    """(N, 2) latitude, longitude in ``sensor_ids`` order."""
    path = path or BUNDLED_DIR / "sensors.csv"
    rows = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    by_id = {str(r["sensor_id"]): (float(r["latitude"]), float(r["longitude"])) for r in rows}
    missing = [sid for sid in sensor_ids if sid not in by_id]
    if missing:
        raise DataError(f"no location for sensors {', '.join(missing[:5])} in {path}")
    return np.array([by_id[sid] for sid in sensor_ids], dtype=np.float64)


def load_adjacency(sensor_ids: tuple[str, ...], path: Path | None = None) -> np.ndarray:
    """(N, N) road-graph weights (diagonal 1) in ``sensor_ids`` order."""
    path = path or BUNDLED_DIR / "adjacency.npz"
    with np.load(path, allow_pickle=False) as npz:
        adjacency = np.asarray(npz["adjacency"], dtype=np.float64)
        order = [str(s) for s in npz["sensor_ids"]]
    index = {sid: i for i, sid in enumerate(order)}
    missing = [sid for sid in sensor_ids if sid not in index]
    if missing:
        raise DataError(f"no adjacency for sensors {', '.join(missing[:5])} in {path}")
    cols = [index[sid] for sid in sensor_ids]
    return adjacency[np.ix_(cols, cols)]


def split_of(times_ms: np.ndarray, split: Split = METR_LA_SPLIT) -> np.ndarray:
    """The split of each step t used as a window's last input: 'train', 'val' or 'test' (METR-LA's protocol)."""
    return split.of(times_ms)
