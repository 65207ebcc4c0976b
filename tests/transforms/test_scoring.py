"""ScoreForecasts on real METR-LA readings, in batch (Create) and streaming (TestStream).

The forecasts are the last-value baseline with a +-4 mph interval, made at every step for
15/30/60 minutes; the aggregates are the real readings (one per window, 0 = missing). Every
prediction whose target reading is observed must get exactly one SCORED record whose error is
the one computed offline with numpy; every other prediction exactly one MISSING record, never
an error of zero.
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.batches import Columns, records_of
from transforms.exceptions import TransformConfigError
from transforms.history import pane_ranks, step_actuals
from transforms.score_state import PREDICTION_FIELDS, ScoreState
from transforms.scoring import (
    _AGGREGATE,
    _PREDICTION,
    _STEP,
    KEY_SPAN_MS,
    MISSING,
    SCORED,
    SETTLED_KEEP_MS,
    ScoreForecasts,
    _ScoreFn,
    _tag,
    is_observed,
    key_span_start,
    score_key,
    score_record,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "metr-la" / "speed.npz"
FIRST_ROW, STEPS, N_SENSORS = 400, 30, 4
STEP_MS = 300_000
HORIZONS = (15, 30, 60)
NOW_MS = 1_795_000_000_000
HALF_WIDTH = 4.0


def _block() -> tuple[list[str], np.ndarray, int]:
    with np.load(DATA) as data:
        speeds = data["speed"][FIRST_ROW : FIRST_ROW + STEPS, :N_SENSORS].astype(np.float64)
        sensors = [str(s) for s in data["sensor_ids"][:N_SENSORS]]
        t0 = int(data["timestamps"][FIRST_ROW].astype("datetime64[ms]").astype(np.int64))
    speeds[7, 1] = 0.0  # a missing reading the predictions of step 4 / 5 / 1 target
    return sensors, speeds, t0


SENSORS, SPEEDS, T0 = _block()


def aggregate(step: int, j: int, timing: str = "ON_TIME") -> dict:
    value = float(SPEEDS[step, j])
    start = T0 + step * STEP_MS
    return {"sensor_id": SENSORS[j], "window_start": start, "window_end": start + STEP_MS,
            "mean_speed_mph": value if value > 0 else None, "min_speed_mph": None, "max_speed_mph": None,
            "stddev_speed_mph": None, "count": 1, "missing_count": 0 if value > 0 else 1, "pane_timing": timing}


def predictions_at(step: int) -> list[dict]:
    out = []
    for j, sensor in enumerate(SENSORS):
        last = float(SPEEDS[step, j]) or 50.0
        for h in HORIZONS:
            t = T0 + step * STEP_MS
            out.append({"sensor_id": sensor, "event_time": t, "target_time": t + h * 60_000, "horizon_min": h,
                        "predicted_speed_mph": last, "lower_mph": last - HALF_WIDTH, "upper_mph": last + HALF_WIDTH,
                        "coverage": 0.9, "congestion": "FREE_FLOW", "model_version": "v-test",
                        "processing_time": NOW_MS})
    return out


def expected_scores() -> list[dict]:
    """Offline, with numpy: the target reading of every prediction, its error and interval flag."""
    out = []
    for step in range(STEPS):
        for p in predictions_at(step):
            target_step = step + p["horizon_min"] // 5
            j = SENSORS.index(p["sensor_id"])
            actual = SPEEDS[target_step, j] if target_step < STEPS else np.nan
            observed = bool(np.isfinite(actual) and actual > 0)
            out.append({
                **{k: p[k] for k in ("sensor_id", "event_time", "target_time", "horizon_min", "model_version",
                                     "predicted_speed_mph", "lower_mph", "upper_mph", "coverage")},
                "actual_speed_mph": float(actual) if observed else None,
                "error_mph": float(p["predicted_speed_mph"] - actual) if observed else None,
                "inside_interval": bool(abs(p["predicted_speed_mph"] - actual) <= HALF_WIDTH) if observed else None,
                "status": SCORED if observed else MISSING,
                "scored_time": NOW_MS,
            })
    return out


def matches_expected(actual: list[dict]) -> None:
    """Every expected score exactly once and nothing else (a short message on failure)."""
    def key(r: dict) -> tuple:
        return r["sensor_id"], r["event_time"], r["horizon_min"]

    want = {key(r): r for r in expected_scores()}
    got: dict[tuple, list[dict]] = {}
    for record in actual:
        got.setdefault(key(record), []).append(record)
    twice = [k for k, v in got.items() if len(v) > 1]
    absent = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if got[k][0] != want[k])
    if twice or absent or extra or wrong:
        example = wrong[:1] and (got[wrong[0]][0], want[wrong[0]])
        raise AssertionError(f"{len(twice)} scored twice {twice[:2]}, {len(absent)} absent {absent[:2]}, "
                             f"{len(extra)} unexpected, {len(wrong)} wrong e.g. {example}")


def step_batch(step: int) -> Columns:
    """Step ``step``'s readings as StepActuals gives them from its snapshot: every sensor's ON_TIME pane of one
    reading (a 0 reading's mean is None: NaN in the snapshot)."""
    speeds = np.where(SPEEDS[step] > 0, SPEEDS[step], np.nan)[None, :]
    ranks = pane_ranks(np.full(N_SENSORS, "ON_TIME"), np.ones(N_SENSORS, np.int64))
    return step_actuals({"step_ms": T0 + step * STEP_MS, "speeds": speeds, "ranks": ranks}, np.asarray(SENSORS))


def _step_end_s(step: int) -> float:
    return (T0 + (step + 1) * STEP_MS) / 1000 - 0.001


def _score(pcolls) -> beam.PCollection:
    """Score records (the transform emits ``score`` batches)."""
    return (pcolls | ScoreForecasts(window_s=STEP_MS // 1000, now_ms_fn=lambda: NOW_MS)
            | "ScoreRecords" >> beam.FlatMap(lambda b: b.records()))


def test_expectation_has_both_kinds() -> None:
    statuses = [s["status"] for s in expected_scores()]
    assert statuses.count(MISSING) >= len(SENSORS) * (3 + 6 + 12)  # targets past the data's end, and the 0
    assert statuses.count(SCORED) > 200


def test_batch_scores_every_prediction_once() -> None:
    with test_pipeline.TestPipeline() as p:
        aggregates = p | "Aggregates" >> beam.Create(
            [aggregate(s, j) for s in range(STEPS) for j in range(N_SENSORS)]
        ) | "StampAggregates" >> beam.Map(lambda a: TimestampedValue(a, (a["window_end"] - 1) / 1000))
        predictions = p | "Predictions" >> beam.Create([r for s in range(STEPS) for r in predictions_at(s)])
        assert_that(_score({"predictions": predictions, "aggregates": aggregates}), matches_expected)


def test_streaming_scores_every_prediction_once() -> None:
    """Step by step: predictions of step s and the EARLY then ON_TIME panes of step s, then the watermark."""
    aggregates_tag, predictions_tag = "aggregates", "predictions"
    stream = test_stream.TestStream(output_tags=[aggregates_tag, predictions_tag])
    stream.advance_watermark_to(T0 / 1000, tag=aggregates_tag).advance_watermark_to(T0 / 1000, tag=predictions_tag)
    for step in range(STEPS):
        end_s = (T0 + (step + 1) * STEP_MS) / 1000
        early = [TimestampedValue(aggregate(step, j, "EARLY"), end_s - 0.001) for j in range(N_SENSORS)]
        final = [TimestampedValue(aggregate(step, j), end_s - 0.001) for j in range(N_SENSORS)]
        stream.add_elements(early, tag=aggregates_tag)
        stream.add_elements([TimestampedValue(r, end_s - 0.001) for r in predictions_at(step)], tag=predictions_tag)
        stream.add_elements(final, tag=aggregates_tag)
        stream.advance_watermark_to(end_s, tag=aggregates_tag).advance_watermark_to(end_s, tag=predictions_tag)
    # A LATE duplicate of an already-scored target, and the same prediction sent twice: no second score.
    stream.add_elements([TimestampedValue(aggregate(20, 0, "LATE"), (T0 + 21 * STEP_MS) / 1000 - 0.001)],
                        tag=aggregates_tag)
    stream.add_elements([TimestampedValue(predictions_at(25)[0], (T0 + 26 * STEP_MS) / 1000 - 0.001)],
                        tag=predictions_tag)
    _scores_match_expected(stream, aggregates_tag, predictions_tag)


def _scores_match_expected(stream: test_stream.TestStream, actuals_tag: str, predictions_tag: str) -> None:
    """Runs ``stream`` past every target (the DirectRunner's assert_that closes its pane at the infinite
    watermark, before what timers emit then), then to the end, and checks the scores against the offline ones."""
    beyond_s = (T0 + (STEPS + 24) * STEP_MS) / 1000
    stream.advance_watermark_to(beyond_s, tag=actuals_tag).advance_watermark_to(beyond_s, tag=predictions_tag)
    stream.advance_watermark_to_infinity(tag=actuals_tag).advance_watermark_to_infinity(tag=predictions_tag)
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with test_pipeline.TestPipeline(options=options) as p:
        inputs = p | stream
        scores = _score({"predictions": inputs[predictions_tag], "aggregates": inputs[actuals_tag]})
        assert_that(scores, matches_expected)


def test_score_record_masks_missing_actuals() -> None:
    p = predictions_at(0)[0]
    for actual in (None, 0.0, float("nan"), -1.0):
        record = score_record(p, actual, NOW_MS)
        assert record["status"] == MISSING
        assert record["error_mph"] is None and record["actual_speed_mph"] is None
        assert record["inside_interval"] is None
    scored = score_record(p, p["predicted_speed_mph"] + 5.0, NOW_MS)
    assert scored["status"] == SCORED and scored["error_mph"] == pytest.approx(-5.0)
    assert scored["inside_interval"] is False
    assert not is_observed(0.0) and is_observed(0.5)


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(TransformConfigError):
        ScoreForecasts(window_s=0)
    with pytest.raises(TransformConfigError):
        ScoreForecasts(wait_s=-1)


def test_a_prediction_behind_the_timers_is_scored_against_the_kept_actual() -> None:
    """Step 0's forecasts arrive only after their targets settled (as forecasts re-stamped by RunInference
    can): each is still scored once, against the actual kept for its target, or MISSING where none was."""
    aggregates_tag, predictions_tag = "aggregates", "predictions"
    stream = test_stream.TestStream(output_tags=[aggregates_tag, predictions_tag])
    stream.advance_watermark_to(T0 / 1000, tag=aggregates_tag).advance_watermark_to(T0 / 1000, tag=predictions_tag)
    last = 14  # the 60-min target of step 0 is step 12
    stream.add_elements([TimestampedValue(aggregate(s, j), (T0 + (s + 1) * STEP_MS) / 1000 - 0.001)
                         for s in range(last) for j in range(N_SENSORS)], tag=aggregates_tag)
    stream.add_elements([TimestampedValue(predictions_at(1)[0], (T0 + 2 * STEP_MS) / 1000 - 0.001)],
                        tag=predictions_tag)  # a timely one, so the step has settled something before
    beyond_s = (T0 + (last + 2) * STEP_MS) / 1000  # every target of step 0 settled (its timers fired)
    stream.advance_watermark_to(beyond_s, tag=aggregates_tag).advance_watermark_to(beyond_s, tag=predictions_tag)
    stream.add_elements([TimestampedValue(p, T0 / 1000) for p in predictions_at(0) * 2], tag=predictions_tag)
    end_s = (T0 + (last + 30) * STEP_MS) / 1000
    stream.advance_watermark_to(end_s, tag=aggregates_tag).advance_watermark_to(end_s, tag=predictions_tag)
    stream.advance_watermark_to_infinity(tag=aggregates_tag).advance_watermark_to_infinity(tag=predictions_tag)
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    want = {(r["sensor_id"], r["event_time"], r["horizon_min"]): r for r in expected_scores()
            if r["event_time"] == T0 or (r["event_time"] == T0 + STEP_MS and r["sensor_id"] == SENSORS[0]
                                         and r["horizon_min"] == 15)}

    def each_once_as_offline(actual: list[dict]) -> None:
        got: dict[tuple, list[dict]] = {}
        for record in actual:
            got.setdefault((record["sensor_id"], record["event_time"], record["horizon_min"]), []).append(record)
        assert set(got) == set(want), (sorted(set(want) - set(got))[:3], sorted(set(got) - set(want))[:3])
        assert all(len(v) == 1 for v in got.values()), "a late prediction sent twice was scored twice"
        assert all(got[k][0] == want[k] for k in want), [(got[k][0], want[k]) for k in want if got[k][0] != want[k]][:1]

    with test_pipeline.TestPipeline(options=options) as p:
        inputs = p | stream
        assert_that(_score({"predictions": inputs[predictions_tag], "aggregates": inputs[aggregates_tag]}),
                    each_once_as_offline)


def test_a_late_prediction_for_a_target_no_aggregate_came_for_is_missing() -> None:
    """Step 7 has no aggregate at all (every sensor silent): its target settles with nothing. Step 4's forecasts
    arrive after their targets settled; the one for step 7 is MISSING (as in time it would have been), the one
    for step 10 is scored against the kept actual, the one for step 16 (no aggregate either, not settled yet)
    is MISSING when its timer fires. Before, the step-7 forecasts got no score at all."""
    aggregates_tag, predictions_tag = "aggregates", "predictions"
    delivered = [s for s in range(14) if s != 7]
    stream = test_stream.TestStream(output_tags=[aggregates_tag, predictions_tag])
    stream.advance_watermark_to(T0 / 1000, tag=aggregates_tag).advance_watermark_to(T0 / 1000, tag=predictions_tag)
    stream.add_elements([TimestampedValue(aggregate(s, j), (T0 + (s + 1) * STEP_MS) / 1000 - 0.001)
                         for s in delivered for j in range(N_SENSORS)], tag=aggregates_tag)
    beyond_s = (T0 + 15 * STEP_MS) / 1000  # targets up to step 13 settled (their timers fired)
    stream.advance_watermark_to(beyond_s, tag=aggregates_tag).advance_watermark_to(beyond_s, tag=predictions_tag)
    stream.add_elements([TimestampedValue(p, T0 / 1000 + 4 * STEP_MS / 1000) for p in predictions_at(4)],
                        tag=predictions_tag)
    end_s = (T0 + 40 * STEP_MS) / 1000
    stream.advance_watermark_to(end_s, tag=aggregates_tag).advance_watermark_to(end_s, tag=predictions_tag)
    stream.advance_watermark_to_infinity(tag=aggregates_tag).advance_watermark_to_infinity(tag=predictions_tag)
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    want = {}
    for p in predictions_at(4):
        target_step = (p["target_time"] - T0) // STEP_MS
        actual = float(SPEEDS[target_step, SENSORS.index(p["sensor_id"])]) if target_step in delivered else None
        want[(p["sensor_id"], p["event_time"], p["horizon_min"])] = score_record(p, actual, NOW_MS)
    assert {r["status"] for k, r in want.items() if k[2] == 15} == {MISSING}
    assert SCORED in {r["status"] for k, r in want.items() if k[2] == 30}

    def each_once(actual: list[dict]) -> None:
        got: dict[tuple, list[dict]] = {}
        for record in actual:
            got.setdefault((record["sensor_id"], record["event_time"], record["horizon_min"]), []).append(record)
        assert set(got) == set(want), (sorted(set(want) - set(got))[:3], sorted(set(got) - set(want))[:3])
        assert all(len(v) == 1 for v in got.values())
        assert all(got[k][0] == want[k] for k in want), [(got[k][0], want[k]) for k in want if got[k][0] != want[k]][:1]

    with test_pipeline.TestPipeline(options=options) as p:
        inputs = p | stream
        assert_that(_score({"predictions": inputs[predictions_tag], "aggregates": inputs[aggregates_tag]}), each_once)


class _Cell:
    """A test double of one read-modify-write state cell."""

    def __init__(self) -> None:
        self.value = None

    def read(self):
        return self.value

    def write(self, value) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


def _table(cells: dict) -> ScoreState:
    """The scoring state the cells hold."""
    return _ScoreFn._state(cells["state"], cells["scored_flags"], cells["actuals"], cells["legacy"])


class _Timers:
    """A test double of a timer family: the latest time set per dynamic tag."""

    def __init__(self) -> None:
        self.by_tag: dict[str, int] = {}
        self.calls = 0

    def set(self, ts, dynamic_timer_tag: str = "") -> None:
        self.by_tag[dynamic_timer_tag] = ts.micros // 1000
        self.calls += 1

    def clear(self, dynamic_timer_tag: str = "") -> None:
        self.by_tag.pop(dynamic_timer_tag, None)


def test_every_due_time_has_its_own_timer_so_one_watermark_jump_settles_a_whole_catch_up() -> None:
    """A catch-up: 20 steps of predictions held with no actuals, then the watermark passes every target at once.

    Each due time is armed once, under its own tag, so the runner fires them all at that one advance and the
    shard's table is empty after it (one timer re-armed at the next due time settled one step per advance)."""
    fn = _ScoreFn(STEP_MS, 0, bounded=False, now_ms_fn=lambda: NOW_MS)
    cells = {name: _Cell() for name in ("state", "scored_flags", "actuals", "legacy", "flushed", "settled_state")}
    timers = _Timers()
    steps = 20
    for step in range(steps):
        batch = Columns.from_records("prediction", predictions_at(step), list(predictions_at(step)[0]), {})
        for _ in fn.process((0, (_PREDICTION, batch)), flush=timers, **cells):
            pass
    targets = {T0 + s * STEP_MS + h * 60_000 for s in range(steps) for h in HORIZONS}
    assert timers.by_tag == {str(t + STEP_MS): t + STEP_MS for t in targets}  # each due time, by its tag
    assert timers.calls == len(targets)  # and each armed once

    scores = []
    for due in sorted(timers.by_tag.values()):  # what the runner does when the watermark passes them all
        fired = fn.on_flush(0, Timestamp(micros=due * 1000), flush=timers, timer_at=_Cell(), expire=_Timers(),
                            **cells)
        scores += [record for out in fired for record in records_of(out.value)]
    assert len(scores) == steps * len(SENSORS) * len(HORIZONS)
    assert {s["status"] for s in scores} == {MISSING}
    assert len(_table(cells).targets()) == 0


def test_an_element_is_split_by_hour_of_target() -> None:
    """A step's predictions target three times (15, 30, 60 min ahead), often in two hours: each keyed part holds
    the rows of one hour, and the parts hold every row once, in order, with the fields a score keeps."""
    step = next(s for s in range(STEPS) if (T0 + s * STEP_MS) // KEY_SPAN_MS
                != (T0 + s * STEP_MS + 60 * 60_000) // KEY_SPAN_MS)
    records = predictions_at(step)
    batch = Columns.from_records("prediction", records, list(records[0]), {})
    parts = list(_tag(_PREDICTION, STEP_MS)(batch))
    assert len({r["target_time"] // KEY_SPAN_MS for r in records}) == len(parts) == 2
    seen = []
    for key, (kind, part) in parts:
        assert kind == _PREDICTION
        rows = list(part.records())
        assert {score_key(r["target_time"]) for r in rows} == {key}
        assert key_span_start(key) <= min(r["target_time"] for r in rows)
        assert max(r["target_time"] for r in rows) < key_span_start(key) + KEY_SPAN_MS
        seen += rows
    assert {"congestion", "processing_time"} <= set(records[0])  # fields no score keeps: they stay behind
    kept = [{name: r[name] for name in PREDICTION_FIELDS} for r in records]
    assert sorted(seen, key=kept.index) == kept
    assert list(_tag(_PREDICTION, STEP_MS)(records[-1])) == [(score_key(records[-1]["target_time"]),
                                                              (_PREDICTION, records[-1]))]
    one_hour = batch.take(np.flatnonzero(np.asarray(batch["horizon_min"]) == 15))
    [(_, (_, part))] = _tag(_PREDICTION, STEP_MS)(one_hour)
    assert tuple(part.data) == PREDICTION_FIELDS  # one hour: passed on whole, its arrays not copied
    assert all(part[name] is one_hour[name] for name in PREDICTION_FIELDS)


def test_early_panes_are_left_out_before_the_shuffle() -> None:
    """A window's ON_TIME pane always reaches the step before its target's timer: an EARLY row is never kept."""
    step = 3
    records = [aggregate(step, j, timing) for j, timing in enumerate(["EARLY", "ON_TIME", "EARLY", "LATE"])]
    batch = Columns.from_records("window_aggregate", records, list(records[0]), {})
    [(key, (kind, part))] = _tag(_AGGREGATE, STEP_MS)(batch)
    assert key == score_key(T0 + step * STEP_MS) and kind == _AGGREGATE
    assert list(part.records()) == [records[1], records[3]]
    early = batch.take(np.flatnonzero(np.asarray(batch["pane_timing"]) == "EARLY"))
    assert list(_tag(_AGGREGATE, STEP_MS)(early)) == []
    assert list(_tag(_AGGREGATE, STEP_MS)(records[0])) == []
    assert list(_tag(_AGGREGATE, STEP_MS)(records[1])) == [(key, (_AGGREGATE, records[1]))]
    final = batch.take(np.asarray([1, 3]))
    [(_, (_, part))] = _tag(_AGGREGATE, STEP_MS)(final)
    assert part is final  # nothing left out: passed on as it is


def _settle_all(fn: _ScoreFn, key: int, cells: dict, timers: _Timers, expire: _Timers) -> list[dict]:
    """Fires every armed due time in order, as the runner does when the watermark passes them."""
    scores = []
    for due in sorted(set(timers.by_tag.values())):
        fired = fn.on_flush(key, Timestamp(micros=due * 1000), flush=timers, timer_at=_Cell(), expire=expire,
                            **cells)
        scores += [record for out in fired for record in records_of(out.value)]
    return scores


def test_a_key_expires_three_hours_after_it_settled_and_a_prediction_after_that_is_missing() -> None:
    """Once a key holds nothing more, its expiry is armed SETTLED_KEEP_MS after the last settlement and clears
    every cell; a prediction for that hour coming even later is held again and its timer scores it MISSING."""
    fn = _ScoreFn(STEP_MS, 0, bounded=False, now_ms_fn=lambda: NOW_MS)
    cells = {name: _Cell() for name in ("state", "scored_flags", "actuals", "legacy", "flushed", "settled_state")}
    timers, expire = _Timers(), _Timers()
    step = 0
    record = next(r for r in predictions_at(step) if r["sensor_id"] == SENSORS[0] and r["horizon_min"] == 15)
    target_step = step + 3
    key = score_key(record["target_time"])
    observed = aggregate(target_step, 0)
    scores = [r for kind, element in ((_PREDICTION, record), ("a", observed))
              for out in fn.process((key, (kind, element)), flush=timers, **cells) for r in records_of(out)]
    assert [s["status"] for s in scores] == [SCORED]  # on the final pane, at once
    assert _settle_all(fn, key, cells, timers, expire) == []
    last_due = record["target_time"] + STEP_MS
    assert expire.by_tag == {"": last_due + SETTLED_KEEP_MS}
    assert cells["settled_state"].value is not None and cells["flushed"].value == last_due

    late = {**record, "horizon_min": 30, "event_time": record["event_time"] - 15 * 60_000}
    kept = [r for out in fn.process((key, (_PREDICTION, late)), flush=_Timers(), **cells) for r in records_of(out)]
    assert [(s["status"], s["actual_speed_mph"]) for s in kept] == [(SCORED, observed["mean_speed_mph"])]
    list(fn.on_expire(**cells, timer_at=_Cell()))
    assert all(cell.value is None for cell in cells.values())

    timers = _Timers()
    list(fn.process((key, (_PREDICTION, record)), flush=timers, **cells))
    assert timers.by_tag == {str(last_due): last_due}  # behind the watermark: fires at its next advance
    assert [s["status"] for s in _settle_all(fn, key, cells, timers, _Timers())] == [MISSING]


def test_a_key_holding_targets_is_not_cleared_by_its_expiry() -> None:
    fn = _ScoreFn(STEP_MS, 0, bounded=False, now_ms_fn=lambda: NOW_MS)
    cells = {name: _Cell() for name in ("state", "scored_flags", "actuals", "legacy", "flushed", "settled_state")}
    batch = Columns.from_records("prediction", predictions_at(0), list(predictions_at(0)[0]), {})
    list(fn.process((0, (_PREDICTION, batch)), flush=_Timers(), **cells))
    list(fn.on_expire(**cells, timer_at=_Cell()))
    assert len(_table(cells).targets()) == len(HORIZONS)


class _CountingCell(_Cell):
    """A cell that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, value) -> None:
        super().write(value)
        self.writes += 1


def test_an_element_writes_only_the_cells_it_changed() -> None:
    """A pane of actuals does not send the held predictions again: an early pane writes the actuals alone, a final
    one the actuals and the flags of what it scored, a step's predictions the predictions and their flags."""
    fn = _ScoreFn(STEP_MS, 0, bounded=False, now_ms_fn=lambda: NOW_MS)
    cells = {name: _CountingCell() for name in ("state", "scored_flags", "actuals", "legacy", "flushed",
                                                 "settled_state")}
    batch = Columns.from_records("prediction", predictions_at(0), list(predictions_at(0)[0]), {})
    target_step = 3  # the 15-minute targets of step 0
    key = score_key(T0 + target_step * STEP_MS)
    fifteen = batch.take(np.flatnonzero(np.asarray(batch["horizon_min"]) == 15))

    def writes(kind: str, element) -> tuple[int, int, int, list]:
        before = [cells[n].writes for n in ("state", "scored_flags", "actuals")]
        out = [r for o in fn.process((key, (kind, element)), flush=_Timers(), **cells) for r in records_of(o)]
        return (*(cells[n].writes - b for n, b in zip(("state", "scored_flags", "actuals"), before, strict=True)),
                out)

    assert writes(_PREDICTION, fifteen) == (1, 1, 0, [])
    early = {**aggregate(target_step, 0), "pane_timing": "EARLY"}
    assert writes("a", early) == (0, 0, 1, [])
    *counts, scores = writes("a", aggregate(target_step, 0))
    assert counts == [0, 1, 1] and [s["status"] for s in scores] == [SCORED]
    table = _table(cells)
    assert int(table.predictions["scored"].sum()) == 1 and len(table.actuals["target_time"]) == 1


def test_a_whole_state_of_an_older_savepoint_is_split_into_the_three_cells() -> None:
    fn = _ScoreFn(STEP_MS, 0, bounded=False, now_ms_fn=lambda: NOW_MS)
    cells = {name: _Cell() for name in ("state", "scored_flags", "actuals", "legacy", "flushed", "settled_state")}
    old = ScoreState()
    record = next(r for r in predictions_at(0) if r["horizon_min"] == 15)
    old.hold({name: np.asarray([record[name]]) for name in record})
    cells["state"].value = old  # one cell held the whole table before the split
    target_step = 3
    observed = {**aggregate(target_step, 0), "sensor_id": record["sensor_id"]}
    scores = [r for o in fn.process((score_key(record["target_time"]), ("a", observed)), flush=_Timers(), **cells)
              for r in records_of(o)]
    assert [s["status"] for s in scores] == [SCORED]
    assert isinstance(cells["state"].value, tuple) and cells["scored_flags"].value.tolist() == [True]
    assert cells["actuals"].value[1]["target_time"].tolist() == [record["target_time"]]


def test_batch_scores_every_prediction_once_against_whole_steps() -> None:
    with test_pipeline.TestPipeline() as p:
        steps = p | "Steps" >> beam.Create([step_batch(s) for s in range(STEPS)]) | "StampSteps" >> beam.Map(
            lambda b: TimestampedValue(b, (int(b["window_start"][0]) + STEP_MS - 1) / 1000))
        predictions = p | "Predictions" >> beam.Create([r for s in range(STEPS) for r in predictions_at(s)])
        assert_that(_score({"predictions": predictions, "aggregates": steps}), matches_expected)


@pytest.mark.parametrize("order", ["steps first", "predictions first", "step by step"])
def test_streaming_scores_every_prediction_once_against_whole_steps(order: str) -> None:
    """A step's actuals settle its target whether its predictions came before them (held, then scored at once)
    or after (scored on arrival against the kept actuals); a step sent twice scores nothing twice."""
    steps_tag, predictions_tag = "aggregates", "predictions"
    stream = test_stream.TestStream(output_tags=[steps_tag, predictions_tag])
    stream.advance_watermark_to(T0 / 1000, tag=steps_tag).advance_watermark_to(T0 / 1000, tag=predictions_tag)
    steps = [TimestampedValue(step_batch(s), _step_end_s(s)) for s in range(STEPS)]
    predictions = [[TimestampedValue(r, _step_end_s(s)) for r in predictions_at(s)] for s in range(STEPS)]
    if order == "step by step":
        for s in range(STEPS):
            stream.add_elements(predictions[s], tag=predictions_tag).add_elements([steps[s]], tag=steps_tag)
    else:
        flat = [r for step in predictions for r in step]
        for tag, elements in ([(steps_tag, steps), (predictions_tag, flat)] if order == "steps first"
                              else [(predictions_tag, flat), (steps_tag, steps)]):
            stream.add_elements(elements, tag=tag)
    stream.add_elements([steps[5]], tag=steps_tag)  # sent again
    _scores_match_expected(stream, steps_tag, predictions_tag)


def test_a_step_settles_its_target_at_once_and_clears_its_timer() -> None:
    """The 15-minute forecasts of step 4 are held (their due time armed); step 7's actuals score them at once,
    MISSING where the step has no observation, clear the timer and arm the key's expiry. A forecast for that
    target coming after the step is scored on arrival against the kept actual, with no timer."""
    fn = _ScoreFn(STEP_MS, 0, bounded=False, now_ms_fn=lambda: NOW_MS)
    cells = {name: _Cell() for name in ("state", "scored_flags", "actuals", "legacy", "flushed", "settled_state")}
    timers, expire = _Timers(), _Timers()
    batch = Columns.from_records("prediction", predictions_at(4), list(predictions_at(4)[0]), {})
    fifteen = batch.take(np.flatnonzero(np.asarray(batch["horizon_min"]) == 15))
    target_step = 7
    target = T0 + target_step * STEP_MS
    key = score_key(target)
    assert list(fn.process((key, (_PREDICTION, fifteen)), flush=timers, **cells)) == []
    assert timers.by_tag == {str(target + STEP_MS): target + STEP_MS}

    [(tagged_key, (kind, step))] = _tag(_AGGREGATE, STEP_MS)(step_batch(target_step))
    assert (tagged_key, kind) == (key, _STEP)
    stamp = Timestamp(micros=(target + STEP_MS - 1) * 1000)
    scores = [r for out in fn.process((key, (kind, step)), flush=timers, expire=expire, timestamp=stamp, **cells)
              for r in records_of(out)]
    observed = SPEEDS[target_step] > 0
    assert not observed.all()  # the test's missing reading is one of them
    assert sorted((r["sensor_id"], r["status"], r["actual_speed_mph"]) for r in scores) == sorted(
        (sensor, SCORED if observed[j] else MISSING, float(SPEEDS[target_step, j]) if observed[j] else None)
        for j, sensor in enumerate(SENSORS))
    assert timers.by_tag == {} and expire.by_tag == {"": target + STEP_MS - 1 + SETTLED_KEEP_MS}
    assert len(_table(cells).targets()) == 0

    thirty = next(r for r in predictions_at(1) if r["horizon_min"] == 30 and r["sensor_id"] == SENSORS[0])
    later = {**thirty, "event_time": target - 30 * 60_000, "target_time": target}
    on_arrival = [r for out in fn.process((key, (_PREDICTION, later)), flush=timers, **cells)
                  for r in records_of(out)]
    assert [(r["status"], r["actual_speed_mph"]) for r in on_arrival] == [(SCORED, float(SPEEDS[target_step, 0]))]
    assert timers.by_tag == {} and len(_table(cells).targets()) == 0
    again = [r for out in fn.process((key, (_PREDICTION, later)), flush=timers, **cells) for r in records_of(out)]
    assert again == []  # scored once
