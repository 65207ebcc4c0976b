"""Parquet tables written by the batch pipeline.

``WriteFeatureTables``: NetworkHistory snapshots -> the feature+target tables
of ``ml.training_set`` (``FEATURE_TABLE_COLUMNS``), one directory per split.
Features come from ``ml.features.feature_columns`` (the columns of
``build_features_batch``, the function training and streaming use) over a day
of steps at once; the targets of step t are the
network's means at steps t+3, t+6 and t+12 (NaN when missing), with the sensors
in network order.

``parquet_schema(avro_name)``: the Parquet schema of an Avro record type, for
prediction, alert and aggregate tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindows

from ml.dataset import DAY_MS, METR_LA_SPLIT, Split
from ml.features import FEATURE_NAMES, HORIZONS_MIN, FeatureContext, feature_columns
from ml.training_set import FEATURE_TABLE_COLUMNS, TARGET_COLUMNS
from schemas.batches import records_of
from transforms.publish import retrying, write_parquet_atomically

__all__ = [
    "CONTEXT_FILE",
    "SPLITS",
    "WriteFeatureTables",
    "arrow_table",
    "clear_feature_tables",
    "feature_table_schema",
    "join_path",
    "parquet_schema",
    "read_context",
    "write_context",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
CONTEXT_FILE = "context.npz"  # the FeatureContext the tables were built with, beside the split directories


def arrow_table(element: Any, schema: Any) -> Any:
    """The records of an element (a batch or one dict) as a pyarrow Table of ``schema``."""
    import pyarrow as pa

    return pa.Table.from_pylist(list(records_of(element)), schema=schema)


def join_path(root: str, *parts: str) -> str:
    """``root/parts...`` for local paths and filesystem URLs alike."""
    return "/".join([root.rstrip("/"), *parts])


def write_context(features_dir: str, ctx: FeatureContext) -> None:
    """``<features_dir>/context.npz`` (local or any Beam filesystem)."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(join_path(features_dir, CONTEXT_FILE)) as handle:
        handle.write(ctx.to_bytes())


def read_context(features_dir: str) -> FeatureContext | None:
    """The ``context.npz`` beside feature tables, or None when there is none."""
    from apache_beam.io.filesystems import FileSystems

    path = join_path(features_dir, CONTEXT_FILE)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return FeatureContext.from_bytes(handle.read())


def _block_parts(snapshot: dict[str, Any], step_ms: int, block_ms: int, window_ends_ms: frozenset[int],
                 target_steps: tuple[int, ...]) -> Iterator[tuple[int, tuple[int, bool, np.ndarray]]]:
    """A network step -> (block, (t, is a window end, rows)) for each block that needs it.

    Its own block gets the whole history when t is a window end (features),
    else only the step's newest row, as does a block of earlier steps: the row
    is the target of the steps ``target_steps`` before it. One array per part:
    each array crosses the shuffle pickled on its own.
    """
    t = int(snapshot["step_ms"])
    speeds = np.asarray(snapshot["speeds"], dtype=np.float64)
    own = t - t % block_ms
    newest = speeds[-1:]
    end = t in window_ends_ms
    yield own, (t, end, speeds if end else newest)
    for earlier in sorted({(t - s * step_ms) - (t - s * step_ms) % block_ms for s in target_steps} - {own}):
        yield earlier, (t, False, newest)


def _targets_of(rows: dict[int, np.ndarray], ends: np.ndarray, step_ms: int, target_steps: tuple[int, ...],
                n: int) -> np.ndarray:
    """(B, N, H) float64: the network's mean at t + s steps for each horizon (NaN when missing or <= 0)."""
    known = np.array(sorted(rows), dtype=np.int64)
    table = np.vstack([*(rows[int(t)] for t in known), np.full(n, np.nan)])  # the last row: missing
    wanted = ends[None, :] + np.asarray(target_steps, dtype=np.int64)[:, None] * step_ms  # (H, B)
    at = np.minimum(np.searchsorted(known, wanted), len(known))
    found = (at < len(known)) & (known[np.minimum(at, len(known) - 1)] == wanted)
    y = table[np.where(found, at, len(known))].transpose(1, 2, 0)  # (H, B, N) -> (B, N, H)
    with np.errstate(invalid="ignore"):
        y[y <= 0] = np.nan
    return y


def _stamp(ms: int) -> str:
    return np.datetime_as_string(np.datetime64(int(ms), "ms"), unit="s").replace("-", "").replace(":", "") + "Z"


class _FeatureBlockTables(beam.DoFn):
    """(block, [(t, is a window end, history or newest row)...]) -> one Parquet file per split of its window ends.

    Features of the block's window ends in one ``feature_columns`` call,
    targets from the newest rows of the steps t+3/6/12, a pyarrow table per
    split (rows window-major, sensor-minor) written as
    ``<output>/features/<split>/part-<first t>-<last t>.parquet`` under a
    temporary name then renamed (a retried bundle rewrites the same file).
    Emits ``(split, rows)`` per file written. The context is read from
    ``<output>/features/context.npz`` at set-up: carried inside the DoFn, its
    2.9 MB went through Beam's bz2 pickling at every (de)serialisation of the
    DoFn, about 0.2 s each, several times a run.
    """

    def __init__(self, sensor_ids: tuple[str, ...], split: Split, output: str, write_retry_s: float) -> None:
        self.sensor_ids = sensor_ids
        self.split = split
        self.output = output
        self.write_retry_s = write_retry_s
        self.ctx: FeatureContext | None = None

    def setup(self) -> None:
        import pyarrow as pa

        self.ctx = read_context(join_path(self.output, "features"))
        if self.ctx is None:
            raise FileNotFoundError(f"{join_path(self.output, 'features', CONTEXT_FILE)} is missing")
        self._schema = feature_table_schema()
        self._sensor_column = np.asarray(self.sensor_ids, dtype=object)
        self._target_steps = tuple(h * 60_000 // self.ctx.step_ms for h in HORIZONS_MIN)
        self._pa = pa

    def process(self, element: tuple[int, Any]) -> Iterator[tuple[str, int]]:
        _, parts = element
        rows: dict[int, np.ndarray] = {}
        histories: dict[int, np.ndarray] = {}
        for t, end, speeds in parts:
            rows[t] = speeds[-1]
            if end:
                histories[t] = speeds
        if not histories:
            return
        ends = np.array(sorted(histories), dtype=np.int64)
        # Column by column, as the table stores them: no (B, N, F) rows to stack and transpose back.
        x = feature_columns(np.stack([histories[int(t)] for t in ends]), ends, self.ctx)  # F x (B, N)
        y = _targets_of(rows, ends, self.ctx.step_ms, self._target_steps, len(self.sensor_ids))  # (B, N, H)
        labels = self.split.of(ends).astype(str)
        for split in SPLITS:
            chosen = labels == split
            if chosen.any():
                every = bool(chosen.all())
                table = self._table(ends[chosen], [c if every else c[chosen] for c in x], y[chosen], split)
                self._write(table, split, int(ends[chosen][0]), int(ends[chosen][-1]))
                yield split, table.num_rows

    def _table(self, ends: np.ndarray, x: list[np.ndarray], y: np.ndarray, split: str) -> Any:
        """Rows window-major, sensor-minor: ``x`` holds each feature (B, N) (float32 in the table), ``y`` (B, N, H)."""
        pa = self._pa
        b, n, h = y.shape
        columns = [
            pa.array(np.tile(self._sensor_column, b), pa.string()),
            pa.array(np.repeat(ends, n), pa.int64()),
            pa.array([split], pa.string()).take(np.zeros(b * n, np.int32)),
        ]
        columns += [pa.array(column.astype(np.float32).reshape(b * n)) for column in x]
        columns += [pa.array(column) for column in np.ascontiguousarray(y.reshape(b * n, h).T)]
        return pa.Table.from_arrays(columns, schema=self._schema)

    def _write(self, table: Any, split: str, first_ms: int, last_ms: int) -> None:
        directory = join_path(self.output, "features", split)
        name = f"part-{_stamp(first_ms)}-{_stamp(last_ms)}.parquet"
        # Dictionary pages only for the two string columns: trying them on every float column cost 8x the write.
        # Statistics only for the key columns, which a reader may filter on: the features' cost 12% of the write.
        retrying(lambda: write_parquet_atomically(table, directory, name, compression="none",
                                                  use_dictionary=["sensor_id", "split"],
                                                  write_statistics=["sensor_id", "step_ms", "split"]),
                 f"writing {join_path(directory, name)}", self.write_retry_s)


def feature_table_schema():
    import pyarrow as pa

    schema = pa.schema(
        [("sensor_id", pa.string()), ("step_ms", pa.int64()), ("split", pa.string())]
        + [(name, pa.float32()) for name in FEATURE_NAMES]
        + [(name, pa.float64()) for name in TARGET_COLUMNS]
    )
    assert tuple(schema.names) == FEATURE_TABLE_COLUMNS
    return schema


def parquet_schema(avro_name: str):
    """The Parquet schema of an Avro record type (timestamps stay epoch-ms int64, enums become strings)."""
    import pyarrow as pa

    from schemas.codec import load_schema_json

    def arrow_type(avro_type: Any) -> tuple[Any, bool]:
        if isinstance(avro_type, list):
            inner = [t for t in avro_type if t != "null"]
            return arrow_type(inner[0])[0], True
        if isinstance(avro_type, dict):
            if avro_type.get("type") == "enum":
                return pa.string(), False
            if avro_type.get("type") == "array":
                return pa.list_(arrow_type(avro_type["items"])[0]), False
            if avro_type.get("type") == "record":
                return pa.struct([pa.field(f["name"], *arrow_type(f["type"])) for f in avro_type["fields"]]), False
            return arrow_type(avro_type["type"])[0], False
        return {"string": pa.string(), "long": pa.int64(), "int": pa.int32(), "double": pa.float64(),
                "boolean": pa.bool_(), "bytes": pa.binary(), "float": pa.float32()}[avro_type], False

    fields = []
    for f in load_schema_json(avro_name)["fields"]:
        typ, nullable = arrow_type(f["type"])
        fields.append(pa.field(f["name"], typ, nullable=nullable))
    return pa.schema(fields)


class WriteFeatureTables(beam.PTransform):
    """NetworkHistory snapshots -> ``<output>/features/<split>/part-*.parquet``; emits ``(split, rows)`` per file
    it writes.

    Steps are grouped in blocks of a day (of the context's step): a block's
    window ends get their features in one ``feature_columns`` call, and the
    targets of step t are the newest rows (the network's means) of the
    snapshots at t+3/6/12 steps, NaN when missing, exactly the aggregates'
    means (a snapshot's newest row is its step's aggregates). One file per
    block and split; ``split`` labels the rows (the network's; METR-LA's
    protocol by default). The context goes to ``<output>/features/context.npz``
    when the pipeline is built (beside the tables, where training finds it; the
    writers read it there). Files of an earlier run are not removed here
    (:func:`clear_feature_tables`).
    """

    def __init__(
        self, ctx: FeatureContext, window_ends_ms: frozenset[int], sensor_ids: tuple[str, ...], output: str,
        split: Split = METR_LA_SPLIT, write_retry_s: float = 300.0,
    ) -> None:
        super().__init__()
        self.split = split
        self.ctx = ctx
        self.window_ends_ms = frozenset(window_ends_ms)
        self.sensor_ids = tuple(sensor_ids)
        self.output = output
        self.write_retry_s = write_retry_s

    def expand(self, snapshots: beam.PCollection) -> beam.PCollection:
        write_context(join_path(self.output, "features"), self.ctx)  # the tables' context, read by the writers
        step_ms = self.ctx.step_ms
        target_steps = tuple(h * 60_000 // step_ms for h in HORIZONS_MIN)
        return (
            snapshots
            | "ToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyByDay" >> beam.FlatMap(_block_parts, step_ms, DAY_MS, self.window_ends_ms, target_steps)
            | "GroupByDay" >> beam.GroupByKey()
            | "WriteDayTables" >> beam.ParDo(
                _FeatureBlockTables(self.sensor_ids, self.split, self.output, self.write_retry_s))
        )


def clear_feature_tables(output: str) -> int:
    """Delete the Parquet files of ``<output>/features/<split>/`` (an earlier run's); returns how many."""
    from apache_beam.io.filesystems import FileSystems

    patterns = [join_path(output, "features", split, "*.parquet") for split in SPLITS]
    try:
        found = [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]
    except Exception:  # noqa: BLE001 - a missing directory matches nothing
        return 0
    if found:
        FileSystems.delete(found)
    return len(found)
