"""The feature tables training reads: where they live, when they are stale, and building them.

``traffic train`` trains on the tables ``traffic batch features`` writes. Its
tables live in a directory of their own (``<feature_tables_root>/<name>``,
local or ``hdfs://``)::

    <dir>/features/{train,val,test}/part-*.parquet   the batch pipeline's feature+target tables
    <dir>/features/context.npz                        the FeatureContext they were built with
    <dir>/manifest.json                               what they were built from (written last)

Tables are **stale** for a request, and are rebuilt, when any field of the
manifest's ``key`` differs from the request's (:func:`stale_reason`):

- ``input``: the input files, each as (path, size in bytes, modification time),
  from the filesystem's file status (local or HDFS); the bundled copy is
  ``data/metr-la/speed.npz``;
- ``start_ms``, ``end_ms`` and ``sensors``: the time range and sensor list asked for;
- ``feature_code``: :func:`feature_code_version`, a hash of the feature names,
  history length, horizons, table columns, :data:`FEATURE_TABLE_VERSION` and
  the source text of ``ml/features.py``, ``ml/feature_context.py``,
  ``ml/network_ridge.py``, ``ml/dataset.py`` (the day parity the ridge's folds
  use) and ``pipelines/tables.py`` (any edit of the feature function, its
  context or the table writer rebuilds).

Tables are also stale when the manifest is missing or unreadable, or the train
or validation directory has no Parquet file. A build first deletes the manifest
and the old tables, so an interrupted build is stale, never half-read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ml.dataset import BUNDLED_DIR, METR_LA_SPLIT, Split
from ml.exceptions import DataError
from ml.features import FEATURE_NAMES, HISTORY_STEPS, HORIZON_STEPS, HORIZONS_MIN, FeatureContext
from ml.training_set import FEATURE_TABLE_COLUMNS, ExampleMeta, read_feature_table
from pipelines.tables import join_path, read_context

__all__ = [
    "FEATURE_TABLE_VERSION",
    "MANIFEST_FILE",
    "TableRequest",
    "build_tables",
    "ensure_tables",
    "expected_rows",
    "feature_code_version",
    "input_fingerprint",
    "read_manifest",
    "read_training_tables",
    "stale_reason",
]

FEATURE_TABLE_VERSION = 1  # bump when the tables' meaning changes in a way the hashed sources do not show
MANIFEST_FILE = "manifest.json"
TRAINING_SPLITS: tuple[str, ...] = ("train", "val")
_LOG = logging.getLogger("traffic.train")


@dataclass(frozen=True)
class TableRequest:
    """The tables wanted: an input (None = the bundled copy), a time range [start_ms, end_ms) and sensors."""

    data: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    sensors: tuple[str, ...] | None = None
    hdfs_options: tuple[tuple[str, Any], ...] = ()
    network: str | None = None  # the network's directory (None: the TRAFFIC_NETWORK setting)


def _filesystems(hdfs_options: tuple[tuple[str, Any], ...]) -> Any:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    if hdfs_options:
        FileSystems.set_options(PipelineOptions.from_dictionary(dict(hdfs_options)))
    return FileSystems


def feature_code_version() -> str:
    """A hash of what decides the tables' contents besides the data (see the module doc)."""
    import ml.dataset
    import ml.feature_context
    import ml.features
    import ml.network_ridge
    import pipelines.tables

    digest = hashlib.sha256()
    constants = [FEATURE_TABLE_VERSION, list(FEATURE_NAMES), HISTORY_STEPS, list(HORIZONS_MIN),
                 sorted(HORIZON_STEPS.items()), list(FEATURE_TABLE_COLUMNS)]
    digest.update(json.dumps(constants).encode())
    for module in (ml.dataset, ml.features, ml.feature_context, ml.network_ridge, pipelines.tables):
        with open(module.__file__, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def _input_pattern(path: str) -> str:
    from pipelines.sources import is_parquet

    stripped = path.rstrip("/")
    if is_parquet(path) and not stripped.endswith((".parquet", ".parq", ".pq")) and "*" not in stripped:
        return stripped + "/*.parquet"  # a directory of shards, as the batch source reads it
    return stripped


def input_fingerprint(path: str | None, hdfs_options: tuple[tuple[str, Any], ...] = ()) -> list[list[Any]]:
    """[path, size, mtime] of every input file, from the filesystem's status (local or hdfs://)."""
    source = path or str(BUNDLED_DIR / "speed.npz")
    fs = _filesystems(hdfs_options)
    pattern = _input_pattern(source)
    try:
        found = fs.match([pattern])[0].metadata_list
    except Exception as exc:  # noqa: BLE001 - filesystems raise their own types
        raise DataError(f"data file {source} cannot be read: {' '.join(str(exc).split())[:200]}") from None
    if not found:
        raise DataError(f"data file {source} does not exist")
    return sorted([m.path, int(m.size_in_bytes), round(float(m.last_updated_in_seconds), 3)] for m in found)


def _key(request: TableRequest) -> dict[str, Any]:
    from ml.network import load_network

    network = load_network(request.network)
    return {
        "network": [network.name, network.step_ms, network.split.train_end_ms, network.split.val_end_ms],
        "input": input_fingerprint(request.data or str(network.root / "speed.npz"), request.hdfs_options),
        "start_ms": request.start_ms,
        "end_ms": request.end_ms,
        "sensors": list(request.sensors) if request.sensors else None,
        "feature_code": feature_code_version(),
    }


def read_manifest(directory: str, hdfs_options: tuple[tuple[str, Any], ...] = ()) -> dict[str, Any] | None:
    """The manifest of the tables in ``directory``, or None when it is missing or unreadable."""
    fs = _filesystems(hdfs_options)
    path = join_path(directory, MANIFEST_FILE)
    try:
        if not fs.exists(path):
            return None
        with fs.open(path) as handle:
            manifest = json.loads(handle.read().decode("utf-8"))
    except Exception:  # noqa: BLE001 - unreadable means stale
        return None
    return manifest if isinstance(manifest, dict) else None


def _has_parquet(directory: str, fs: Any) -> bool:
    try:
        return bool(fs.match([join_path(directory, "*.parquet")])[0].metadata_list)
    except Exception:  # noqa: BLE001 - a missing directory matches nothing
        return False


_WHAT_CHANGED = {"input": "the input data changed", "start_ms": "the time range changed",
                 "end_ms": "the time range changed", "sensors": "the sensor list changed",
                 "feature_code": "the feature code changed"}


def stale_reason(directory: str, request: TableRequest, key: dict[str, Any] | None = None) -> str | None:
    """Why the tables in ``directory`` cannot serve ``request`` (None: they are up to date).

    ``key`` is the request's manifest key when already computed (it reads the input files' status).
    """
    key = key or _key(request)  # first: a missing input is its own error, not a reason to build
    manifest = read_manifest(directory, request.hdfs_options)
    if manifest is None:
        return "no tables (or no manifest) yet"
    built = manifest.get("key", {})
    for field, value in key.items():
        if built.get(field) != value:
            return _WHAT_CHANGED[field]
    fs = _filesystems(request.hdfs_options)
    for split in TRAINING_SPLITS:
        if not _has_parquet(join_path(directory, "features", split), fs):
            return f"the {split} table has no Parquet file"
    return None


def _iso(ms: int) -> str:
    return str(np.datetime64(int(ms), "ms"))


def _batch_argv(directory: str, request: TableRequest, runner: str, progress_every: int) -> list[str]:
    argv = ["features", "--output", directory, "--runner", runner, "--progress-every", str(progress_every)]
    if request.network:
        argv += ["--network", request.network]
    if request.data:
        argv += ["--data", request.data]
    if request.start_ms is not None:
        argv += ["--start", _iso(request.start_ms)]
    if request.end_ms is not None:
        argv += ["--end", _iso(request.end_ms)]
    if request.sensors:
        argv += ["--sensors", ",".join(request.sensors)]
    return argv


def expected_rows(window_ends_ms: frozenset[int], n_sensors: int, split: Split = METR_LA_SPLIT) -> dict[str, int]:
    """Rows per split the tables must hold: one per protocol window and sensor."""
    ends = np.array(sorted(window_ends_ms), dtype=np.int64)
    splits = split.of(ends).astype(str) if len(ends) else np.array([], dtype=str)
    return {split: int(np.sum(splits == split)) * n_sensors for split in ("train", "val", "test")}


def build_tables(directory: str, request: TableRequest, runner: str = "direct", progress_every: int = 100_000,
                 say: Callable[[str], None] = _LOG.info, key: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``traffic batch features`` for ``request`` into ``directory``, then write its manifest; the manifest."""
    from pipelines.batch_cli import build_parser, configure_logging, execute, summarise
    from pipelines.beam_flags import parse_args

    fs = _filesystems(request.hdfs_options)
    key = key or _key(request)  # before the run: an input changed during the build is caught by the next check
    stale = [p for p in (join_path(directory, MANIFEST_FILE), join_path(directory, "features")) if fs.exists(p)]
    if stale:
        fs.delete(stale)
    configure_logging()
    outcome = execute(parse_args(build_parser(), _batch_argv(directory, request, runner, progress_every)))
    summary, balanced = summarise(outcome.cfg, outcome.counts, outcome.wall_s)
    for line in summary.splitlines():
        say(line.strip())
    if not balanced:
        raise DataError(f"the batch pipeline's counts do not add up; tables in {directory} left without a manifest")
    rows = expected_rows(outcome.cfg.window_ends_ms, len(outcome.cfg.sensor_ids), outcome.cfg.split)
    written = int(outcome.counts.get("feature_rows", -1))
    if written != sum(rows.values()):  # one row per protocol window and sensor, nothing lost
        raise DataError(f"the batch pipeline wrote {written:,} feature rows, expected {sum(rows.values()):,} "
                        f"(windows x sensors); tables in {directory} left without a manifest, the next run rebuilds")
    manifest = {
        "key": key,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(outcome.wall_s, 1),
        "feature_rows": written,
        "rows": rows,
        "sensor_ids": list(outcome.cfg.sensor_ids),
        "command": "traffic batch " + " ".join(_batch_argv(directory, request, runner, progress_every)),
    }
    with fs.create(join_path(directory, MANIFEST_FILE)) as handle:
        handle.write(json.dumps(manifest, indent=1).encode("utf-8"))
    return manifest


def ensure_tables(directory: str, request: TableRequest, runner: str = "direct", rebuild: bool = False,
                  say: Callable[[str], None] = _LOG.info) -> tuple[dict[str, Any], bool]:
    """(the manifest of up-to-date tables in ``directory``, whether they were built now)."""
    key = _key(request)
    reason = "--rebuild-tables" if rebuild else stale_reason(directory, request, key)
    if reason is None:
        manifest = read_manifest(directory, request.hdfs_options)
        assert manifest is not None
        say(f"feature tables: up to date in {directory} (built {manifest.get('built_at')})")
        return manifest, False
    say(f"feature tables: building them in {directory} with the batch pipeline on {runner} ({reason})")
    started = time.monotonic()
    manifest = build_tables(directory, request, runner, say=say, key=key)
    say(f"feature tables: built in {time.monotonic() - started:.0f} s, {manifest['feature_rows']:,} rows")
    return manifest, True


def read_training_tables(
    features_dir: str, sensor_ids: tuple[str, ...] | None = None, hdfs_options: tuple[tuple[str, Any], ...] = ()
) -> tuple[tuple[np.ndarray, np.ndarray, ExampleMeta], FeatureContext | None]:
    """((X, Y, meta) of the train and validation tables, the context beside them or None).

    ``features_dir`` holds ``train/`` and ``val/`` (the batch pipeline's layout) or is itself a table
    (a Parquet file or a directory of them).
    """
    fs = _filesystems(hdfs_options)
    ctx = read_context(features_dir)
    ids = sensor_ids or (tuple(ctx.sensor_ids) if ctx is not None else None)
    if not all(_has_parquet(join_path(features_dir, split), fs) for split in TRAINING_SPLITS):
        return read_feature_table(features_dir, sensor_ids=ids), ctx
    parts = [read_feature_table(join_path(features_dir, split), sensor_ids=ids) for split in TRAINING_SPLITS]
    if ids is None and parts[0][2].sensor_ids != parts[1][2].sensor_ids:
        raise DataError(f"{features_dir}: the train and val tables hold different sensors and there is no context")
    meta = ExampleMeta(np.concatenate([p[2].sensor_index for p in parts]),
                       np.concatenate([p[2].step_ms for p in parts]), parts[0][2].sensor_ids)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), meta), ctx

