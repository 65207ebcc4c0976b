"""Parquet tables written by the batch pipeline.

``WriteFeatureTables``: NetworkHistory snapshots and window aggregates -> the
feature+target tables of ``ml.training_set`` (``FEATURE_TABLE_COLUMNS``), one
directory per split. Features come from ``ml.features.build_features`` on each
snapshot (the function training and streaming use); the targets of step t are
the aggregate means of steps t+3, t+6 and t+12 (NaN when missing), joined to
the features by step with the sensors aligned in network order.

``parquet_schema(avro_name)``: the Parquet schema of an Avro record type, for
prediction, alert and aggregate tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindows

from ml.dataset import METR_LA_SPLIT, Split
from ml.features import (
    FEATURE_NAMES,
    HORIZONS_MIN,
    FeatureContext,
    build_features,
)
from ml.training_set import FEATURE_TABLE_COLUMNS, TARGET_COLUMNS
from schemas.batches import Columns, records_of

__all__ = [
    "CONTEXT_FILE",
    "SPLITS",
    "WriteFeatureTables",
    "arrow_table",
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


class _BuildFeatureBlock(beam.DoFn):
    """Snapshot at a window end t -> (t, (N, F) float32 features) via ml.features.build_features."""

    def __init__(self, ctx: FeatureContext, window_ends_ms: frozenset[int]) -> None:
        self.ctx = ctx
        self.window_ends_ms = window_ends_ms

    def process(self, snapshot: dict[str, Any]) -> Iterator[tuple[int, np.ndarray]]:
        t = int(snapshot["step_ms"])
        if t in self.window_ends_ms:
            yield t, build_features(np.asarray(snapshot["speeds"], dtype=np.float64), t, self.ctx)


def _step_vector(sensor_ids: tuple[str, ...]):
    """(step, [(sensors, counts, means) per pane]) -> (step, (N,) means, NaN = missing); the fullest pane wins."""
    index = {sid: i for i, sid in enumerate(sensor_ids)}

    def vector(step_ms: int, panes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[int, np.ndarray]:
        speeds = np.full(len(sensor_ids), np.nan)
        best = np.full(len(sensor_ids), -1)
        for sensors, counts, means in panes:
            for sensor_id, count, mean in zip(sensors.tolist(), counts.tolist(), means.tolist(), strict=True):
                i = index.get(sensor_id)
                if i is not None and count > best[i]:
                    best[i] = count
                    speeds[i] = mean
        with np.errstate(invalid="ignore"):
            speeds[speeds <= 0] = np.nan
        return step_ms, speeds

    return vector


def _pane_by_step(batch: Columns) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    starts = batch["window_start"]
    for start in np.unique(starts).tolist():
        part = batch.take(starts == start)
        yield int(start), (part["sensor_id"], part["count"], part["mean_speed_mph"])


def _targets_for(step: tuple[int, np.ndarray]) -> Iterator[tuple[int, tuple[int, np.ndarray]]]:
    """The aggregate means of step s are the h-minute targets of step s - h."""
    step_ms, speeds = step
    for h in HORIZONS_MIN:
        yield step_ms - h * 60_000, (h, speeds)  # the target of the step h minutes earlier


class _FeatureTable(beam.DoFn):
    """(t, {"x": [(N, F)], "y": [(h, (N,))...]}) -> (split, pyarrow.Table with FEATURE_TABLE_COLUMNS)."""

    def __init__(self, sensor_ids: tuple[str, ...], split: Split) -> None:
        self.sensor_ids = sensor_ids
        self.split = split

    def process(self, element: tuple[int, dict[str, list]]) -> Iterator[tuple[str, Any]]:
        import pyarrow as pa

        step_ms, parts = element
        if not parts["x"]:
            return
        x = parts["x"][0]
        n = len(self.sensor_ids)
        targets = {h: np.full(n, np.nan) for h in HORIZONS_MIN}
        for h, speeds in parts["y"]:
            targets[h] = speeds
        split = str(self.split.of(np.array([step_ms]))[0])
        columns = {
            "sensor_id": pa.array(self.sensor_ids, pa.string()),
            "step_ms": pa.array(np.full(n, step_ms, dtype=np.int64), pa.int64()),
            "split": pa.array([split] * n, pa.string()),
        }
        for j, name in enumerate(FEATURE_NAMES):
            columns[name] = pa.array(x[:, j].astype(np.float32), pa.float32())
        for h, name in zip(HORIZONS_MIN, TARGET_COLUMNS, strict=False):
            columns[name] = pa.array(targets[h].astype(np.float64), pa.float64())
        yield split, pa.table(columns)


def _concat_tables(tables: list) -> Any:
    import pyarrow as pa

    return pa.concat_tables(tables)


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
    """``{"snapshots": ..., "aggregates": ...}`` -> ``<output>/features/<split>/part-*.parquet``.

    Emits (returns) the ``(split, pyarrow.Table)`` pieces it writes, one per window end. ``split`` labels the
    rows (the network's; METR-LA's protocol by default).
    """

    def __init__(
        self, ctx: FeatureContext, window_ends_ms: frozenset[int], sensor_ids: tuple[str, ...], output: str,
        split: Split = METR_LA_SPLIT,
    ) -> None:
        super().__init__()
        self.split = split
        self.ctx = ctx
        self.window_ends_ms = frozenset(window_ends_ms)
        self.sensor_ids = tuple(sensor_ids)
        self.output = output

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        blocks = (
            inputs["snapshots"]
            | "BuildFeatures" >> beam.ParDo(_BuildFeatureBlock(self.ctx, self.window_ends_ms))
            | "FeaturesToGlobalWindow" >> beam.WindowInto(GlobalWindows())
        )
        targets = (
            inputs["aggregates"]
            | "AggregatesToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyByStep" >> beam.FlatMap(_pane_by_step)
            | "GroupByStep" >> beam.GroupByKey()
            | "StepVectors" >> beam.MapTuple(_step_vector(self.sensor_ids))
            | "TargetsOfEarlierSteps" >> beam.FlatMap(_targets_for)
        )
        tables = (
            {"x": blocks, "y": targets}
            | "JoinFeaturesAndTargets" >> beam.CoGroupByKey()
            | "ToFeatureTables" >> beam.ParDo(_FeatureTable(self.sensor_ids, self.split))
        )
        schema = feature_table_schema()
        for split in SPLITS:
            name = split.capitalize()
            _ = (
                tables
                | f"Only{name}" >> beam.Filter(lambda kv, s=split: kv[0] == s)
                | f"Drop{name}Key" >> beam.Values()
                # One Parquet row group per ~a day of steps, not per step (one write per step showed up in a profile).
                | f"Batch{name}Steps" >> beam.BatchElements(min_batch_size=32, max_batch_size=288)
                | f"Concat{name}Steps" >> beam.Map(_concat_tables)
                | f"Write{name}Features"
                >> beam.io.WriteToParquetBatched(
                    join_path(self.output, "features", split, "part"), schema=schema, file_name_suffix=".parquet"
                )
            )
        return tables
