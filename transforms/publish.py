"""Record sinks shared by the batch and streaming pipelines.

``PublishToKafka``: dict records -> Avro (Confluent wire format) -> a topic, keyed
by sensor id. ``WriteWindowedParquet``: dict records of a windowed (streaming)
PCollection -> one Parquet file per window and pane under a directory, local or
any Beam filesystem (``hdfs://``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio

from schemas.codec import AvroCodec
from transforms.kafka_io import WriteToKafka

__all__ = ["PublishToKafka", "WriteWindowedParquet", "ParquetRecordSink"]


class _Encode(beam.DoFn):
    def __init__(self, schema_name: str, key_field: str) -> None:
        self.schema_name = schema_name
        self.key_field = key_field

    def setup(self) -> None:
        self.codec = AvroCodec(self.schema_name)

    def process(self, record: dict[str, Any]):
        key = record.get(self.key_field)
        if key is not None and not isinstance(key, bytes):
            key = str(key).encode()
        yield key, self.codec.encode(record)


class PublishToKafka(beam.PTransform):
    """Encodes dict records with the ``schema_name`` Avro schema and produces them to ``topic``."""

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
            | "Produce"
            >> WriteToKafka(
                self.bootstrap_servers,
                self.topic,
                key_fn=lambda kv: kv[0],
                value_fn=lambda kv: kv[1],
                producer_config=self.producer_config,
            )
        )


class ParquetRecordSink(fileio.FileSink):
    """A ``fileio`` sink writing dict records as one Parquet file (row groups per flush)."""

    def __init__(self, schema: pa.Schema, row_group_size: int = 10_000) -> None:
        self.schema = schema
        self.row_group_size = row_group_size
        self._rows: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None

    def open(self, fh) -> None:
        self._rows = []
        self._writer = pq.ParquetWriter(fh, self.schema)

    def write(self, record: dict[str, Any]) -> None:
        self._rows.append(record)
        if len(self._rows) >= self.row_group_size:
            self._write_rows()

    def _write_rows(self) -> None:
        if self._rows and self._writer is not None:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def flush(self) -> None:
        self._write_rows()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WriteWindowedParquet(beam.PTransform):
    """Writes a windowed PCollection of dict records as Parquet files, one per window and pane."""

    def __init__(self, directory: str, schema: pa.Schema, prefix: str = "part") -> None:
        super().__init__()
        self.directory = directory
        self.schema = schema
        self.prefix = prefix

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        schema = self.schema
        return records | "WriteParquetFiles" >> fileio.WriteToFiles(
            path=self.directory,
            file_naming=fileio.default_file_naming(self.prefix, ".parquet"),
            sink=lambda _destination: ParquetRecordSink(schema),
            shards=1,
        )
