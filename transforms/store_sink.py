"""WriteToStore: a pipeline sink upserting records into the PostgreSQL store (see :mod:`store.writer`).

Records are buffered per bundle and written ``batch_size`` at a time, one
statement per batch, and the rest at the end of the bundle, so a bundle's
records are in the store when it commits. Upserts are keyed like the records,
so a retried bundle or a replay does not duplicate rows. Every
``prune_every_s`` of processing time a writer also deletes rows older than
``retention_s`` (event time, see :func:`store.writer.prune`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.batches import records_of
from transforms.exceptions import TransformConfigError

__all__ = ["WriteToStore"]

STEP = "WriteToStore"


class _UpsertFn(beam.DoFn):
    def __init__(self, dsn: str, table: str, batch_size: int, retention_s: float | None, prune_every_s: float) -> None:
        self.dsn = dsn
        self.table = table
        self.batch_size = batch_size
        self.retention_s = retention_s
        self.prune_every_s = prune_every_s
        self.rows = Metrics.counter(STEP, f"{table}_rows")
        self._conn: Any = None
        self._buffer: list[dict[str, Any]] = []
        self._last_prune = 0.0

    def setup(self) -> None:
        self._last_prune = time.monotonic()

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            from store.db import connect

            self._conn = connect(self.dsn)
        return self._conn

    def _flush(self) -> None:
        if not self._buffer:
            return
        import psycopg

        from store.writer import prune, upsert

        try:
            written = upsert(self._connection(), self.table, self._buffer)
        except psycopg.OperationalError:  # a dropped connection: reconnect once, else fail the bundle (retried)
            self._conn = None
            written = upsert(self._connection(), self.table, self._buffer)
        self.rows.inc(written)
        self._buffer = []
        if self.retention_s is not None and time.monotonic() - self._last_prune >= self.prune_every_s:
            self._last_prune = time.monotonic()
            prune(self._connection(), int(self.retention_s * 1000))

    def process(self, element: Any) -> Iterator[Any]:
        self._buffer.extend(records_of(element))
        if len(self._buffer) >= self.batch_size:
            self._flush()
        return iter(())

    def finish_bundle(self) -> None:
        self._flush()

    def teardown(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class WriteToStore(beam.PTransform):
    """Upserts dict records (Avro-shaped) into ``table`` (``actuals``, ``predictions`` or ``scores``)."""

    def __init__(self, dsn: str, table: str, batch_size: int = 2000, retention_s: float | None = None,
                 prune_every_s: float = 600.0) -> None:
        super().__init__()
        from store.writer import TABLES

        if table not in TABLES:
            raise TransformConfigError(f"unknown store table {table!r}; choose {', '.join(TABLES)}")
        if batch_size < 1 or prune_every_s <= 0:
            raise TransformConfigError("batch_size must be >= 1 and prune_every_s > 0")
        self._fn = _UpsertFn(dsn, table, int(batch_size), retention_s, float(prune_every_s))

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "Upsert" >> beam.ParDo(self._fn)
