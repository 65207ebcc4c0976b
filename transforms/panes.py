"""Pane timings: their ranks, and final panes (the aggregate rows that are not EARLY panes, a window's readings
so far).

``WindowedAggregate`` accumulates, so a window's ON_TIME pane holds the readings
of its EARLY panes and any that came after them, and a LATE pane holds those
and more. A consumer that keeps each window's result (the hourly Parquet files,
the scoring of forecasts) needs only those final panes: an EARLY row is always
followed by one that supersedes it. ``NetworkHistory`` and the aggregates topic
keep the EARLY panes; they are what lets a step be forecast before the
watermark passes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np

from schemas.batches import Columns, OneText

__all__ = ["EARLY", "TIMING_RANK", "FinalPanes", "timing_ranks", "without_early_panes"]

EARLY = "EARLY"
# A window's panes in the order they supersede one another (a pane of unknown timing between EARLY and ON_TIME).
TIMING_RANK = {EARLY: 0, "UNKNOWN": 1, "ON_TIME": 2, "LATE": 3}


def timing_ranks(timings: Any) -> np.ndarray:
    """Each row's :data:`TIMING_RANK` (int64; a timing it does not name ranks as UNKNOWN). A pane's rows share one
    timing: ranked once, without sorting the text."""
    timings = np.asarray(timings, dtype=str)
    if (one := OneText.of(timings)) is not None:
        return np.full(len(timings), TIMING_RANK.get(one.value, TIMING_RANK["UNKNOWN"]), np.int64)
    kinds, inverse = np.unique(timings, return_inverse=True)
    kind_rank = np.array([TIMING_RANK.get(kind, TIMING_RANK["UNKNOWN"]) for kind in kinds.tolist()], np.int64)
    return kind_rank[inverse.reshape(-1)] if len(kinds) else np.empty(0, np.int64)


def without_early_panes(element: Any) -> Any:
    """An aggregate element (a ``window_aggregate`` batch or record) without its EARLY rows; None when nothing is
    left."""
    if not isinstance(element, Columns):
        return None if element.get("pane_timing") == EARLY else element
    early = np.asarray(element["pane_timing"]) == EARLY
    if not early.any():
        return element
    return None if early.all() else element.take(np.flatnonzero(~early))


def _final(element: Any) -> Iterator[Any]:
    kept = without_early_panes(element)
    if kept is not None:
        yield kept


class FinalPanes(beam.PTransform):
    """Aggregate elements -> the same without their EARLY rows (an element of EARLY rows only is dropped)."""

    def expand(self, aggregates: beam.PCollection) -> beam.PCollection:
        return aggregates | "WithoutEarlyPanes" >> beam.FlatMap(_final)
