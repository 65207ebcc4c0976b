"""CountRecords: the one counting step of the pipelines (records, not elements, and progress lines)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.batches import Columns, RawBatch

__all__ = ["CountRecords", "record_count"]

_LOG = logging.getLogger("traffic.count")


def record_count(element: Any) -> int:
    """How many records an element carries: a batch's rows, else one."""
    return len(element) if isinstance(element, (Columns, RawBatch)) else 1


class CountRecords(beam.DoFn):
    """Passes elements through, counting their records under ``<namespace>/<name>``.

    With ``progress_every`` it logs ``"<namespace>: <name>: N so far (this
    worker)"`` each time this worker's count passes a multiple of it.
    """

    def __init__(self, namespace: str, name: str, progress_every: int | None = None) -> None:
        self.namespace = namespace
        self.name = name
        self.every = progress_every
        self.counter = Metrics.counter(namespace, name)
        self._seen = 0

    def process(self, element: Any) -> Iterator[Any]:
        n = record_count(element)
        self.counter.inc(n)
        if self.every:
            before, self._seen = self._seen, self._seen + n
            if before // self.every != self._seen // self.every:
                _LOG.info("%s: %s: %d so far (this worker)", self.namespace.split(".")[-1], self.name, self._seen)
        yield element
