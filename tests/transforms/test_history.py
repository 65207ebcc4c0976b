"""NetworkHistory: explicit NaN for gaps, pane ranking, prompt emission, batch == streaming.

Inputs are ``window_aggregate`` batches: one aggregate each, or all of them in one.
"""

from __future__ import annotations

import math
import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.batches import Columns
from transforms.aggregate import AGGREGATE_NULLABLE
from transforms.exceptions import TransformConfigError
from transforms.history import (
    STEP_ACTUALS,
    NetworkHistory,
    StepActuals,
    _NetworkHistoryFn,
    last_best,
    pane_parts,
    pane_ranks,
    step_actuals,
)

T0_MS = 1_330_560_000_000
S_MS = 300_000
SENSORS = ["a", "b", "c"]


def agg(sensor: str, step: int, mean: float | None, timing: str = "ON_TIME", count: int = 1) -> dict:
    return {
        "sensor_id": sensor,
        "window_start": T0_MS + step * S_MS,
        "window_end": T0_MS + (step + 1) * S_MS,
        "mean_speed_mph": mean,
        "count": count,
        "missing_count": 0 if mean is not None else count,
        "pane_timing": timing,
    }


def batch(*aggregates: dict) -> Columns:
    fields = ("sensor_id", "window_start", "window_end", "mean_speed_mph", "count", "missing_count", "pane_timing")
    dtypes = {"sensor_id": str, "window_start": np.int64, "window_end": np.int64, "mean_speed_mph": np.float64,
              "count": np.int64, "missing_count": np.int64, "pane_timing": str}
    return Columns.from_records("window_aggregate", aggregates, fields, dtypes, AGGREGATE_NULLABLE)


def plain(snapshot: dict) -> tuple:
    """(step index, rows as tuples, NaN as None): comparable with equal_to."""
    rows = tuple(tuple(None if math.isnan(v) else v for v in row) for row in np.atleast_2d(snapshot["speeds"]))
    return (snapshot["step_ms"] - T0_MS) // S_MS, rows


N = None
AGGREGATES = [
    agg("a", 0, 50.0),
    agg("b", 0, 40.0),
    agg("c", 0, 30.0),
    agg("a", 1, 51.0),
    agg("b", 1, None),  # every reading missing
    agg("a", 2, 52.0, "EARLY"),
    agg("a", 2, 99.0, "EARLY", count=0),  # a lower-ranked pane
    agg("b", 2, 42.0),
    agg("c", 2, 32.0),
    # step 3: no data at all
    agg("a", 4, 54.0),
    agg("c", 4, 34.0),
    agg("zz", 4, 1.0),  # not in the network: ignored
]
EXPECTED = [
    (0, ((N, N, N), (N, N, N), (50.0, 40.0, 30.0))),
    (1, ((N, N, N), (50.0, 40.0, 30.0), (51.0, N, N))),
    (2, ((50.0, 40.0, 30.0), (51.0, N, N), (52.0, 42.0, 32.0))),
    (3, ((51.0, N, N), (52.0, 42.0, 32.0), (N, N, N))),
    (4, ((52.0, 42.0, 32.0), (N, N, N), (54.0, N, 34.0))),
]


def streaming_options() -> PipelineOptions:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


@pytest.mark.parametrize("seed", [0, 1, "one batch"])
def test_batch_network_history_fills_gaps_with_nan_whatever_the_order(seed):
    aggregates = AGGREGATES[:]
    if seed == "one batch":
        elements = [batch(*aggregates)]
    else:
        random.Random(seed).shuffle(aggregates)
        elements = [batch(a) for a in aggregates]
    with test_pipeline.TestPipeline() as p:
        snapshots = p | beam.Create(elements) | NetworkHistory(SENSORS, history_steps=3)
        assert_that(snapshots | beam.Map(plain), equal_to(EXPECTED), label="CheckSnapshots")
        shapes = snapshots | beam.Map(lambda s: (s["speeds"].shape, s["speeds"].dtype.name))
        assert_that(shapes, equal_to([((3, 3), "float64")] * 5), label="CheckShapes")


def test_the_later_pane_wins():
    aggregates = [agg("a", 0, 10.0, "EARLY"), agg("a", 0, 20.0, "ON_TIME", 2), agg("a", 0, 30.0, "LATE", 3)]
    with test_pipeline.TestPipeline() as p:
        snapshots = p | beam.Create([batch(a) for a in aggregates[::-1]]) | NetworkHistory(["a"], history_steps=1)
        assert_that(snapshots | beam.Map(plain), equal_to([(0, ((30.0,),))]))


def test_in_a_batch_of_many_steps_the_later_of_two_equal_panes_wins_in_each_step():
    """A day's batch is folded step by step, each step's panes in their order of arrival."""
    aggregates = [agg("a", 1, 10.0), agg("a", 0, 1.0), agg("a", 2, 5.0), agg("a", 1, 20.0), agg("a", 0, 2.0),
                  agg("a", 1, 30.0, count=0)]  # a lower-ranked pane: the 20.0 stays
    with test_pipeline.TestPipeline() as p:
        snapshots = p | beam.Create([batch(*aggregates)]) | NetworkHistory(["a"], history_steps=1)
        assert_that(snapshots | beam.Map(plain), equal_to([(0, ((2.0,),)), (1, ((20.0,),)), (2, ((5.0,),))]))


def test_streaming_with_early_panes_equals_batch():
    stream = test_stream.TestStream().advance_watermark_to(T0_MS / 1000)
    watermark_ms = T0_MS
    for a in AGGREGATES:
        if a["window_start"] > watermark_ms:
            watermark_ms = a["window_start"]
            stream = stream.advance_watermark_to(watermark_ms / 1000)
        stream = stream.add_elements([TimestampedValue(batch(a), (a["window_end"] - 1) / 1000)])
    # The streaming DirectRunner does not hold the output watermark for pending user timers, so a
    # timer that only fires on the final jump to +inf could emit after assert_that has closed;
    # advancing past the last step first lets every timer fire before that (Flink and Prism hold).
    stream = stream.advance_watermark_to((watermark_ms + 2 * S_MS) / 1000).advance_watermark_to_infinity()
    with test_pipeline.TestPipeline(options=streaming_options()) as p:
        snapshots = p | stream | NetworkHistory(SENSORS, history_steps=3)
        assert_that(snapshots | beam.Map(plain), equal_to(EXPECTED))


class _State:
    def __init__(self, value=None):
        self.value = value

    def read(self):
        return self.value

    def write(self, value):
        self.value = value

    def clear(self):
        self.value = None


class _Timer:
    def __init__(self):
        self.at = None

    def set(self, timestamp):
        self.at = timestamp

    def clear(self):
        self.at = None


def _fresh(members, history_steps, ordered=True):
    fn = _NetworkHistoryFn(members, history_steps, 300, ordered=ordered)
    pending, last, timer_at, flush = _State(), _State(), _State(), _Timer()

    def feed(*aggregates):
        return [plain(s.value) for s in fn.process(("network", batch(*aggregates)), pending, last, timer_at, flush)]

    def fire(at):
        return [plain(s.value) for s in fn.on_flush("network", at, pending, last, timer_at, flush)]

    return feed, fire, pending, last, timer_at, flush


def test_a_complete_step_is_emitted_before_its_timer_once_the_previous_step_was():
    """The DoFn alone, with in-memory state: prompt emission does not wait for the watermark."""
    feed, _, pending, last, timer_at, flush = _fresh(["a", "b"], 2)
    assert feed(agg("a", 0, 50.0)) == []  # step 0 lacks sensor b: it waits
    assert flush.at == Timestamp(micros=(T0_MS + S_MS) * 1000)
    assert feed(agg("b", 0, 40.0)) == [(0, ((N, N), (50.0, 40.0)))]  # the first step, complete: out at once
    assert set(pending.value) == {T0_MS}  # kept for the next span
    assert feed(agg("a", 1, 51.0)) == []
    assert np.flatnonzero(pending.value[T0_MS + S_MS][0] >= 0).tolist() == [0]  # step 1: only sensor a so far
    assert feed(agg("b", 1, 41.0)) == [(1, ((50.0, 40.0), (51.0, 41.0)))]  # complete: out at once
    assert last.value == T0_MS + S_MS and timer_at.value is None
    assert flush.at is None  # nothing pending: the timer is cleared, not left to fire (Prism queues data behind it)
    assert feed(agg("a", 0, 10.0)) == []  # too old for any future span: counted as stale, ignored
    assert set(pending.value) == {T0_MS + S_MS}  # step 0 left the table once no future span needs it


def test_a_first_step_that_is_not_complete_waits_for_its_timer_even_behind_a_complete_one():
    """Only the table's earliest step may go out before its timer: an older sensor's aggregate could still come."""
    feed, fire, _, last, _, flush = _fresh(["a", "b"], 2)
    assert feed(agg("a", 0, 50.0)) == []
    assert feed(agg("a", 1, 51.0)) == [] and feed(agg("b", 1, 41.0)) == []  # step 1 complete, step 0 not
    assert last.value is None and flush.at == Timestamp(micros=(T0_MS + S_MS) * 1000)
    fired = fire(flush.at)  # step 0 is due; step 1 is complete and goes out behind it
    assert fired == [(0, ((N, N), (50.0, N))), (1, ((50.0, N), (51.0, 41.0)))]
    assert last.value == T0_MS + S_MS


def test_on_a_bounded_input_a_complete_first_step_still_waits_for_its_timer():
    """A bounded input comes in any order: a complete step read first may not be the data's first step."""
    feed, fire, _, last, _, _ = _fresh(["a", "b"], 2, ordered=False)
    assert feed(agg("a", 1, 51.0), agg("b", 1, 41.0)) == [] and last.value is None
    assert feed(agg("a", 0, 50.0)) == []
    assert fire(Timestamp(micros=(T0_MS + 2 * S_MS) * 1000)) == [(0, ((N, N), (50.0, N))),
                                                                  (1, ((50.0, N), (51.0, 41.0)))]


def test_a_bounded_input_whose_later_step_completes_first_gives_every_step():
    later_first = [agg(s, 1, 41.0) for s in SENSORS] + [agg(s, 0, 40.0) for s in SENSORS]
    with test_pipeline.TestPipeline() as p:
        snapshots = p | beam.Create([batch(a) for a in later_first]) | NetworkHistory(SENSORS, history_steps=2)
        assert_that(snapshots | beam.Map(plain), equal_to([(0, ((N, N, N), (40.0, 40.0, 40.0))),
                                                          (1, ((40.0, 40.0, 40.0), (41.0, 41.0, 41.0)))]))


def test_a_first_step_complete_in_one_batch_goes_out_with_the_complete_steps_after_it():
    feed, _, _, last, _, _ = _fresh(["a", "b"], 2)
    out = feed(agg("a", 0, 50.0), agg("b", 0, 40.0), agg("a", 1, 51.0), agg("b", 1, 41.0), agg("a", 2, 52.0))
    assert out == [(0, ((N, N), (50.0, 40.0))), (1, ((50.0, 40.0), (51.0, 41.0)))]  # step 2 lacks b: it waits
    assert last.value == T0_MS + S_MS


def test_invalid_parameters_are_rejected():
    with pytest.raises(TransformConfigError):
        NetworkHistory([])
    with pytest.raises(TransformConfigError):
        NetworkHistory(["a", "a"])
    with pytest.raises(TransformConfigError):
        NetworkHistory(["a"], history_steps=0)


@pytest.mark.parametrize("seed", range(5))
def test_a_batch_of_panes_is_kept_as_if_they_came_one_by_one(seed):
    """The vectorised fold (last_best) equals the rule applied pane by pane in arrival order."""
    rng = np.random.default_rng(seed)
    members = rng.integers(0, 4, 30)
    ranks = rng.integers(0, 3, 30).astype(np.int64)
    best_ranks, best_rows = np.full(4, -1), np.full(4, -1)
    for i, (member, rank) in enumerate(zip(members.tolist(), ranks.tolist(), strict=True)):
        if rank >= best_ranks[member]:
            best_ranks[member], best_rows[member] = rank, i
    winners, rows = last_best(members, ranks)
    assert sorted(winners.tolist()) == sorted(set(members.tolist()))
    assert rows.tolist() == best_rows[winners].tolist()


def test_sensors_outside_the_network_are_counted_not_placed():
    fn = _NetworkHistoryFn(["b", "a", "c"], 2, 300)
    assert fn._member_index(np.array(["a", "zz", "c", "b", ""])).tolist() == [1, -1, 2, 0, -1]


def own_step(snapshot: dict) -> tuple:
    """(step index, the StepActuals rows as (sensor, mean or None, count, timing), by sensor)."""
    rows = step_actuals(snapshot, np.asarray(SENSORS))
    if rows is None:
        return (snapshot["step_ms"] - T0_MS) // S_MS, ()
    assert rows.kind == STEP_ACTUALS and set(rows["window_start"].tolist()) == {snapshot["step_ms"]}
    return (snapshot["step_ms"] - T0_MS) // S_MS, tuple(
        (s, None if math.isnan(m) else m, int(c), t) for s, m, c, t in zip(
            rows["sensor_id"].tolist(), rows["mean_speed_mph"].tolist(), rows["count"].tolist(),
            rows["pane_timing"].tolist(), strict=True))


def test_a_snapshots_own_step_gives_the_panes_it_was_emitted_with():
    """StepActuals' rows are the step's winning panes (mean, count, timing); a sensor without a pane has none,
    and a step with no pane at all gives nothing."""
    expected = [
        (0, (("a", 50.0, 1, "ON_TIME"), ("b", 40.0, 1, "ON_TIME"), ("c", 30.0, 1, "ON_TIME"))),
        (1, (("a", 51.0, 1, "ON_TIME"), ("b", None, 1, "ON_TIME"))),
        (2, (("a", 52.0, 1, "EARLY"), ("b", 42.0, 1, "ON_TIME"), ("c", 32.0, 1, "ON_TIME"))),
        (3, ()),
        (4, (("a", 54.0, 1, "ON_TIME"), ("c", 34.0, 1, "ON_TIME"))),
    ]
    with test_pipeline.TestPipeline() as p:
        snapshots = p | beam.Create([batch(*AGGREGATES)]) | NetworkHistory(SENSORS, history_steps=3)
        assert_that(snapshots | beam.Map(own_step), equal_to(expected), label="CheckOwnSteps")
        actuals = snapshots | StepActuals(SENSORS)
        assert_that(actuals | beam.Map(lambda b: (b.kind, len(b), int(b["window_start"][0]))),
                    equal_to([(STEP_ACTUALS, 3, T0_MS), (STEP_ACTUALS, 2, T0_MS + S_MS),
                              (STEP_ACTUALS, 3, T0_MS + 2 * S_MS), (STEP_ACTUALS, 2, T0_MS + 4 * S_MS)]),
                    label="CheckStepActuals")


def test_pane_parts_undo_pane_ranks():
    timings = np.array(["LATE", "EARLY", "ON_TIME", "UNKNOWN", "SOMETHING ELSE"])
    counts = np.array([3, 0, 7, 1, 2**32 + 5])  # a count past 32 bits is clipped by the rank
    back_timings, back_counts = pane_parts(pane_ranks(timings, counts))
    assert back_timings.tolist() == ["LATE", "EARLY", "ON_TIME", "UNKNOWN", "UNKNOWN"]
    assert back_counts.tolist() == [3, 0, 7, 1, 2**32 - 1]
