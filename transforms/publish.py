"""Record sinks shared by the batch and streaming pipelines.

``PublishToKafka``: dict records -> Avro (Confluent wire format) -> a topic, keyed
by sensor id. ``WriteWindowedParquetFiles``: dict records of windowed
(streaming) PCollections -> one Parquet file per output, window and pane under
the output's directory, local or any Beam filesystem (``hdfs://``). A file system that is down (HDFS restarting,
in safe mode) is retried with backoff for ``write_retry_s`` (5 minutes by
default), holding the stream back meanwhile; then the bundle fails with a
one-line :class:`~transforms.exceptions.SinkWriteError`. A file is written
under a temporary dot-name and renamed, so no partial file is ever visible
under a final name; a failed attempt's temporary file is deleted when possible.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils.windowed_value import WindowedValue

from schemas.avro_columns import columnar_encoder, encode_keys
from schemas.batches import Columns, records_of
from schemas.codec import AvroCodec
from transforms.exceptions import SinkWriteError, TransformConfigError
from transforms.kafka_io import WriteToKafka

__all__ = ["PublishToKafka", "WriteWindowedParquetFiles", "arrow_table", "file_window", "retrying",
           "window_file_name",
           "write_parquet_atomically"]

log = logging.getLogger(__name__)
_MAX_BACKOFF_S = 15.0


def retrying(action: Callable[[], Any], what: str, retry_s: float, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> Any:
    """``action()``, tried again with backoff (1, 2, 4 ... 15 s) while it raises, for up to ``retry_s``.

    Then :class:`SinkWriteError` naming ``what`` and the last cause, on one line.
    """
    deadline = clock() + retry_s
    backoff = 1.0
    attempt = 1
    while True:
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - any failure of the file system is retried
            cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            if clock() + backoff > deadline:
                raise SinkWriteError(f"{what} failed {attempt} time(s) over {retry_s:.0f} s; last: {cause}") from None
            log.warning("%s failed (attempt %d, retrying in %.0f s): %s", what, attempt, backoff, cause)
            sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            attempt += 1


class _Encode(beam.DoFn):
    """Records or batches -> lists of (key, Avro value) pairs, one list per input element.

    The batches of a bundle are encoded together when it finishes (one columnar call for all of them: a
    52-row pane cost about as much to encode alone as 207 rows), then handed on one list per element,
    each with its own timestamp and window. A bundle's batches that cannot be encoded together are
    encoded one by one; a batch the columnar encoder cannot vouch for goes record by record.
    """

    def __init__(self, schema_name: str, key_field: str) -> None:
        self.schema_name = schema_name
        self.key_field = key_field

    def setup(self) -> None:
        self.codec = AvroCodec(self.schema_name)
        self.columnar = columnar_encoder(self.codec)

    def start_bundle(self) -> None:
        self._held: list[tuple[Columns, Any, Any]] = []

    def process(self, element: Any, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        if isinstance(element, Columns) and self.columnar is not None and self.key_field in element.data:
            if len(element):
                self._held.append((element, timestamp, window))
            return
        pairs = self._by_record(element)
        if pairs:
            yield pairs

    def finish_bundle(self) -> Iterator[WindowedValue]:
        held, self._held = self._held, []
        if not held:
            return
        values = None
        if len(held) > 1:
            try:
                values = self.columnar.encode(Columns.concat([batch for batch, _, _ in held]))
            except ValueError:  # different fields: encoded one by one below
                values = None
        start = 0
        for batch, timestamp, window in held:
            keys = encode_keys(batch[self.key_field])
            mine = values[start:start + len(batch)] if values is not None else self.columnar.encode(batch)
            start += len(batch)
            pairs = list(zip(keys, mine, strict=True)) if mine else self._by_record(batch)
            if pairs:
                yield WindowedValue(pairs, timestamp, [window])

    def _by_record(self, element: Any) -> list[tuple[bytes | None, bytes]]:
        pairs = []
        for record in records_of(element):
            key = record.get(self.key_field)
            if key is not None and not isinstance(key, bytes):
                key = str(key).encode()
            pairs.append((key, self.codec.encode(record)))
        return pairs


class PublishToKafka(beam.PTransform):
    """Encodes records (dicts or :class:`~schemas.batches.Columns` batches) with the ``schema_name`` Avro schema
    and produces them to ``topic``, a batch at a time."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        schema_name: str,
        key_field: str = "sensor_id",
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.schema_name = schema_name
        self.key_field = key_field
        self.producer_config = dict(producer_config or {})

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "EncodeAvro" >> beam.ParDo(_Encode(self.schema_name, self.key_field))
            | "Produce" >> WriteToKafka(self.bootstrap_servers, self.topic, producer_config=self.producer_config,
                                        many=True)
        )


class _WriteWindowFileFn(beam.DoFn):
    """One output's records of one window (and pane) -> one Parquet file in that output's directory, written under
    a temporary name then renamed.

    The name is the window and pane, so a retried bundle rewrites the same file instead of adding one.
    """

    def __init__(self, outputs: Mapping[str, tuple[str, pa.Schema]], prefix: str, write_retry_s: float) -> None:
        self.outputs = {name: (directory.rstrip("/"), schema) for name, (directory, schema) in outputs.items()}
        self.prefix = prefix
        self.write_retry_s = write_retry_s

    def process(
        self, element: tuple[str, Iterable[Any]], window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam,
    ) -> Iterator[str]:
        output, elements = element
        directory, schema = self.outputs[output]
        table = pa.concat_tables([arrow_table(e, schema) for e in elements] or
                                 [pa.Table.from_pylist([], schema=schema)])
        name = window_file_name(self.prefix, window.start.micros // 1000, window.end.micros // 1000, pane.index)
        final = f"{directory}/{name}"
        retrying(lambda: write_parquet_atomically(table, directory, name), f"writing {final}", self.write_retry_s)
        yield final


def arrow_table(element: Any, schema: pa.Schema) -> pa.Table:
    """A record or a :class:`Columns` batch as an Arrow table of ``schema``: a batch column by column (NaN of a
    nullable float is null, as in its records), anything else through its records."""
    if isinstance(element, Columns) and all(name in element.data for name in schema.names):
        arrays = []
        for f in schema:
            column = element[f.name]
            null = np.isnan(column) if f.name in element.nullable and column.dtype.kind == "f" else None
            arrays.append(pa.array(column, type=f.type, mask=null, from_pandas=column.dtype.kind == "O"))
        return pa.Table.from_arrays(arrays, schema=schema)
    return pa.Table.from_pylist(list(records_of(element)), schema=schema)


def write_parquet_atomically(table: pa.Table, directory: str, name: str, **write_options: Any) -> str:
    """Write ``table`` to ``directory/name`` through a temporary file and a rename (any Beam filesystem), so no
    partial file is ever visible under the final name; a file already there (a retried bundle writing the same
    rows) is replaced. Returns the final path."""
    final, temp = f"{directory}/{name}", f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with FileSystems.create(temp) as fh:
            pq.write_table(table, fh, **write_options)
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([temp], [final])
    except Exception:
        try:
            FileSystems.delete([temp])
        except Exception:  # noqa: BLE001, S110 - best effort: the file system is what failed
            pass
        raise
    return final


_FILE_STAMP = "%Y%m%dT%H%M%SZ"
_WINDOW_FILE = re.compile(r"-(\d{8}T\d{6}Z)-(\d{8}T\d{6}Z)-pane(\d+)\.parquet$")


def window_file_name(prefix: str, start_ms: int, end_ms: int, pane_index: int) -> str:
    """``<prefix>-<start>-<end>-pane<i>.parquet`` with UTC times like 20120627T000500Z (no ':', for HDFS)."""

    def stamp(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime(_FILE_STAMP)

    return f"{prefix}-{stamp(start_ms)}-{stamp(end_ms)}-pane{pane_index}.parquet"


def file_window(name: str) -> tuple[int, int, int] | None:
    """The (window start ms, window end ms, pane index) a :func:`window_file_name` names; None for another name."""
    found = _WINDOW_FILE.search(name)
    if found is None:
        return None

    def ms(stamp: str) -> int:
        return int(datetime.strptime(stamp, _FILE_STAMP).replace(tzinfo=UTC).timestamp() * 1000)

    return ms(found.group(1)), ms(found.group(2)), int(found.group(3))


class WriteWindowedParquetFiles(beam.PTransform):
    """Writes windowed PCollections of records (dicts or Columns batches), ``{name: pcoll}``, as Parquet files: one
    per output, window and pane, in the output's directory (``outputs``: ``{name: (directory, schema)}``).

    Files appear atomically (temporary name, then rename), local or on any Beam
    filesystem. The outputs share one grouping, by output name and window: a
    grouping per output was one more stage of the streaming job each, whose
    bundles the runner and the worker exchanged separately. Beam's
    ``fileio.WriteToFiles`` did the same but listed its temporary directory at
    every window it finished: 11% of the streaming worker's time during a catch-up.
    """

    def __init__(self, outputs: Mapping[str, tuple[str, pa.Schema]], prefix: str = "part",
                 write_retry_s: float = 300.0) -> None:
        super().__init__()
        self.outputs = dict(outputs)
        self.prefix = prefix
        self.write_retry_s = write_retry_s

    def expand(self, records: Mapping[str, beam.PCollection]) -> beam.PCollection:
        if set(records) != set(self.outputs):
            raise TransformConfigError(f"records for {sorted(records)}, directories for {sorted(self.outputs)}")
        keyed = [pcoll | f"Key{name.capitalize()}" >> beam.WithKeys(name) for name, pcoll in records.items()]
        return (
            keyed
            | "AllOutputs" >> beam.Flatten()
            | "GroupPerOutputAndWindow" >> beam.GroupByKey()
            | "WriteFile" >> beam.ParDo(_WriteWindowFileFn(self.outputs, self.prefix, self.write_retry_s))
        )
