"""ScoreForecasts: every prediction held until the actual of its target time arrives, then scored.

Input: ``{"predictions": ..., "aggregates": ...}``: ``prediction`` batches and the actuals, either
``window_aggregate`` panes or whole steps (:class:`~transforms.history.StepActuals`, batches of kind
``STEP_ACTUALS``: each step's panes as ``NetworkHistory`` emitted it; the pipelines use these), as
:class:`~schemas.batches.Columns` batches (or single dicts), split by hour of target time (:func:`score_key`).
Output: ``score`` batches (``schemas/avro/score.avsc``), one row per prediction key
``(sensor_id, event_time, horizon_min, model_version)``.

A prediction's actual is the mean speed of the window that starts at its ``target_time``
(``event_time + horizon``; the METR-LA protocol's reading at step t+3/6/12). A mean that is null,
non-finite or <= 0 is not an observation (``ml.metrics.observed_mask``). When a prediction is scored
(docs/scoring-and-history.md has the whole account):

* **against a whole step**: as soon as both are there. A step is all its target will get, so its arrival
  settles the target: the predictions held for it are scored (``status=SCORED``, ``error = predicted -
  actual``, ``inside_interval = lower <= actual <= upper``, or ``status=MISSING`` where the step has no
  observation), its timer is cleared, and a prediction for it that comes later is scored on arrival
  against the kept actual;
* **against panes**: as soon as an observed mean comes in a final pane (ON_TIME or LATE; EARLY panes are
  left out before the shuffle: the window's ON_TIME pane, which accumulates the same readings, always
  reaches the step first). Otherwise on an event-time timer, once the watermark has passed the end of the
  target window plus ``wait_s``: SCORED with the best pane known (LATE over ON_TIME, then the larger
  count), or MISSING with null actual, error and flag. MISSING is never an error of zero.

Every due time has its own timer (a dynamic tag), so a watermark that jumps ahead in a catch-up settles
every target it passed at once; it settles the targets no step came for. State is bounded and keyed by
**hour of target time**: one table per hour (:mod:`transforms.score_state`, three cells, an element writes
only the cells it changed), holding the targets not settled yet; a key's whole state is cleared three hours
after its last target settled (an expiry timer). Keys written by the sensor-shard version (0 to 3, in
savepoints taken before) settle what they hold on their own timers and then expire. A prediction repeated
with the same key is scored once (``duplicate_predictions``). A prediction for a target its timer already
settled (forecasts can arrive behind the timers: RunInference re-stamps them to their step) is scored at
once against the actual kept for three hours, MISSING where the network had none (``late_predictions``);
later than that its key has expired, and it is held again and scored MISSING at the next watermark
advance. An actual for a settled target is counted (``late_actuals``) and dropped. On bounded (batch)
input every timer fires after all input is read: the output is a function of the data alone and equals
streaming's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
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
from transforms.history import STEP_ACTUALS
from transforms.panes import without_early_panes
from transforms.score_state import MISSING, PREDICTION_FIELDS, SCORED, ScoreState, Settled
from transforms.sorted_tables import holds
from transforms.state_tables import StatefulFn, StateTable
from transforms.validate import system_now_ms

__all__ = ["MISSING", "SCORED", "ScoreForecasts", "ScoreTable", "is_observed", "score_key", "score_record"]

STEP = "ScoreForecasts"
_PREDICTION = "p"
# How long the actuals of settled targets are kept, for predictions that reach the step behind its timers.
SETTLED_KEEP_MS = 3 * 3600 * 1000
# The span of target time one state key holds.
KEY_SPAN_MS = 3600 * 1000
_AGGREGATE = "a"
_STEP = "s"  # the actuals of whole steps (transforms.history.StepActuals): a target's only actuals


def score_key(target_ms: Any) -> Any:
    """The state key of the targets in the hour of ``target_ms`` (an int, or an array of them): the hour since the
    epoch (an int key as before; the shard keys 0 to 3 of older savepoints, hours of 1970-01-01, cannot recur)."""
    return target_ms // KEY_SPAN_MS


def key_span_start(key: int) -> int:
    """The first millisecond of target time ``key`` holds."""
    return int(key) * KEY_SPAN_MS


def is_observed(speed_mph: float | None) -> bool:
    """True for a real reading: finite and > 0 (0 is METR-LA's missing value)."""
    return speed_mph is not None and math.isfinite(float(speed_mph)) and float(speed_mph) > 0


def score_record(prediction: dict[str, Any], actual_mph: float | None, scored_time_ms: int) -> dict[str, Any]:
    """The Score record of ``prediction`` against ``actual_mph`` (MISSING when it is not an observation)."""
    predicted = float(prediction["predicted_speed_mph"])
    lower, upper = float(prediction["lower_mph"]), float(prediction["upper_mph"])
    observed = is_observed(actual_mph)
    actual = float(actual_mph) if observed else None
    return {
        "sensor_id": str(prediction["sensor_id"]),
        "event_time": int(prediction["event_time"]),
        "target_time": int(prediction["target_time"]),
        "horizon_min": int(prediction["horizon_min"]),
        "model_version": str(prediction["model_version"]),
        "predicted_speed_mph": predicted,
        "lower_mph": lower,
        "upper_mph": upper,
        "coverage": float(prediction["coverage"]),
        "actual_speed_mph": actual,
        "error_mph": None if actual is None else predicted - actual,
        "inside_interval": None if actual is None else bool(lower <= actual <= upper),
        "status": SCORED if observed else MISSING,
        "scored_time": int(scored_time_ms),
    }


class ScoreTable(StateTable):
    """The dict table older savepoints hold (``target_ms -> sensor_id -> [best actual (rank, mean) | None,
    {prediction key: prediction}, scored keys]``): kept so that they unpickle, then converted by
    :meth:`transforms.score_state.ScoreState.of`."""

    entry_bytes = 400

    def entries(self) -> int:
        return sum(1 + len(entry[1]) + len(entry[2]) for row in self.values() for entry in row.values())


_AGGREGATE_FIELDS = ("sensor_id", "window_start", "mean_speed_mph", "count", "pane_timing")


def _rows(kind: str, part: Any) -> dict[str, np.ndarray]:
    """The fields the step needs, as arrays, from a batch or a single record."""
    fields = PREDICTION_FIELDS if kind == _PREDICTION else _AGGREGATE_FIELDS
    if isinstance(part, Columns):
        return {name: np.asarray(part[name]) for name in fields}
    if kind == _PREDICTION:
        return {name: np.asarray([part[name]]) for name in fields}
    mean = part.get("mean_speed_mph")
    return {"sensor_id": np.asarray([str(part["sensor_id"])]), "window_start": np.asarray([int(part["window_start"])]),
            "mean_speed_mph": np.asarray([np.nan if mean is None else float(mean)]),
            "count": np.asarray([int(part.get("count") or 0)]),
            "pane_timing": np.asarray([part.get("pane_timing") or "UNKNOWN"], object)}


def _concat_scores(parts: list[Columns | None]) -> Columns | None:
    parts = [p for p in parts if p is not None and len(p)]
    return Columns.concat(parts) if parts else None


class _ScoreFn(StatefulFn):
    # The state in three cells (ScoreState.parts): names and held predictions (a whole ScoreState in savepoints
    # taken before the split: read once and converted), their scored flags, names and actuals.
    STATE = ReadModifyWriteStateSpec("score_state", PickleCoder())
    SCORED_FLAGS = ReadModifyWriteStateSpec("score_scored_flags", PickleCoder())
    ACTUALS = ReadModifyWriteStateSpec("score_actuals", PickleCoder())
    FLUSHED = ReadModifyWriteStateSpec("score_flushed_through_ms", PickleCoder())
    SETTLED = ReadModifyWriteStateSpec("score_settled", PickleCoder())
    # Where the one timer of older savepoints was set; cleared at the first firing (a timer per due time now).
    TIMER_AT = ReadModifyWriteStateSpec("score_timer_at_ms", PickleCoder())
    # The dict tables of older savepoints, read once and converted into STATE.
    LEGACY = ReadModifyWriteStateSpec("score_pending", PickleCoder())
    FLUSH = TimerSpec("score_flush", TimeDomain.WATERMARK)
    # Armed when a key holds nothing more, SETTLED_KEEP_MS after its last settlement: then the key is cleared.
    EXPIRE = TimerSpec("score_expire", TimeDomain.WATERMARK)
    STATE_PARAM = beam.DoFn.StateParam(STATE)
    SCORED_FLAGS_PARAM = beam.DoFn.StateParam(SCORED_FLAGS)
    ACTUALS_PARAM = beam.DoFn.StateParam(ACTUALS)
    LEGACY_PARAM = beam.DoFn.StateParam(LEGACY)
    FLUSHED_PARAM = beam.DoFn.StateParam(FLUSHED)
    SETTLED_PARAM = beam.DoFn.StateParam(SETTLED)
    TIMER_AT_PARAM = beam.DoFn.StateParam(TIMER_AT)
    FLUSH_PARAM = beam.DoFn.TimerParam(FLUSH)
    EXPIRE_PARAM = beam.DoFn.TimerParam(EXPIRE)

    def __init__(self, window_ms: int, wait_ms: int, bounded: bool, now_ms_fn: Callable[[], int] | None) -> None:
        self.window_ms = window_ms
        self.wait_ms = wait_ms
        self.bounded = bounded
        self.now_ms_fn = now_ms_fn
        self.scored = Metrics.counter(STEP, "scored")
        self.missing = Metrics.counter(STEP, "missing")
        self.duplicates = Metrics.counter(STEP, "duplicate_predictions")
        self.late_actuals = Metrics.counter(STEP, "late_actuals")
        self.late_predictions = Metrics.counter(STEP, "late_predictions")

    def _now(self) -> int:
        return int(self.now_ms_fn()) if self.now_ms_fn is not None else system_now_ms()

    def _due(self, target_ms: Any) -> Any:
        return target_ms + self.window_ms + self.wait_ms

    @staticmethod
    def _state(state, flags, actuals, legacy) -> ScoreState:
        stored = state.read()
        if stored is None and (old := legacy.read()) is not None:
            legacy.clear()
            stored = old
        return ScoreState.from_parts(stored, flags.read(), actuals.read())

    @staticmethod
    def _save(table: ScoreState, state, flags, actuals) -> None:
        """Writes the cells of the parts the element changed (an unchanged part's cell is not sent again)."""
        held, scored, actual = table.parts()
        changed = table.changed()
        if "predictions" in changed:
            state.write(held)
        if changed & {"predictions", "scored"}:
            flags.write(scored)
        if "actuals" in changed:
            actuals.write(actual)

    def _count(self, scores: Columns | None) -> None:
        if scores is not None:
            scored = int(np.count_nonzero(scores["status"] == SCORED))
            self.scored.inc(scored)
            self.missing.inc(len(scores) - scored)

    def process(self, element: tuple[int, tuple[str, Any]], state=STATE_PARAM, scored_flags=SCORED_FLAGS_PARAM,
                actuals=ACTUALS_PARAM, legacy=LEGACY_PARAM, flushed=FLUSHED_PARAM, settled_state=SETTLED_PARAM,
                flush=FLUSH_PARAM, expire=EXPIRE_PARAM, timestamp=beam.DoFn.TimestampParam) -> Iterator[Any]:
        _, (kind, part) = element
        rows = _rows(kind, part)
        if kind == _PREDICTION:
            targets = rows["target_time"].astype(np.int64)
        else:
            starts = rows["window_start"].astype(np.int64)
            targets = starts - starts % self.window_ms
        through = flushed.read()
        late = np.zeros(len(targets), bool) if through is None else self._due(targets) <= through
        settled = Settled.of(settled_state.read())
        # Settled by their steps (below): all those targets will get, before the timers passed them.
        after_step = holds(settled.targets, targets) & ~late
        now = self._now()
        out: list[Columns | None] = []
        if late.any() or after_step.any():
            behind = late | after_step
            if kind == _PREDICTION:
                self.late_predictions.inc(int(late.sum()))
                scores, duplicates = settled.score_late({name: column[behind] for name, column in rows.items()}, now)
                self.duplicates.inc(duplicates)
                settled_state.write(settled)
                out.append(scores)
            else:
                self.late_actuals.inc(int(behind.sum()))
            rows, targets = {name: column[~behind] for name, column in rows.items()}, targets[~behind]
        if len(targets):
            table = self._state(state, scored_flags, actuals, legacy)
            # Nothing held for them yet: their due times need timers (a step settles its target at once).
            unarmed = table.new_targets(targets) if kind != _STEP else targets[:0]
            if kind == _PREDICTION:
                self.duplicates.inc(table.hold(rows))
                final = True  # the actual may be here already
            else:
                final = table.observe(targets, rows)  # an early pane makes nothing ready
            if kind == _STEP:
                out.append(self._settle_steps(table, targets, now, settled, settled_state, flush))
                if not len(table.targets()) and not self.bounded:
                    expire.set(Timestamp(micros=timestamp.micros + SETTLED_KEEP_MS * 1000))
            elif final:
                out.append(table.take_ready(now, int(targets.min()), int(targets.max())))
            self._save(table, state, scored_flags, actuals)
            for due in np.unique(self._due(unarmed)).tolist():
                _arm(flush, int(due))
        scores = _concat_scores(out)
        if scores is not None:
            self._count(scores)
            yield scores

    def _settle_steps(self, table: ScoreState, targets: np.ndarray, now: int, settled: Settled, settled_state,
                      flush) -> Columns | None:
        """A step's actuals are all its target gets: its predictions held so far are scored at once (MISSING
        where the step has no observation), the target is kept as settled for the ones still to come, and its
        timer is cleared."""
        done = np.unique(targets)
        scores, settled_actuals, keys = table.settle(done, now)
        settled.add(done, settled_actuals, keys)
        settled_state.write(settled)
        for due in self._due(done).tolist():
            flush.clear(dynamic_timer_tag=str(int(due)))
        return scores

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam, state=STATE_PARAM,
                 scored_flags=SCORED_FLAGS_PARAM, actuals=ACTUALS_PARAM, legacy=LEGACY_PARAM, flushed=FLUSHED_PARAM,
                 settled_state=SETTLED_PARAM, timer_at=TIMER_AT_PARAM, flush=FLUSH_PARAM,
                 expire=EXPIRE_PARAM) -> Iterator[Any]:
        fired_ms = fired_at.micros // 1000
        table = self._state(state, scored_flags, actuals, legacy)
        targets = table.targets()
        done = targets if self.bounded else targets[self._due(targets) <= fired_ms]
        scores, settled_actuals, keys = table.settle(done, self._now())
        through = flushed.read()
        if not self.bounded:
            # Every target of the key's hour up to the last one this firing settles is kept, with a row even
            # where nothing came for it: a prediction for it that comes behind the timers is then
            # MISSING, as it would have been in time.
            settled = Settled.of(settled_state.read())
            settled.keep_from(fired_ms - SETTLED_KEEP_MS)
            kept = done
            if len(done):
                first = -(-key_span_start(key) // self.window_ms) * self.window_ms if through is None \
                    else through - self.wait_ms
                first += max(0, -(-(fired_ms - SETTLED_KEEP_MS - first) // self.window_ms)) * self.window_ms
                kept = np.union1d(done, np.arange(first, int(done[-1]) + 1, self.window_ms, dtype=np.int64))
            settled.add(kept, settled_actuals, keys)
            settled_state.write(settled)
        if len(done):
            last_due = int(self._due(done[-1]))
            flushed.write(last_due if through is None else max(through, last_due))
        self._save(table, state, scored_flags, actuals)
        remaining = table.targets()
        if len(remaining):  # armed already, unless the table came from a savepoint of the one-timer version
            _arm(flush, int(self._due(remaining[0])))
        elif not self.bounded:
            expire.set(Timestamp(micros=(fired_ms + SETTLED_KEEP_MS) * 1000))
        if timer_at.read() is not None:  # that version's record of its one timer (a cached read, no write)
            timer_at.clear()
        if scores is not None:
            self._count(scores)
            yield TimestampedValue(scores, fired_at)

    @on_timer(EXPIRE)
    def on_expire(self, state=STATE_PARAM, scored_flags=SCORED_FLAGS_PARAM, actuals=ACTUALS_PARAM,
                  legacy=LEGACY_PARAM, flushed=FLUSHED_PARAM, settled_state=SETTLED_PARAM,
                  timer_at=TIMER_AT_PARAM) -> Iterator[Any]:
        """Clears the key, unless it holds a target again (its own timer settles it and arms the expiry anew)."""
        if len(self._state(state, scored_flags, actuals, legacy).targets()):
            return
        for cell in (state, scored_flags, actuals, legacy, flushed, settled_state, timer_at):
            cell.clear()
        yield from ()


def _arm(flush, due_ms: int) -> None:
    """The timer of one due time (a dynamic tag per due time: every due time the watermark passes fires)."""
    flush.set(Timestamp(micros=due_ms * 1000), dynamic_timer_tag=str(due_ms))


def _scored_fields(predictions: Columns) -> Columns:
    """Only the fields a score keeps cross to the keyed state: not the congestion text (numpy text, 36 bytes a
    row) or the processing time (8): 44 of a prediction row's 124 pickled bytes with METR-LA's six-digit ids."""
    fields = {name: predictions[name] for name in PREDICTION_FIELDS}
    return Columns(predictions.kind, fields, predictions.nullable & frozenset(fields))


def _tag(kind: str, window_ms: int) -> Callable[[Any], Iterator[tuple[int, tuple[str, Any]]]]:
    """Splits an element by :func:`score_key` (hour of target time); aggregates without their EARLY panes."""
    def keyed(element: Any) -> Iterator[tuple[int, tuple[str, Any]]]:
        tag = kind
        if kind == _AGGREGATE and isinstance(element, Columns) and element.kind == STEP_ACTUALS:
            tag = _STEP
        elif kind == _AGGREGATE and (element := without_early_panes(element)) is None:
            return
        if not isinstance(element, Columns):
            target = int(element["target_time"]) if kind == _PREDICTION else int(element["window_start"])
            target -= target % window_ms
            yield int(score_key(target)), (tag, element)
            return
        if not len(element):
            return
        if kind == _PREDICTION and all(name in element.data for name in PREDICTION_FIELDS):
            element = _scored_fields(element)
        targets = np.asarray(element["target_time" if kind == _PREDICTION else "window_start"], np.int64)
        keys = score_key(targets - targets % window_ms)
        first = int(keys[0])
        if (keys == first).all():
            yield first, (tag, element)
            return
        for key in np.unique(keys).tolist():
            yield key, (tag, element.take(np.flatnonzero(keys == key)))

    return keyed


class ScoreForecasts(beam.PTransform):
    """``{"predictions", "aggregates"}`` -> ``score`` batches (see the module doc).

    ``window_s`` is the aggregate window (one forecasting step); ``wait_s`` how
    long past the end of a target window the watermark must be before a
    prediction without a final observed actual is settled (SCORED on the best
    pane known, or MISSING). ``now_ms_fn`` supplies ``scored_time``.
    """

    def __init__(self, window_s: int = 300, wait_s: int = 0, now_ms_fn: Callable[[], int] | None = None,
                 label: str | None = None) -> None:
        super().__init__(label)
        if window_s <= 0 or wait_s < 0:
            raise TransformConfigError(f"window_s must be > 0 and wait_s >= 0, got {window_s}, {wait_s}")
        self.window_s = int(window_s)
        self.wait_s = int(wait_s)
        self.now_ms_fn = now_ms_fn

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        predictions, aggregates = inputs["predictions"], inputs["aggregates"]
        bounded = bool(getattr(predictions, "is_bounded", False)) and bool(getattr(aggregates, "is_bounded", False))
        keyed_type = tuple[int, tuple[str, Any]]
        window_ms = self.window_s * 1000
        tagged = (
            predictions
            | "PredictionsToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyPredictionsByHour" >> beam.FlatMap(_tag(_PREDICTION, window_ms)).with_output_types(keyed_type),
            aggregates
            | "AggregatesToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyAggregatesByHour" >> beam.FlatMap(_tag(_AGGREGATE, window_ms)).with_output_types(keyed_type),
        )
        fn = _ScoreFn(window_ms, self.wait_s * 1000, bounded, self.now_ms_fn)
        return (
            tagged
            | "PredictionsAndActuals" >> beam.Flatten()
            | "HoldUntilActual" >> beam.ParDo(fn)
        )
