"""File sources of raw readings for the batch pipeline.

Every source emits batches of raw readings that batch runs send through the
same ``ValidateEvents`` as streaming: a ``raw_reading``
:class:`~schemas.batches.Columns` batch per chunk of steps of an array file
(readings already in columns; a rejected one's dead letter holds its Avro
``RawReading`` value), or a :class:`~schemas.batches.RawBatch` of Avro-encoded
``RawReading`` values (Confluent wire format, what the raw Kafka topic carries)
per Parquet row group. Supported inputs:

- the bundled METR-LA copy (no path), a ``.npz`` or an ``.h5`` file (the
  full ``metr-la.h5``), local or on any Beam filesystem (``hdfs://``); read
  through :func:`ml.dataset.load_metrla` on the workers, one chunk of steps
  per element;
- Parquet of raw readings in long form (``sensor_id``, ``event_time``,
  ``speed_mph``; ``event_time`` as epoch-ms integers or a timestamp column),
  a file, a directory of shards or a glob, local or ``hdfs://``.

:class:`ReadLoadedReadings` emits the same batches from readings already
loaded in the launching process (a slice of a network, as the analyst's
notebook runs). :func:`load_readings` reads any file input into a :class:`ml.dataset.MetrLA` in
the launching process (the batch pipeline fits its feature context on it), and
:func:`write_readings_parquet` writes such a Parquet file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import apache_beam as beam
import numpy as np

from ml.dataset import MetrLA, load_metrla
from ml.exceptions import DataError
from schemas.batches import Columns, RawBatch, reading_columns
from schemas.codec import AvroCodec

__all__ = [
    "RAW_READING_COLUMNS",
    "ReadLoadedReadings",
    "ReadRawReadings",
    "SourceSpec",
    "is_parquet",
    "load_readings",
    "network_sensor_ids",
    "write_readings_parquet",
]

RAW_READING_COLUMNS: tuple[str, ...] = ("sensor_id", "event_time", "speed_mph")
_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def is_parquet(path: str | None) -> bool:
    """True for Parquet inputs: a .parquet file, a glob of them, or a directory (no suffix)."""
    if path is None:
        return False
    stripped = path.rstrip("/")
    if stripped.endswith(_PARQUET_SUFFIXES) or "*" in stripped:
        return True
    return not stripped.endswith((".npz", ".h5", ".hdf5"))


def _parquet_pattern(path: str) -> str:
    stripped = path.rstrip("/")
    if stripped.endswith(_PARQUET_SUFFIXES) or "*" in stripped:
        return stripped
    return stripped + "/*.parquet"


@dataclass(frozen=True)
class SourceSpec:
    """What to read: ``path`` (None = bundled data), the time range [start_ms, end_ms) and a sensor subset."""

    path: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    sensor_ids: tuple[str, ...] | None = None
    hdfs_options: tuple[tuple[str, Any], ...] = ()
    chunk_steps: int = 288
    known_sensor_ids: tuple[str, ...] | None = None  # the network's sensors (None: METR-LA's)

    @property
    def hdfs_dict(self) -> dict[str, Any] | None:
        return dict(self.hdfs_options) or None


def _to_ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return round(value.timestamp() * 1000)
    if hasattr(value, "value") and hasattr(value, "tz_localize"):  # pandas Timestamp
        return int(value.value // 1_000_000)
    raise DataError(f"event_time {value!r} is neither epoch milliseconds nor a timestamp")


def _match(pattern: str, hdfs_options: dict[str, Any] | None) -> list[str]:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    if hdfs_options:
        FileSystems.set_options(PipelineOptions.from_dictionary(hdfs_options))
    try:
        results = FileSystems.match([pattern])
    except Exception as exc:  # noqa: BLE001 - filesystems raise their own types
        raise DataError(f"cannot list {pattern}: {exc}") from None
    paths = sorted(meta.path for result in results for meta in result.metadata_list)
    if not paths:
        raise DataError(f"data file {pattern} does not exist (no Parquet file matches)")
    return paths


def _read_parquet_table(path: str, hdfs_options: dict[str, Any] | None):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    tables = []
    for name in _match(_parquet_pattern(path), hdfs_options):
        try:
            with FileSystems.open(name) as handle:
                tables.append(pq.read_table(handle, columns=list(RAW_READING_COLUMNS)))
        except (pa.ArrowInvalid, KeyError, OSError) as exc:
            raise DataError(f"{name} is not a Parquet file of raw readings {RAW_READING_COLUMNS}: {exc}") from None
    return pa.concat_tables(tables, promote_options="default")


def load_readings(spec: SourceSpec) -> MetrLA:
    """The input as a (steps x sensors) array, restricted to the spec's range and sensors."""
    if is_parquet(spec.path):
        known = frozenset(spec.known_sensor_ids) if spec.known_sensor_ids else network_sensor_ids()
        data = _pivot(_read_parquet_table(spec.path, spec.hdfs_dict), spec.path, known)
    else:
        data = load_metrla(spec.path, spec.hdfs_dict)
    data = data.between(spec.start_ms, spec.end_ms)
    if spec.sensor_ids:
        data = data.only(spec.sensor_ids)
    if data.n_steps == 0:
        raise DataError(f"{spec.path or 'the bundled data'} has no readings between the given --start and --end")
    return data


def _pivot(table, source: str, known: frozenset[str]) -> MetrLA:
    import pandas as pd

    frame = table.to_pandas()
    if frame.empty:
        raise DataError(f"{source} holds no readings")
    frame = frame.dropna(subset=["sensor_id", "event_time", "speed_mph"])
    times = frame["event_time"]
    if pd.api.types.is_datetime64_any_dtype(times):
        frame["event_time"] = pd.DatetimeIndex(times).as_unit("ms").asi8
    # What validation would reject never shapes the array: unknown sensors, impossible speeds. Repeats: first wins.
    speed = frame["speed_mph"].astype(np.float64)
    frame = frame[frame["sensor_id"].astype(str).isin(known) & np.isfinite(speed) & (speed >= 0)]
    frame = frame.drop_duplicates(subset=["sensor_id", "event_time"], keep="first")
    if frame.empty:
        raise DataError(f"{source} holds no valid readings of known sensors")
    wide = frame.pivot(index="event_time", columns="sensor_id", values="speed_mph").sort_index()
    return MetrLA(
        wide.to_numpy(dtype=np.float64),  # absent readings are NaN (missing), as in the pipeline
        wide.index.to_numpy(dtype=np.int64),
        tuple(str(c) for c in wide.columns),
    )


@lru_cache(maxsize=1)
def network_sensor_ids() -> frozenset[str]:
    """The METR-LA network's sensor ids (``data/metr-la/sensors.csv``): what a Parquet input may contain."""
    from ml.dataset import BUNDLED_DIR

    lines = (BUNDLED_DIR / "sensors.csv").read_text().splitlines()[1:]
    return frozenset(line.split(",", 1)[0].strip() for line in lines if line.strip())


def write_readings_parquet(data: MetrLA, path: str) -> int:
    """Write ``data`` as long-form raw readings (one row per sensor and step); returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    steps, sensors = data.speed.shape
    table = pa.table(
        {
            "sensor_id": pa.array(np.tile(np.asarray(data.sensor_ids, dtype=object), steps), pa.string()),
            "event_time": pa.array(np.repeat(data.times_ms, sensors), pa.int64()),
            "speed_mph": pa.array(data.speed.reshape(-1), pa.float64()),
        }
    )
    pq.write_table(table, path)
    return table.num_rows


@lru_cache(maxsize=2)
def _cached_dataset(path: str | None, hdfs_items: tuple[tuple[str, Any], ...]) -> MetrLA:
    return load_metrla(path, dict(hdfs_items) or None)


class _EmitArrayChunk(beam.DoFn):
    """(lo, hi) step range of an npz/h5 file -> one ``raw_reading`` batch, sensor-major per step."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.emitted = beam.metrics.Metrics.counter("traffic.source", "readings_emitted")

    def process(self, bounds: tuple[int, int]) -> Iterator[Columns]:
        data = _cached_dataset(self.spec.path, self.spec.hdfs_options)
        if self.spec.sensor_ids:
            data = data.only(self.spec.sensor_ids)
        readings = _step_readings(data, *bounds)
        self.emitted.inc(len(readings))
        yield readings


def _step_readings(data: MetrLA, lo: int, hi: int) -> Columns:
    """Steps [lo, hi) of ``data`` as a ``raw_reading`` batch, sensor-major per step.

    The readings stay columns: encoding them as Avro values for ValidateEvents
    to decode again cost about 0.2 s of a 7-day features run of 3.8 s (py-spy; docs/benchmarks.md).
    """
    n = len(data.sensor_ids)
    return reading_columns(np.tile(np.asarray(data.sensor_ids, dtype=object), hi - lo),
                           np.repeat(np.asarray(data.times_ms[lo:hi], dtype=np.int64), n),
                           np.asarray(data.speed[lo:hi], dtype=np.float64).reshape(-1))


def _step_chunks(spec: SourceSpec) -> list[tuple[int, int]]:
    data = _cached_dataset(spec.path, spec.hdfs_options)
    lo = 0 if spec.start_ms is None else int(np.searchsorted(data.times_ms, spec.start_ms, side="left"))
    hi = data.n_steps if spec.end_ms is None else int(np.searchsorted(data.times_ms, spec.end_ms, side="left"))
    if hi <= lo:
        raise DataError(f"{spec.path or 'the bundled data'} has no readings between the given --start and --end")
    return [(a, min(a + spec.chunk_steps, hi)) for a in range(lo, hi, spec.chunk_steps)]


class _EncodeParquetRows(beam.DoFn):
    """A table of Parquet rows -> one RawBatch of Avro RawReading values; rows outside the range or subset are skipped.

    A row that cannot be a RawReading (no sensor id, no time) is not dropped: it
    is emitted as its JSON text, which ValidateEvents rejects as undecodable, so
    it reaches the dead letters with the rest of the bad input.
    """

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.codec = AvroCodec("raw_reading")
        self.emitted = beam.metrics.Metrics.counter("traffic.source", "readings_emitted")
        self._wanted: frozenset[str] | None = None

    def setup(self) -> None:
        self._wanted = frozenset(self.spec.sensor_ids) if self.spec.sensor_ids else None

    def process(self, table: Any) -> Iterator[RawBatch]:
        values = [v for v in (self._encode(row) for row in table.to_pylist()) if v is not None]
        if values:
            self.emitted.inc(len(values))
            yield RawBatch.of(values)

    def _encode(self, row: dict[str, Any]) -> bytes | None:
        import json

        sensor_id = row.get("sensor_id")
        try:
            event_time = _to_ms(row.get("event_time"))
        except DataError:
            event_time = None
        if event_time is not None and (
            (self.spec.start_ms is not None and event_time < self.spec.start_ms)
            or (self.spec.end_ms is not None and event_time >= self.spec.end_ms)
        ):
            return None
        if self._wanted is not None and sensor_id not in self._wanted:
            return None
        speed = row.get("speed_mph")
        if sensor_id is None or event_time is None or speed is None:
            return json.dumps(row, default=str, sort_keys=True).encode()
        return self.codec.encode({"sensor_id": str(sensor_id), "event_time": event_time, "speed_mph": float(speed)})


class ReadRawReadings(beam.PTransform):
    """Reads raw readings from a file (see the module doc) as batches for ``ValidateEvents``."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__()
        self.spec = spec

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        if is_parquet(self.spec.path):
            _match(_parquet_pattern(self.spec.path), self.spec.hdfs_dict)  # one-line error when absent
            return (
                pbegin
                | "ReadParquetTables" >> beam.io.ReadFromParquetBatched(_parquet_pattern(self.spec.path),
                                                                       columns=list(RAW_READING_COLUMNS))
                | "EncodeRawReadings" >> beam.ParDo(_EncodeParquetRows(self.spec))
            )
        return (
            pbegin
            | "StepChunks" >> beam.Create(_step_chunks(self.spec))
            | "SpreadChunks" >> beam.Reshuffle()
            | "EmitRawReadings" >> beam.ParDo(_EmitArrayChunk(self.spec))
        )


class _EmitLoadedChunk(beam.DoFn):
    """A chunk of loaded readings (a :class:`MetrLA` of a few steps) -> one ``raw_reading`` batch."""

    def __init__(self) -> None:
        self.emitted = beam.metrics.Metrics.counter("traffic.source", "readings_emitted")

    def process(self, chunk: MetrLA) -> Iterator[Columns]:
        readings = _step_readings(chunk, 0, chunk.n_steps)
        self.emitted.inc(len(readings))
        yield readings


class ReadLoadedReadings(beam.PTransform):
    """Readings already loaded in this process (a :class:`MetrLA`, e.g. a notebook's slice of a network) as
    ``raw_reading`` batches, one per ``chunk_steps`` steps: what :class:`ReadRawReadings` emits
    for a file, without naming one. The readings travel inside the pipeline, so keep them to a slice."""

    def __init__(self, data: MetrLA, chunk_steps: int = 288) -> None:
        super().__init__()
        if data.n_steps == 0 or not data.sensor_ids:
            raise DataError("the readings to read are empty (no steps or no sensors)")
        if chunk_steps < 1:
            raise DataError(f"chunk_steps must be at least 1, not {chunk_steps}")
        self.data = data
        self.chunk_steps = chunk_steps

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        d, size = self.data, self.chunk_steps
        chunks = [MetrLA(d.speed[lo : lo + size], d.times_ms[lo : lo + size], d.sensor_ids)
                  for lo in range(0, d.n_steps, size)]
        return (
            pbegin
            | "LoadedChunks" >> beam.Create(chunks)
            | "EmitRawReadings" >> beam.ParDo(_EmitLoadedChunk())
        )
