"""ScoreForecasts: every prediction held until the aggregate of its target time arrives, then scored.

Input: ``{"predictions": ..., "aggregates": ...}``, each ``prediction`` /
``window_aggregate`` :class:`~schemas.batches.Columns` batches (or single dicts),
split by sensor shard; the records of a part are held one by one.
Output: ``score`` batches (``schemas/avro/score.avsc``), one row per prediction key
``(sensor_id, event_time, horizon_min, model_version)``.

A prediction's actual is the mean speed of the aggregate window that starts at
its ``target_time`` (``event_time + horizon``; the METR-LA protocol's reading at
step t+3/6/12). A mean that is null, non-finite or <= 0 is not an observation
(the mask of ``ml.metrics.observed_mask``). When a prediction is scored:

* as soon as both are there and the target's pane is final (ON_TIME or LATE):
  ``status=SCORED``, ``error = predicted - actual``, ``inside_interval =
  lower <= actual <= upper``;
* otherwise on an event-time timer, once the watermark has passed the end of
  the target window plus ``wait_s``: SCORED with the best pane known (LATE over
  ON_TIME over EARLY, then the larger count), or ``status=MISSING`` with null
  actual, error and flag when no observed actual arrived. MISSING is never an
  error of zero: metrics skip it and count it.

State is bounded: one table per sensor shard (:mod:`transforms.keys`) holding
the targets the watermark has not passed yet; a target's entry (its actual and
the predictions waiting for it) is dropped when its timer fires. A prediction
repeated with the same key is scored once (``duplicate_predictions``). A
prediction for a target already settled (forecasts can arrive behind the
timers: RunInference re-stamps them to their step) is scored at once against
the actual kept for that target for three hours, MISSING where the shard had
none, as in time it would have been (``late_predictions`` counts them; later
than that it is dropped); an aggregate for a settled target is
counted (``late_actuals``) and dropped. On bounded (batch) input
every timer fires after all input is read, so one firing flushes every target:
the output is a function of the data alone and equals streaming's.
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

from schemas.batches import Columns, records_of
from transforms.exceptions import TransformConfigError
from transforms.keys import sensor_shard, shard_parts
from transforms.state_tables import StateTable
from transforms.validate import system_now_ms

__all__ = ["MISSING", "SCORED", "ScoreForecasts", "ScoreTable", "is_observed", "score_columns", "score_record"]

STEP = "ScoreForecasts"
SCORED = "SCORED"
MISSING = "MISSING"
_TIMING_RANK = {"EARLY": 0, "UNKNOWN": 1, "ON_TIME": 2, "LATE": 3}
_FINAL = (_TIMING_RANK["ON_TIME"], _TIMING_RANK["LATE"])
_PREDICTION = "p"
# How long the actuals of settled targets are kept, for predictions that reach the step behind its timers.
SETTLED_KEEP_MS = 3 * 3600 * 1000
_AGGREGATE = "a"


def is_observed(speed_mph: float | None) -> bool:
    """True for a real reading: finite and > 0 (0 is METR-LA's missing value)."""
    return speed_mph is not None and math.isfinite(float(speed_mph)) and float(speed_mph) > 0


SCORE_FIELDS = ("sensor_id", "event_time", "target_time", "horizon_min", "model_version", "predicted_speed_mph",
                "lower_mph", "upper_mph", "coverage", "actual_speed_mph", "error_mph", "inside_interval", "status",
                "scored_time")
_SCORE_DTYPES = {"sensor_id": str, "event_time": np.int64, "target_time": np.int64, "horizon_min": np.int64,
                 "model_version": str, "predicted_speed_mph": np.float64, "lower_mph": np.float64,
                 "upper_mph": np.float64, "coverage": np.float64, "actual_speed_mph": np.float64,
                 "error_mph": np.float64, "status": str, "scored_time": np.int64}


def score_columns(scores: list[dict[str, Any]]) -> Columns:
    """Score records as one ``score`` batch (``inside_interval`` stays an object column: it may be None)."""
    return Columns.from_records("score", scores, SCORE_FIELDS, _SCORE_DTYPES,
                                nullable=("actual_speed_mph", "error_mph"))


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
    """``target_ms -> sensor_id -> [best actual (rank, mean) | None, {prediction key: prediction}, scored keys]``."""

    entry_bytes = 400

    def entries(self) -> int:
        return sum(1 + len(entry[1]) + len(entry[2]) for row in self.values() for entry in row.values())


def _prediction_key(p: dict[str, Any]) -> tuple[int, int, str]:
    return int(p["event_time"]), int(p["horizon_min"]), str(p["model_version"])


def _slim(p: dict[str, Any]) -> dict[str, Any]:
    keep = ("sensor_id", "event_time", "target_time", "horizon_min", "model_version", "predicted_speed_mph",
            "lower_mph", "upper_mph", "coverage")
    return {k: p[k] for k in keep}


class _ScoreFn(beam.DoFn):
    TABLE = ReadModifyWriteStateSpec("score_pending", PickleCoder())
    FLUSHED = ReadModifyWriteStateSpec("score_flushed_through_ms", PickleCoder())
    SETTLED = ReadModifyWriteStateSpec("score_settled", PickleCoder())
    TIMER_AT = ReadModifyWriteStateSpec("score_timer_at_ms", PickleCoder())
    FLUSH = TimerSpec("score_flush", TimeDomain.WATERMARK)
    TABLE_PARAM = beam.DoFn.StateParam(TABLE)
    FLUSHED_PARAM = beam.DoFn.StateParam(FLUSHED)
    SETTLED_PARAM = beam.DoFn.StateParam(SETTLED)
    TIMER_AT_PARAM = beam.DoFn.StateParam(TIMER_AT)
    FLUSH_PARAM = beam.DoFn.TimerParam(FLUSH)

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

    def _due(self, target_ms: int) -> int:
        return target_ms + self.window_ms + self.wait_ms

    def process(self, element: tuple[int, tuple[str, Any]], table=TABLE_PARAM, flushed=FLUSHED_PARAM,
                settled_state=SETTLED_PARAM, timer_at=TIMER_AT_PARAM, flush=FLUSH_PARAM) -> Iterator[Any]:
        _, (kind, records) = element
        through = flushed.read()
        pending = ScoreTable.of(table.read())
        settled: dict | None = None
        out: list[dict[str, Any]] = []
        earliest_due = None
        for record in records_of(records):
            if through is not None and kind == _PREDICTION and self._due(int(record["target_time"])) <= through:
                settled = (settled_state.read() or {}) if settled is None else settled
                self._score_late(record, settled, out)
                continue
            target_ms = self._hold(kind, record, through, pending, out)
            if target_ms is not None:
                due = self._due(target_ms)
                earliest_due = due if earliest_due is None else min(earliest_due, due)
        table.write(pending)
        if settled is not None:
            settled_state.write(settled)
        current = timer_at.read()
        if earliest_due is not None and (current is None or earliest_due < current):
            flush.set(Timestamp(micros=earliest_due * 1000))
            timer_at.write(earliest_due)
        if out:
            for score in out:
                (self.scored if score["status"] == SCORED else self.missing).inc()
            yield score_columns(out)

    def _score_late(self, prediction: dict[str, Any], settled: dict, out: list[dict[str, Any]]) -> None:
        """A prediction whose target was already settled: scored at once against the actual kept for it.

        Forecasts can reach this step behind its timers (RunInference re-stamps them to their step), so
        the actuals of settled targets are kept for ``SETTLED_KEEP_MS``; a prediction later than that
        is counted (``late_predictions``) and dropped.
        """
        self.late_predictions.inc()
        row = settled.get(int(prediction["target_time"]))
        if row is None:
            return
        entry = row.setdefault(str(prediction["sensor_id"]), [None, set()])
        key = _prediction_key(prediction)
        if key in entry[1]:
            self.duplicates.inc()
            return
        entry[1].add(key)
        out.append(score_record(_slim(prediction), entry[0], self._now()))

    def _hold(self, kind: str, record: dict[str, Any], through: int | None, pending: ScoreTable,
              out: list[dict[str, Any]]) -> int | None:
        """Adds one prediction or actual to ``pending``; scores what it completes into ``out``; its target."""
        if kind == _PREDICTION:
            target_ms = int(record["target_time"])
        else:
            start = int(record["window_start"])
            target_ms = start - start % self.window_ms
        if through is not None and self._due(target_ms) <= through:
            (self.late_predictions if kind == _PREDICTION else self.late_actuals).inc()
            return None
        entry = pending.setdefault(target_ms, {}).setdefault(str(record["sensor_id"]), [None, {}, set()])
        if kind == _PREDICTION:
            key = _prediction_key(record)
            if key in entry[1] or key in entry[2]:
                self.duplicates.inc()
                return None
            entry[1][key] = _slim(record)
        else:
            mean = record.get("mean_speed_mph")
            rank = (_TIMING_RANK.get(record.get("pane_timing"), 1), int(record.get("count") or 0))
            if entry[0] is None or rank >= entry[0][0]:
                entry[0] = (rank, None if mean is None else float(mean))
        actual = entry[0]
        if actual is not None and actual[0][0] in _FINAL and is_observed(actual[1]) and entry[1]:
            now = self._now()
            for key, prediction in sorted(entry[1].items()):
                out.append(score_record(prediction, actual[1], now))
                entry[2].add(key)
            entry[1].clear()
        return target_ms

    @on_timer(FLUSH)
    def on_flush(self, fired_at=beam.DoFn.TimestampParam, table=TABLE_PARAM, flushed=FLUSHED_PARAM,
                 settled_state=SETTLED_PARAM, timer_at=TIMER_AT_PARAM, flush=FLUSH_PARAM) -> Iterator[Any]:
        fired_ms = fired_at.micros // 1000
        pending = ScoreTable.of(table.read())
        now = self._now()
        done = sorted(t for t in pending if self.bounded or self._due(t) <= fired_ms)
        settled: list[dict[str, Any]] = []
        through = flushed.read()
        kept = {t: row for t, row in (settled_state.read() or {}).items() if t >= fired_ms - SETTLED_KEEP_MS}
        if done and not self.bounded:
            # Every target this firing settles is kept, with a row even where this shard had nothing for it:
            # a prediction for it that comes behind the timers is then MISSING, as it would have been in time.
            first = done[0] if through is None else through - self.wait_ms
            first += max(0, -(-(fired_ms - SETTLED_KEEP_MS - first) // self.window_ms)) * self.window_ms
            for target_ms in range(first, done[-1] + 1, self.window_ms):
                kept.setdefault(target_ms, {})
        for target_ms in done:
            kept_row = kept.setdefault(target_ms, {})
            for sensor, (actual, waiting, scored) in sorted(pending.pop(target_ms).items()):
                mean = None if actual is None else actual[1]
                kept_row[sensor] = [mean, set(scored) | set(waiting)]
                for _key, prediction in sorted(waiting.items()):
                    score = score_record(prediction, mean, now)
                    (self.scored if score["status"] == SCORED else self.missing).inc()
                    settled.append(score)
        if not self.bounded:
            settled_state.write(kept)
        if done:
            last_due = self._due(done[-1])
            flushed.write(last_due if through is None else max(through, last_due))
        table.write(pending)
        if pending:
            due = self._due(min(pending))
            flush.set(Timestamp(micros=due * 1000))
            timer_at.write(due)
        else:
            timer_at.clear()
        if settled:
            yield TimestampedValue(score_columns(settled), fired_at)


def _tag(kind: str) -> Callable[[Any], Iterator[tuple[int, tuple[str, Any]]]]:
    def keyed(element: Any) -> Iterator[tuple[int, tuple[str, Any]]]:
        if not isinstance(element, Columns):
            yield sensor_shard(str(element["sensor_id"])), (kind, element)
            return
        for shard, part in shard_parts(element):
            yield shard, (kind, part)

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
        tagged = (
            predictions
            | "PredictionsToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyPredictionsByShard" >> beam.FlatMap(_tag(_PREDICTION)).with_output_types(keyed_type),
            aggregates
            | "AggregatesToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyAggregatesByShard" >> beam.FlatMap(_tag(_AGGREGATE)).with_output_types(keyed_type),
        )
        fn = _ScoreFn(self.window_s * 1000, self.wait_s * 1000, bounded, self.now_ms_fn)
        return (
            tagged
            | "PredictionsAndActuals" >> beam.Flatten()
            | "HoldUntilActual" >> beam.ParDo(fn)
        )
