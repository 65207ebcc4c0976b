"""Feature and target tables: sliding windows of the standard protocol through ``build_features``.

A window ends at step t (its last input); its targets are the readings at
t + 15, 30 and 60 minutes (steps t+3, t+6, t+12). As in DCRNN / Graph WaveNet,
a window exists only when all 12 inputs and all 12 following steps are in the
data, and its split is the split of t. Targets equal to 0 are missing (NaN here)
and are ignored by training and by the masked metrics.

The in-process path (``examples``) and the Beam batch pipeline both call
``ml.features.build_features[_batch]`` and write the same Parquet columns
(``FEATURE_TABLE_COLUMNS``), which ``read_feature_table`` reads back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.dataset import METR_LA_SPLIT, MetrLA, Split
from ml.exceptions import DataError
from ml.features import (
    FEATURE_NAMES,
    HISTORY_STEPS,
    HORIZONS_MIN,
    FeatureContext,
    build_features_batch,
    history_from_speeds,
    window_target_steps,
)

__all__ = [
    "FEATURE_TABLE_COLUMNS",
    "TARGET_COLUMNS",
    "WINDOW_TARGET_STEPS",
    "ExampleMeta",
    "examples",
    "iter_example_chunks",
    "read_feature_table",
    "window_ends",
    "write_feature_table",
]

WINDOW_TARGET_STEPS = 12  # at 5-minute steps the protocol's windows need t+1 .. t+12 (window_target_steps)
TARGET_COLUMNS: tuple[str, ...] = tuple(f"y_{h}" for h in HORIZONS_MIN)
FEATURE_TABLE_COLUMNS: tuple[str, ...] = ("sensor_id", "step_ms", "split", *FEATURE_NAMES, *TARGET_COLUMNS)


@dataclass(frozen=True)
class ExampleMeta:
    """Row keys: sensor column index (into ``sensor_ids``) and the window's last input step t."""

    sensor_index: np.ndarray
    step_ms: np.ndarray
    sensor_ids: tuple[str, ...]

    @property
    def sensor_id(self) -> np.ndarray:
        return np.asarray(self.sensor_ids, dtype=object)[self.sensor_index]

    def take(self, rows: np.ndarray) -> ExampleMeta:
        return ExampleMeta(self.sensor_index[rows], self.step_ms[rows], self.sensor_ids)


def window_ends(data: MetrLA, split: str | None = None, stride: int = 1) -> np.ndarray:
    """Indices t of the windows in ``data`` (optionally of one split), every ``stride``-th one.

    A window is the 12 input steps up to t and the steps after it to the farthest horizon (12 at 5 minutes).
    """
    after = window_target_steps(data.step_ms)
    t = np.arange(HISTORY_STEPS - 1, data.n_steps - after)
    if len(t) == 0:
        return t
    # Windows must be contiguous in time (a sliced or gappy file must not join distant steps).
    times = data.times_ms
    ok = (times[t + after] - times[t - HISTORY_STEPS + 1]) == (after + HISTORY_STEPS - 1) * data.step_ms
    t = t[ok]
    if split is not None:
        t = t[data.split.of(times[t]) == split]
    return t[::stride]


def _sensor_columns(data: MetrLA, sensors: Sequence[str] | None) -> np.ndarray:
    if sensors is None:
        return np.arange(len(data.sensor_ids))
    index = {sid: i for i, sid in enumerate(data.sensor_ids)}
    unknown = [s for s in sensors if s not in index]
    if unknown:
        raise DataError(f"unknown sensor ids: {', '.join(unknown[:5])}")
    return np.array([index[s] for s in sensors], dtype=np.int64)


def iter_example_chunks(
    data: MetrLA,
    ctx: FeatureContext,
    split: str | None,
    horizons_min: Sequence[int] = HORIZONS_MIN,
    stride: int = 1,
    sensors: Sequence[str] | None = None,
    chunk_windows: int = 512,
) -> Iterator[tuple[np.ndarray, np.ndarray, ExampleMeta]]:
    """Yield (X, Y, meta) for consecutive groups of windows (see ``examples``)."""
    if tuple(ctx.sensor_ids) != tuple(data.sensor_ids):
        raise DataError("the feature context was fitted on other sensors than the data's")
    cols = _sensor_columns(data, sensors)
    ends = window_ends(data, split, stride)
    speed = history_from_speeds(data.speed)
    steps = [h * 60_000 // data.step_ms for h in horizons_min]
    for lo in range(0, len(ends), chunk_windows):
        t = ends[lo : lo + chunk_windows]
        hist = speed[t[:, None] + np.arange(-(HISTORY_STEPS - 1), 1)[None, :]]  # (B, K, N)
        feats = build_features_batch(hist, data.times_ms[t], ctx)[:, cols]  # (B, n, F)
        targets = np.stack([speed[t + s][:, cols] for s in steps], axis=-1)  # (B, n, H)
        b, n = len(t), len(cols)
        meta = ExampleMeta(np.tile(cols, b), np.repeat(data.times_ms[t], n), tuple(data.sensor_ids))
        yield feats.reshape(b * n, -1), targets.reshape(b * n, -1), meta


def examples(
    data: MetrLA,
    ctx: FeatureContext,
    split: str,
    horizons_min: Sequence[int] = HORIZONS_MIN,
    stride: int = 1,
    sensors: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, ExampleMeta]:
    """X (rows, F) float32, Y (rows, H) float64 with NaN where the target is missing, and row keys.

    Rows are window-major, sensor-minor. ``split`` is 'train', 'val', 'test' or 'all'.
    """
    parts = list(
        iter_example_chunks(data, ctx, None if split == "all" else split, horizons_min, stride, sensors)
    )
    if not parts:
        n_features, n_h = len(FEATURE_NAMES), len(horizons_min)
        empty = ExampleMeta(np.zeros(0, np.int64), np.zeros(0, np.int64), tuple(data.sensor_ids))
        return np.zeros((0, n_features), np.float32), np.zeros((0, n_h)), empty
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    meta = ExampleMeta(
        np.concatenate([p[2].sensor_index for p in parts]),
        np.concatenate([p[2].step_ms for p in parts]),
        tuple(data.sensor_ids),
    )
    return x, y, meta


def _table(x: np.ndarray, y: np.ndarray, meta: ExampleMeta, split: Split):
    import pyarrow as pa

    columns = {
        "sensor_id": pa.array(meta.sensor_id.astype(str), pa.string()),
        "step_ms": pa.array(meta.step_ms.astype(np.int64), pa.int64()),
        "split": pa.array(split.of(meta.step_ms).astype(str), pa.string()),
    }
    for j, name in enumerate(FEATURE_NAMES):
        columns[name] = pa.array(x[:, j].astype(np.float32), pa.float32())
    for j, name in enumerate(TARGET_COLUMNS):
        columns[name] = pa.array(y[:, j].astype(np.float64), pa.float64())
    return pa.table(columns)


def write_feature_table(path: str | Path, x: np.ndarray, y: np.ndarray, meta: ExampleMeta,
                        split: Split = METR_LA_SPLIT) -> None:
    """Write one Parquet file with ``FEATURE_TABLE_COLUMNS`` (NaN targets = missing), rows labelled by ``split``."""
    import pyarrow.parquet as pq

    pq.write_table(_table(x, y, meta, split), str(path))


def _read_local_table(path: Path):  # noqa: ANN202 - pyarrow.Table
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.is_file():
        return pq.read_table(path)
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise DataError(f"feature table {path} has no .parquet files")
    return pa.concat_tables([pq.read_table(f) for f in files])


def _read_remote_table(source: str):  # noqa: ANN202 - pyarrow.Table
    """A Parquet file or a directory of ``*.parquet`` files on a Beam filesystem (hdfs://, gs://)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    pattern = source if source.endswith(".parquet") else source.rstrip("/") + "/*.parquet"
    files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    if not files:
        raise DataError(f"feature table {source} has no .parquet files")
    tables = []
    for name in files:
        with FileSystems.open(name) as handle:
            tables.append(pq.read_table(pa.BufferReader(handle.read())))
    return pa.concat_tables(tables)


def read_feature_table(
    path: str | Path, sensor_ids: Sequence[str] | None = None, split: str | None = None
) -> tuple[np.ndarray, np.ndarray, ExampleMeta]:
    """Read a Parquet file or directory of files with ``FEATURE_TABLE_COLUMNS`` back to (X, Y, meta).

    ``sensor_ids`` fixes the meaning of ``meta.sensor_index`` (default: the sorted ids in the table);
    ``split`` keeps only rows of that split. Rows come back sorted by (step_ms, sensor index).
    """

    source = str(path)
    if "://" not in source and not Path(source).exists():
        raise DataError(f"feature table {source} does not exist")
    try:
        table = _read_local_table(Path(source)) if "://" not in source else _read_remote_table(source)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
        raise DataError(f"cannot read feature table {source}: {exc}") from None
    missing = [c for c in FEATURE_TABLE_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{source} lacks the columns {', '.join(missing[:5])}")
    if split is not None:
        import pyarrow.compute as pc

        table = table.filter(pc.equal(table["split"], split))
    ids = np.asarray(table["sensor_id"].to_numpy(zero_copy_only=False)).astype(str)
    order_ids = tuple(sensor_ids) if sensor_ids is not None else tuple(sorted(set(ids.tolist())))
    lookup = {sid: i for i, sid in enumerate(order_ids)}
    unknown = sorted(set(ids.tolist()) - set(lookup))
    if unknown:
        raise DataError(f"{source} has sensors not in the model's list: {', '.join(unknown[:5])}")
    sensor_index = np.array([lookup[s] for s in ids], dtype=np.int64)
    step_ms = table["step_ms"].to_numpy().astype(np.int64)
    x = np.column_stack([table[c].to_numpy(zero_copy_only=False) for c in FEATURE_NAMES]).astype(np.float32)
    y = np.column_stack(
        [np.asarray(table[c].to_numpy(zero_copy_only=False), dtype=np.float64) for c in TARGET_COLUMNS]
    )
    y[~np.isfinite(y) | (y <= 0)] = np.nan
    order = np.lexsort((sensor_index, step_ms))
    return x[order], y[order], ExampleMeta(sensor_index[order], step_ms[order], order_ids)
