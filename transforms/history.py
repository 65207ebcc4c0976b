"""NetworkHistory and SensorHistory: the last K aggregate steps as a matrix.

Input: WindowAggregate dicts (several panes per sensor-window are fine: the
pane ranked highest wins, LATE over ON_TIME over EARLY, then the larger
count, then the later arrival). Output: one element per step, in step order.

When a step is emitted (the rule that makes batch and streaming agree):

* on an event-time timer once the watermark has passed the end of the step
  (nothing more is expected), with NaN for the sensors that have no aggregate.
  The timer is set at the end of the oldest pending step, and after a firing at
  the end of the newest pending step (so a batch run needs two firings, not one
  per incomplete step);
* earlier, as soon as every sensor has an aggregate for the step *and* the
  previous step has been emitted. The very first step is always emitted by its
  timer. In batch every timer fires after all input has been read, so the
  output is a function of the data alone; in streaming (with early panes) each
  step is emitted the moment its last sensor reports.

A step's matrix is built from what is known when it is emitted; an aggregate
that arrives after that only affects later steps (and is counted as
``stale`` when it is too old to be in any future span). Steps with no data
are NaN rows; a step is not emitted at all only when its whole span is empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.exceptions import TransformConfigError
from transforms.state_tables import HistoryTable

__all__ = ["NetworkHistory", "SensorHistory", "history_matrix"]

STEP = "History"
_NETWORK_KEY = "network"
_TIMING_RANK = {"EARLY": 0, "UNKNOWN": 1, "ON_TIME": 2, "LATE": 3}

def _keep_best(table: HistoryTable, step_ms: int, member: int, rank: tuple[int, int], mean: float) -> None:
    """Record a pane unless the member's pane of that step ranks higher (a later arrival wins a tie)."""
    row = table.setdefault(step_ms, {})
    best = row.get(member)
    if best is None or rank >= best[0]:
        row[member] = (rank, mean)


def history_matrix(
    table: dict[int, dict[int, Any]], step_ms: int, history_steps: int, step_s: int, n_members: int
) -> np.ndarray:
    """(history_steps, n_members) float64, oldest row first, NaN where nothing is known."""
    matrix = np.full((history_steps, n_members), np.nan, dtype=np.float64)
    for row_index in range(history_steps):
        row = table.get(step_ms - (history_steps - 1 - row_index) * step_s * 1000)
        if row:
            for member, (_rank, mean) in row.items():
                matrix[row_index, member] = mean
    return matrix


class _State(NamedTuple):
    """One key's state cells (see the generated DoFn classes)."""

    pending: Any  # HistoryTable, step_ms -> member -> (rank, mean): the steps still inside a future span
    last_emitted: Any  # newest emitted step_ms
    timer_at: Any  # when the flush timer is due (ms)


def _history_fn_class(name: str, timer_id: str) -> type:
    """A history DoFn class with its own timer id.

    Beam 2.77's FnApiRunner (the batch DirectRunner) fires the timers of only
    one of two stateful DoFns that share a timer id in one pipeline, so each
    composite gets a distinct id (see docs/transforms.md).
    """

    class HistoryFn(_HistoryLogic):
        PENDING = ReadModifyWriteStateSpec("pending_steps", PickleCoder())
        LAST_EMITTED = ReadModifyWriteStateSpec("last_emitted_ms", PickleCoder())
        TIMER_AT = ReadModifyWriteStateSpec("timer_at_ms", PickleCoder())
        FLUSH = TimerSpec(timer_id, TimeDomain.WATERMARK)
        PENDING_PARAM = beam.DoFn.StateParam(PENDING)
        LAST_EMITTED_PARAM = beam.DoFn.StateParam(LAST_EMITTED)
        TIMER_AT_PARAM = beam.DoFn.StateParam(TIMER_AT)
        FLUSH_PARAM = beam.DoFn.TimerParam(FLUSH)

        def process(
            self,
            element: tuple[str, dict[str, Any]],
            pending=PENDING_PARAM,
            last_emitted=LAST_EMITTED_PARAM,
            timer_at=TIMER_AT_PARAM,
            flush=FLUSH_PARAM,
        ) -> Iterator[Any]:
            return self.on_aggregate(element, _State(pending, last_emitted, timer_at), flush)

        @on_timer(FLUSH)
        def on_flush(
            self,
            key=beam.DoFn.KeyParam,
            fired_at=beam.DoFn.TimestampParam,
            pending=PENDING_PARAM,
            last_emitted=LAST_EMITTED_PARAM,
            timer_at=TIMER_AT_PARAM,
            flush=FLUSH_PARAM,
        ) -> Iterator[Any]:
            return self.on_timer_fired(key, fired_at, _State(pending, last_emitted, timer_at), flush)

    HistoryFn.__name__ = HistoryFn.__qualname__ = name
    return HistoryFn


class _HistoryLogic(beam.DoFn):
    """The step-assembly logic; the state and timer specs live in the generated subclasses."""

    def __init__(self, members: Sequence[str] | None, history_steps: int, step_s: int) -> None:
        self.members = None if members is None else tuple(members)
        self.index = None if members is None else {sensor: i for i, sensor in enumerate(self.members)}
        self.n_members = 1 if members is None else len(self.members)
        self.history_steps = history_steps
        self.step_s = step_s
        self.step_ms = step_s * 1000
        self.emitted = Metrics.counter(STEP, "steps_emitted")
        self.stale = Metrics.counter(STEP, "stale_aggregates")
        self.unknown = Metrics.counter(STEP, "unknown_sensor_aggregates")

    def on_aggregate(self, element, state: _State, flush) -> Iterator[Any]:
        key, aggregate = element
        member = 0 if self.index is None else self.index.get(aggregate.get("sensor_id"))
        if member is None:
            self.unknown.inc()
            return
        start = int(aggregate["window_start"])
        step_ms = start - start % self.step_ms
        last = state.last_emitted.read()
        if last is not None and step_ms < last - (self.history_steps - 2) * self.step_ms:
            self.stale.inc()
            return
        mean = aggregate.get("mean_speed_mph")
        mean = math.nan if mean is None else float(mean)
        rank = (_TIMING_RANK.get(aggregate.get("pane_timing"), 1), int(aggregate.get("count") or 0))
        table = HistoryTable.of(state.pending.read())
        _keep_best(table, step_ms, member, rank, mean)
        state.pending.write(table)
        if last is not None and step_ms <= last:
            return  # an update of an emitted step: it only matters to later steps' matrices
        due = state.timer_at.read()
        if due is None or step_ms + self.step_ms < due:
            self._set_timer(flush, state, step_ms + self.step_ms)
        if last is not None and step_ms == last + self.step_ms and len(table[step_ms]) == self.n_members:
            yield from self._advance(key, table, last, None, state, flush)

    def on_timer_fired(self, key, fired_at, state: _State, flush) -> Iterator[Any]:
        state.timer_at.clear()
        table = HistoryTable.of(state.pending.read())
        watermark_ms = fired_at.micros // 1000
        yield from self._advance(key, table, state.last_emitted.read(), watermark_ms, state, flush)

    def _set_timer(self, flush, state: _State, due_ms: int) -> None:
        flush.set(Timestamp(micros=due_ms * 1000))
        state.timer_at.write(due_ms)

    def _advance(self, key, table, last, watermark_ms, state: _State, flush) -> Iterator[Any]:
        """Emit steps in order while they are due (watermark) or complete (after an emitted step)."""
        candidates = [s for s in table if last is None or s > last]
        if not candidates:
            return
        step_ms = min(candidates) if last is None else last + self.step_ms
        while True:
            due = watermark_ms is not None and step_ms + self.step_ms <= watermark_ms
            complete = last is not None and len(table.get(step_ms, ())) == self.n_members
            if not (due or complete):
                break
            span_has_data = any(step_ms - back * self.step_ms in table for back in range(self.history_steps))
            if span_has_data:
                self.emitted.inc()
                yield self._output(key, table, step_ms)
            last = step_ms
            step_ms += self.step_ms
        if last is None:  # a firing before anything is due (e.g. a timer overtaken by a lower one): wait
            self._set_timer(flush, state, min(candidates) + self.step_ms)
            return
        state.last_emitted.write(last)
        keep_from = last - (self.history_steps - 2) * self.step_ms
        state.pending.write(HistoryTable((kept, row) for kept, row in table.items() if kept >= keep_from))
        later = [s for s in table if s > last]
        if later:
            # The newest pending step's end, not the oldest's: a timer cannot tell how far the watermark
            # has gone, and in batch (watermark at +inf) this flushes everything in one more firing
            # instead of one firing (and one pass over the table) per incomplete step. In streaming
            # `later` is rarely more than the step now arriving, so this costs no latency there.
            self._set_timer(flush, state, max(later) + self.step_ms)
        else:
            # Cleared, not left to fire for nothing: Prism keeps a key's data and timers in one queue by
            # timestamp and holds everything behind a timer the watermark has not reached, so a live
            # timer at this step's end held the next step's aggregates (stamped at their window's end,
            # later) back by a step or two: predictions came a step late.
            flush.clear()
            state.timer_at.clear()

    def _output(self, key: str, table, step_ms: int) -> TimestampedValue:
        speeds = history_matrix(table, step_ms, self.history_steps, self.step_s, self.n_members)
        timestamp = Timestamp(micros=(step_ms + self.step_ms - 1) * 1000)
        if self.members is None:
            return TimestampedValue((key, {"step_ms": step_ms, "speeds": speeds[:, 0]}), timestamp)
        return TimestampedValue({"step_ms": step_ms, "speeds": speeds}, timestamp)


_NetworkHistoryFn = _history_fn_class("_NetworkHistoryFn", "network_history_flush")
_SensorHistoryFn = _history_fn_class("_SensorHistoryFn", "sensor_history_flush")


def _check(history_steps: int, step_s: int) -> None:
    if history_steps < 1 or step_s <= 0:
        raise TransformConfigError(f"history_steps must be >= 1 and step_s > 0, got {history_steps}, {step_s}")


class NetworkHistory(beam.PTransform):
    """WindowAggregate dicts -> ``{"step_ms", "speeds"}`` with speeds of shape (history_steps, len(sensor_ids)).

    ``speeds[i, j]`` is sensor ``sensor_ids[j]``'s mean speed at step
    ``step_ms - (history_steps - 1 - i) * step_s`` (oldest row first), NaN when
    there is no aggregate or its mean is None. Runs on one key (the whole
    network), in the global window; the output carries the step's window end
    as its timestamp.
    """

    def __init__(self, sensor_ids: Sequence[str], history_steps: int = 12, step_s: int = 300, label=None) -> None:
        super().__init__(label)
        _check(history_steps, step_s)
        self.sensor_ids = [str(sensor) for sensor in sensor_ids]
        if not self.sensor_ids or len(set(self.sensor_ids)) != len(self.sensor_ids):
            raise TransformConfigError("sensor_ids must be a non-empty list without repeats")
        self.history_steps = int(history_steps)
        self.step_s = int(step_s)

    def expand(self, aggregates: beam.PCollection) -> beam.PCollection:
        return (
            aggregates
            | "ToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyByNetwork" >> beam.Map(lambda a: (_NETWORK_KEY, a)).with_output_types(tuple[str, dict[str, Any]])
            | "AssembleSteps" >> beam.ParDo(_NetworkHistoryFn(self.sensor_ids, self.history_steps, self.step_s))
        )


class SensorHistory(beam.PTransform):
    """WindowAggregate dicts -> ``(sensor_id, {"step_ms", "speeds": array (history_steps,)})`` per sensor.

    The same emission rule as :class:`NetworkHistory`, applied per sensor: a
    sensor's step is complete as soon as its own aggregate arrives.
    """

    def __init__(self, history_steps: int = 12, step_s: int = 300, label=None) -> None:
        super().__init__(label)
        _check(history_steps, step_s)
        self.history_steps = int(history_steps)
        self.step_s = int(step_s)

    def expand(self, aggregates: beam.PCollection) -> beam.PCollection:
        return (
            aggregates
            | "ToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyBySensor" >> beam.Map(lambda a: (a["sensor_id"], a)).with_output_types(tuple[str, dict[str, Any]])
            | "AssembleSteps" >> beam.ParDo(_SensorHistoryFn(None, self.history_steps, self.step_s))
        )
