"""NetworkHistory: the last K aggregate steps of the whole network as a matrix.

Input: ``window_aggregate`` :class:`~schemas.batches.Columns` batches (several
panes per sensor-window are fine: the pane ranked highest wins, LATE over
ON_TIME over EARLY, then the larger count, then the later arrival); a batch is
folded into the state with numpy. Output: one element per step, in step order.

When a step is emitted (the rule that makes batch and streaming agree):

* on an event-time timer once the watermark has passed the end of the step
  (nothing more is expected), with NaN for the sensors that have no aggregate.
  The timer is set at the end of the oldest pending step, and after a firing at
  the end of the newest pending step (so a batch run needs two firings, not one
  per incomplete step);
* earlier, as soon as every sensor has an aggregate for the step *and* the
  previous step has been emitted, or, for the very first step, no earlier step
  has any aggregate, when the input is unbounded. A stream's aggregates come in
  each sensor's own order of event time (one Kafka partition per sensor, one
  path through the stages), so once every sensor has reported a step nothing
  older can come but a reading out of order in its own partition, which the
  rule for later steps does not wait for either. A bounded input has no such
  order (a runner reads and shuffles it in any order), so there the first step
  always waits for its timer, as does a first step that is not complete.

In batch every timer fires after all input has been read, so the output is a
function of the data alone. In streaming (with early panes) each step is
emitted the moment its last sensor reports, the first one too, so a catch-up's
steps flow from its first seconds instead of waiting for a watermark that
comes behind most of the backlog.

A step's matrix is built from what is known when it is emitted; an aggregate
that arrives after that only affects later steps (and is counted as
``stale`` when it is too old to be in any future span). Steps with no data
are NaN rows; a step is not emitted at all only when its whole span is empty.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.batches import Columns
from transforms.exceptions import TransformConfigError
from transforms.panes import TIMING_RANK, timing_ranks
from transforms.state_tables import StatefulFn

__all__ = ["STEP_ACTUALS", "NetworkHistory", "StepActuals", "history_matrix", "last_best", "pane_parts", "pane_ranks",
           "step_actuals"]

STEP = "History"
# The kind of StepActuals' batches: window_aggregate rows, all that their step's target gets.
STEP_ACTUALS = "step_actuals"
_NETWORK_KEY = "network"
_NONE = -1  # the rank of a member without a pane
_COUNT_MASK = (1 << 32) - 1  # a pane's rank: its timing's rank above 32 bits of its count
# Each timing's rank -> its name (object text, as panes carry it).
_TIMING_NAMES = np.asarray(sorted(TIMING_RANK, key=TIMING_RANK.__getitem__), object)

# step_ms -> (rank per member, mean per member): the steps still inside a future span.
Table = dict[int, tuple[np.ndarray, np.ndarray]]


def pane_ranks(timings: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """One int64 per pane ordering LATE > ON_TIME > EARLY, then the larger count."""
    return timing_ranks(timings) * (1 << 32) + np.clip(counts.astype(np.int64), 0, _COUNT_MASK)


def pane_parts(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`pane_ranks`: (the timing of each rank, as object text; its count)."""
    ranks = np.asarray(ranks, np.int64)
    return _TIMING_NAMES[ranks >> 32], ranks & _COUNT_MASK


def last_best(members: np.ndarray, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(members, the row of each member's winning pane): the highest rank, the last in arrival order on a tie."""
    order = np.lexsort((np.arange(len(members)), ranks, members))  # by member, then rank, then arrival
    last = np.append(members[order][1:] != members[order][:-1], True)
    return members[order][last], order[last]


def history_matrix(table: Table, step_ms: int, history_steps: int, step_s: int, n_members: int) -> np.ndarray:
    """(history_steps, n_members) float64, oldest row first, NaN where nothing is known."""
    matrix = np.full((history_steps, n_members), np.nan, dtype=np.float64)
    for row_index in range(history_steps):
        row = table.get(step_ms - (history_steps - 1 - row_index) * step_s * 1000)
        if row is not None:
            ranks, means = row
            matrix[row_index] = np.where(ranks > _NONE, means, np.nan)
    return matrix


class _NetworkHistoryFn(StatefulFn):
    """Folds aggregate batches into the step table and emits steps (see the module doc)."""

    PENDING = ReadModifyWriteStateSpec("pending_steps", PickleCoder())
    LAST_EMITTED = ReadModifyWriteStateSpec("last_emitted_ms", PickleCoder())
    TIMER_AT = ReadModifyWriteStateSpec("timer_at_ms", PickleCoder())
    FLUSH = TimerSpec("network_history_flush", TimeDomain.WATERMARK)
    PENDING_PARAM = beam.DoFn.StateParam(PENDING)
    LAST_EMITTED_PARAM = beam.DoFn.StateParam(LAST_EMITTED)
    TIMER_AT_PARAM = beam.DoFn.StateParam(TIMER_AT)
    FLUSH_PARAM = beam.DoFn.TimerParam(FLUSH)

    def __init__(self, members: Sequence[str], history_steps: int, step_s: int, ordered: bool = False) -> None:
        self.members = tuple(members)
        self.ordered = ordered  # a stream: a complete first step may go out before its timer
        self.n_members = len(self.members)
        self._by_id = np.argsort(np.asarray(self.members, dtype=str), kind="stable")
        self._sorted_ids = np.asarray(self.members, dtype=str)[self._by_id]
        self.history_steps = history_steps
        self.step_s = step_s
        self.step_ms = step_s * 1000
        self.emitted = Metrics.counter(STEP, "steps_emitted")
        self.stale = Metrics.counter(STEP, "stale_aggregates")
        self.unknown = Metrics.counter(STEP, "unknown_sensor_aggregates")

    def process(self, element: tuple[str, Columns], pending=PENDING_PARAM, last_emitted=LAST_EMITTED_PARAM,
                timer_at=TIMER_AT_PARAM, flush=FLUSH_PARAM) -> Iterator[Any]:
        key, batch = element
        members = self._member_index(batch["sensor_id"])
        starts = batch["window_start"]
        steps = starts - starts % self.step_ms
        last = last_emitted.read()
        use = members >= 0
        if not use.all():
            self.unknown.inc(int((~use).sum()))
        if last is not None:
            stale = use & (steps < last - (self.history_steps - 2) * self.step_ms)
            if stale.any():
                self.stale.inc(int(stale.sum()))
                use &= ~stale
        if not use.any():
            return
        ranks = pane_ranks(batch["pane_timing"], batch["count"])
        means = batch["mean_speed_mph"].astype(np.float64)
        table: Table = pending.read() or {}
        used = np.flatnonzero(use)
        used = used[np.argsort(steps[used], kind="stable")]  # by step, arrival order within one (a day's batch)
        bounds = np.flatnonzero(np.diff(steps[used])) + 1
        arrived = steps[used[np.r_[0, bounds]]].tolist()
        for step_ms, rows in zip(arrived, np.split(used, bounds), strict=True):
            self._keep_best(table, int(step_ms), members[rows], ranks[rows], means[rows])
        pending.write(table)
        later = [s for s in arrived if last is None or s > last]
        if not later:
            return  # updates of emitted steps: they only matter to later steps' matrices
        due = timer_at.read()
        if due is None or min(later) + self.step_ms < due:
            self._set_timer(flush, timer_at, min(later) + self.step_ms)
        head = (min(table) if self.ordered else None) if last is None else last + self.step_ms
        if head is not None and self._complete(table, head):
            yield from self._advance(key, table, last, None, pending, last_emitted, timer_at, flush)

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam, pending=PENDING_PARAM,
                 last_emitted=LAST_EMITTED_PARAM, timer_at=TIMER_AT_PARAM, flush=FLUSH_PARAM) -> Iterator[Any]:
        timer_at.clear()
        table: Table = pending.read() or {}
        yield from self._advance(key, table, last_emitted.read(), fired_at.micros // 1000, pending, last_emitted,
                                 timer_at, flush)

    def _member_index(self, sensor_ids: np.ndarray) -> np.ndarray:
        """Each sensor's column in the network, -1 for a sensor outside it."""
        ids = np.asarray(sensor_ids, dtype=str)
        at = np.minimum(np.searchsorted(self._sorted_ids, ids), self.n_members - 1)
        return np.where(self._sorted_ids[at] == ids, self._by_id[at], -1).astype(np.int64)

    def _keep_best(self, table: Table, step_ms: int, members: np.ndarray, ranks: np.ndarray,
                   means: np.ndarray) -> None:
        """Record each pane unless the member's pane of that step ranks higher (a later arrival wins a tie)."""
        best_ranks, best_means = table.get(step_ms) or (np.full(self.n_members, _NONE, np.int64),
                                                         np.full(self.n_members, np.nan))
        winners, rows = last_best(members, ranks)  # as if the batch's panes came one by one, in order
        take = ranks[rows] >= best_ranks[winners]
        best_ranks[winners[take]], best_means[winners[take]] = ranks[rows[take]], means[rows[take]]
        table[step_ms] = (best_ranks, best_means)

    def _complete(self, table: Table, step_ms: int) -> bool:
        row = table.get(step_ms)
        return row is not None and bool((row[0] > _NONE).all())

    def _set_timer(self, flush, timer_at, due_ms: int) -> None:
        flush.set(Timestamp(micros=due_ms * 1000))
        timer_at.write(due_ms)

    def _advance(self, key, table: Table, last, watermark_ms, pending, last_emitted, timer_at,
                 flush) -> Iterator[Any]:
        """Emit steps in order while they are due (watermark) or complete (the first, or after an emitted step)."""
        candidates = [s for s in table if last is None or s > last]
        if not candidates:
            return
        step_ms = min(candidates) if last is None else last + self.step_ms
        previous: tuple[int, np.ndarray] | None = None  # the last matrix emitted here: the next one is it moved up
        while True:
            due = watermark_ms is not None and step_ms + self.step_ms <= watermark_ms
            complete = (last is not None or self.ordered) and self._complete(table, step_ms)  # first: the earliest
            if not (due or complete):
                break
            span_has_data = any(step_ms - back * self.step_ms in table for back in range(self.history_steps))
            if span_has_data:
                self.emitted.inc()
                speeds = self._matrix(table, step_ms, previous)
                previous = (step_ms, speeds)
                yield self._output(table, step_ms, speeds)
            last = step_ms
            step_ms += self.step_ms
        if last is None:  # a firing before anything is due (e.g. a timer overtaken by a lower one): wait
            self._set_timer(flush, timer_at, min(candidates) + self.step_ms)
            return
        last_emitted.write(last)
        keep_from = last - (self.history_steps - 2) * self.step_ms
        pending.write({kept: row for kept, row in table.items() if kept >= keep_from})
        later = [s for s in table if s > last]
        if later:
            # The newest pending step's end, not the oldest's: a timer cannot tell how far the watermark
            # has gone, and in batch (watermark at +inf) this flushes everything in one more firing
            # instead of one firing (and one pass over the table) per incomplete step. In streaming
            # `later` is rarely more than the step now arriving, so this costs no latency there.
            self._set_timer(flush, timer_at, max(later) + self.step_ms)
        else:
            # Cleared, not left to fire for nothing: Prism keeps a key's data and timers in one queue by
            # timestamp and holds everything behind a timer the watermark has not reached, so a live
            # timer at this step's end held the next step's aggregates (stamped at their window's end,
            # later) back by a step or two: predictions came a step late.
            flush.clear()
            timer_at.clear()

    def _matrix(self, table: Table, step_ms: int, previous: tuple[int, np.ndarray] | None) -> np.ndarray:
        """The step's history matrix; after the step before it, that one's rows moved up and the step's own row
        (a batch run emits thousands of steps in one firing: one row each instead of the whole span)."""
        if previous is None or previous[0] != step_ms - self.step_ms:
            return history_matrix(table, step_ms, self.history_steps, self.step_s, self.n_members)
        newest = history_matrix({0: table[step_ms]} if step_ms in table else {}, 0, 1, self.step_s, self.n_members)
        return np.concatenate([previous[1][1:], newest])

    def _output(self, table: Table, step_ms: int, speeds: np.ndarray) -> TimestampedValue:
        row = table.get(step_ms)
        ranks = np.full(self.n_members, _NONE, np.int64) if row is None else row[0].copy()
        return TimestampedValue({"step_ms": step_ms, "speeds": speeds, "ranks": ranks},
                                Timestamp(micros=(step_ms + self.step_ms - 1) * 1000))


class NetworkHistory(beam.PTransform):
    """``window_aggregate`` batches -> ``{"step_ms", "speeds"}`` with speeds of shape (history_steps, len(sensor_ids)).

    ``speeds[i, j]`` is sensor ``sensor_ids[j]``'s mean speed at step
    ``step_ms - (history_steps - 1 - i) * step_s`` (oldest row first), NaN when
    there is no aggregate or its mean is None. ``ranks[j]`` is the
    :func:`pane_ranks` rank of the pane behind ``speeds[-1, j]`` (its timing and
    count), -1 where the sensor has none. Runs on one key (the whole
    network), in the global window; the output carries the step's window end
    as its timestamp.
    """

    def __init__(self, sensor_ids: Sequence[str], history_steps: int = 12, step_s: int = 300, label=None) -> None:
        super().__init__(label)
        if history_steps < 1 or step_s <= 0:
            raise TransformConfigError(f"history_steps must be >= 1 and step_s > 0, got {history_steps}, {step_s}")
        self.sensor_ids = [str(sensor) for sensor in sensor_ids]
        if not self.sensor_ids or len(set(self.sensor_ids)) != len(self.sensor_ids):
            raise TransformConfigError("sensor_ids must be a non-empty list without repeats")
        self.history_steps = int(history_steps)
        self.step_s = int(step_s)

    def expand(self, aggregates: beam.PCollection) -> beam.PCollection:
        return (
            aggregates
            | "ToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyByNetwork" >> beam.Map(lambda a: (_NETWORK_KEY, a)).with_output_types(tuple[str, Any])
            | "AssembleSteps" >> beam.ParDo(_NetworkHistoryFn(self.sensor_ids, self.history_steps, self.step_s,
                                                              ordered=not aggregates.is_bounded))
        )


def step_actuals(snapshot: dict[str, Any], sensor_ids: np.ndarray) -> Columns | None:
    """A snapshot's own step as ``window_aggregate`` rows: per sensor with a pane, the pane the step was emitted
    with (its mean, NaN for None; its count and timing from ``ranks``); None when no sensor has one.
    ``sensor_ids`` are the snapshot's columns in order."""
    ranks = np.asarray(snapshot["ranks"], np.int64)
    held = np.flatnonzero(ranks > _NONE)
    if not len(held):
        return None
    timings, counts = pane_parts(ranks[held])
    return Columns(STEP_ACTUALS, {
        "sensor_id": np.asarray(sensor_ids)[held],
        "window_start": np.full(len(held), int(snapshot["step_ms"]), np.int64),
        "mean_speed_mph": np.asarray(snapshot["speeds"], np.float64)[-1, held],
        "count": counts,
        "pane_timing": timings,
    }, frozenset({"mean_speed_mph"}))


class StepActuals(beam.PTransform):
    """``NetworkHistory`` snapshots -> each one's own step as ``window_aggregate`` batches (:func:`step_actuals`):
    the actuals a step's forecasts are scored against are the readings the next forecasts take as its truth,
    on hand as soon as the step is emitted, one element per step instead of the aggregation's panes."""

    def __init__(self, sensor_ids: Sequence[str], label: str | None = None) -> None:
        super().__init__(label)
        self.sensor_ids = np.asarray([str(sensor) for sensor in sensor_ids], dtype=str)

    def expand(self, snapshots: beam.PCollection) -> beam.PCollection:
        sensor_ids = self.sensor_ids

        def actuals(snapshot: dict[str, Any]) -> Iterator[Columns]:
            rows = step_actuals(snapshot, sensor_ids)
            if rows is not None:
                yield rows

        return snapshots | "OwnStep" >> beam.FlatMap(actuals)
