"""WindowedAggregate: statistics, missing readings, out-of-order, early/on-time/late panes, the late output.

Inputs are ``traffic_event`` batches (one event each where pane timing matters,
many in one where batch composition must not matter); outputs are flattened to
records.
"""

from __future__ import annotations

import math
import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import GlobalWindow, TimestampedValue

from schemas.codec import AvroCodec
from transforms import aggregate
from transforms.aggregate import STEP, BatchSpeedStatsFn, WindowedAggregate, speed_stats, window_stats
from transforms.exceptions import TransformConfigError
from transforms.validate import event_columns

T0_MS = 1_330_560_000_000  # a window boundary (divisible by 300 s)
W_MS = 300_000


def event(sensor: str, offset_s: float, speed: float | None) -> dict:
    return {"sensor_id": sensor, "event_time": T0_MS + int(offset_s * 1000), "speed_mph": speed, "validated_at": 0}


def batch_of(*events: dict) -> TimestampedValue:
    """One ``traffic_event`` batch of ``events``, stamped with the earliest."""
    columns = event_columns([e["sensor_id"] for e in events], [e["event_time"] for e in events],
                            [math.nan if e["speed_mph"] is None else e["speed_mph"] for e in events],
                            [e["validated_at"] for e in events])
    return TimestampedValue(columns, min(e["event_time"] for e in events) / 1000)


def stamped(e: dict) -> TimestampedValue:
    return batch_of(e)


def records(pcoll, label: str = "Records"):
    return pcoll | label >> beam.FlatMap(lambda b: b.records())


def streaming_options() -> PipelineOptions:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


def brief(a: dict) -> tuple:
    mean = None if a["mean_speed_mph"] is None else round(a["mean_speed_mph"], 9)
    return (a["sensor_id"], (a["window_start"] - T0_MS) // W_MS, a["pane_timing"], a["count"], a["missing_count"], mean)


def test_speed_stats_population_stddev_and_order_independence():
    speeds = [50.0, 60.0, 55.5, 70.25, 0.1]
    stats = speed_stats(speeds, 2)
    mean = sum(speeds) / 5
    assert stats["mean"] == pytest.approx(mean)
    assert stats["stddev"] == pytest.approx(math.sqrt(sum((s - mean) ** 2 for s in speeds) / 5))
    assert (stats["min"], stats["max"], stats["count"], stats["missing"]) == (0.1, 70.25, 7, 2)
    rng = random.Random(3)
    values = [rng.uniform(0, 80) for _ in range(200)]
    shuffled = values[:]
    rng.shuffle(shuffled)
    assert speed_stats(values, 0) == speed_stats(shuffled, 0)  # bit for bit


def test_all_missing_window_has_no_speed_statistics():
    assert speed_stats([], 3) == {"mean": None, "min": None, "max": None, "stddev": None, "count": 3, "missing": 3}
    fn = BatchSpeedStatsFn()
    left = fn.add_input(fn.create_accumulator(), batch_of(event("a", 1, None), event("a", 2, 40.0)).value)
    right = fn.add_input(fn.create_accumulator(), batch_of(event("a", 3, 60.0), event("b", 4, None)).value)
    stats = fn.extract_output(fn.merge_accumulators([left, right]))
    assert stats["sensor_id"].tolist() == ["a", "b"] and stats["mean"][0] == 50.0 and math.isnan(stats["mean"][1])
    assert stats["count"].tolist() == [3, 1] and stats["missing"].tolist() == [1, 1]


def test_window_stats_equal_speed_stats_whatever_the_order():
    rng = random.Random(5)
    sensors = [rng.choice("abcdef") for _ in range(600)]
    speeds = [rng.choice([math.nan, rng.uniform(0, 80), rng.uniform(50, 51)]) for _ in range(600)]
    got = window_stats(np.array(sensors), np.array(speeds))
    order = list(range(600))
    rng.shuffle(order)
    shuffled = window_stats(np.array([sensors[i] for i in order]), np.array([speeds[i] for i in order]))
    for k, sensor in enumerate(got["sensor_id"].tolist()):
        mine = [v for s, v in zip(sensors, speeds, strict=True) if s == sensor]
        expected = speed_stats([v for v in mine if not math.isnan(v)], sum(math.isnan(v) for v in mine))
        for name in ("mean", "min", "max", "stddev"):
            assert got[name][k] == pytest.approx(expected[name], rel=1e-12, abs=1e-12)
            assert got[name][k] == shuffled[name][k]  # bit for bit, whatever the arrival order
        assert (got["count"][k], got["missing"][k]) == (expected["count"], expected["missing"])


def test_many_events_in_one_batch_give_the_aggregates_of_one_event_per_batch():
    rng = random.Random(8)
    events = [event(rng.choice("xyz"), rng.uniform(0, 1500), rng.choice([None, rng.uniform(10, 70)]))
              for _ in range(300)]
    with test_pipeline.TestPipeline() as p:
        together = p | "One" >> beam.Create([batch_of(*events)]) | "AggOne" >> WindowedAggregate(
            allowed_lateness_s=None)
        apart = p | "Many" >> beam.Create([batch_of(e) for e in events]) | "AggMany" >> WindowedAggregate(
            allowed_lateness_s=None)
        expected = sorted(brief(a) for a in _reference_aggregates(events))
        assert_that(records(together.aggregates, "R1") | "B1" >> beam.Map(brief), equal_to(expected), label="One")
        assert_that(records(apart.aggregates, "R2") | "B2" >> beam.Map(brief), equal_to(expected), label="Many")


def _reference_aggregates(events: list[dict]) -> list[dict]:
    cells: dict = {}
    for e in events:
        start = e["event_time"] - e["event_time"] % W_MS
        cells.setdefault((e["sensor_id"], start), []).append(e["speed_mph"])
    out = []
    for (sensor, start), speeds in cells.items():
        stats = speed_stats([v for v in speeds if v is not None], sum(v is None for v in speeds))
        out.append({"sensor_id": sensor, "window_start": start, "pane_timing": "ON_TIME", "count": stats["count"],
                    "missing_count": stats["missing"], "mean_speed_mph": stats["mean"]})
    return out


def test_batch_aggregates_out_of_order_and_missing_readings():
    events = [
        event("a", 250, 60.0),
        event("a", 10, 50.0),
        event("a", 100, None),  # missing reading
        event("b", 20, None),
        event("b", 200, None),  # every reading of b's window missing
        event("a", 310, 40.0),  # next window
    ]
    with test_pipeline.TestPipeline() as p:
        result = p | beam.Create(events) | beam.Map(stamped) | WindowedAggregate(allowed_lateness_s=None)
        aggregates = records(result.aggregates)
        assert_that(
            aggregates | beam.Map(brief),
            equal_to(
                [("a", 0, "ON_TIME", 3, 1, 55.0), ("b", 0, "ON_TIME", 2, 2, None), ("a", 1, "ON_TIME", 1, 0, 40.0)]
            ),
            label="CheckAggregates",
        )
        assert_that(result.late, equal_to([]), label="CheckNoneLate")
        full = aggregates | "Full" >> beam.Filter(lambda a: a["sensor_id"] == "a" and a["window_start"] == T0_MS)
        assert_that(
            full | beam.Map(lambda a: (a["window_end"] - a["window_start"], a["min_speed_mph"], a["max_speed_mph"])),
            equal_to([(W_MS, 50.0, 60.0)]),
            label="CheckFields",
        )
        encoded = aggregates | "Encode" >> beam.Map(lambda a: len(AvroCodec("window_aggregate").encode(a)) > 5)
        assert_that(encoded, equal_to([True] * 3), label="FitsSchema")


def test_streaming_early_on_time_late_and_too_late():
    """Window 0 of sensor a: two early panes, on time, one late pane within lateness, one reading too late."""
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([stamped(event("a", 10, 50.0))])
        .add_elements([stamped(event("a", 200, 60.0))])
        .add_elements([stamped(event("a", 320, 30.0))])  # window 1
        .advance_watermark_to(T0_MS / 1000 + 330)  # window 0 closes: ON_TIME pane
        .add_elements([stamped(event("a", 100, 70.0))])  # late, but within the 60 s allowed lateness
        .add_elements([stamped(event("a", 400, 20.0))])  # the sensor's high-water mark passes 300 + 60
        .add_elements([stamped(event("a", 150, 99.0))])  # later than allowed: goes to `late`
        .advance_watermark_to_infinity()
    )
    with test_pipeline.TestPipeline(options=streaming_options()) as p:
        result = p | stream | WindowedAggregate(allowed_lateness_s=60, early_firing_count=1)
        _check_panes(result)


def _check_panes(result) -> None:
    assert_that(
        records(result.aggregates) | beam.Map(brief),
        equal_to(
            [
                ("a", 0, "EARLY", 1, 0, 50.0),
                ("a", 0, "EARLY", 2, 0, 55.0),
                ("a", 0, "ON_TIME", 2, 0, 55.0),
                ("a", 0, "LATE", 3, 0, 60.0),
                ("a", 1, "EARLY", 1, 0, 30.0),
                ("a", 1, "EARLY", 2, 0, 25.0),
                ("a", 1, "ON_TIME", 2, 0, 25.0),
            ]
        ),
        label="CheckPanes",
    )
    assert_that(records(result.late, "LateRecords") | beam.Map(lambda e: e["speed_mph"]), equal_to([99.0]),
                label="CheckLate")


def test_batch_flags_late_by_arrival_order_and_counts_it():
    """With a lateness limit, batch input is judged in arrival order (pass None for batch to switch it off)."""
    events = [event("a", 320, 30.0), event("a", 10, 50.0), event("b", 10, 45.0)]
    p = test_pipeline.TestPipeline()
    result = p | beam.Create(events) | beam.Map(stamped) | WindowedAggregate(allowed_lateness_s=0)
    assert_that(
        records(result.aggregates) | beam.Map(brief),
        equal_to([("a", 1, "ON_TIME", 1, 0, 30.0), ("b", 0, "ON_TIME", 1, 0, 45.0)]),
        label="CheckAggregates",
    )
    assert_that(records(result.late, "LateRecords") | beam.Map(lambda e: e["speed_mph"]), equal_to([50.0]),
                label="CheckLate")
    outcome = p.run()
    outcome.wait_until_finish()
    late = outcome.metrics().query(MetricsFilter().with_namespace(STEP).with_name("late"))["counters"]
    assert sum(c.committed for c in late) == 1


def test_lateness_is_judged_per_sensor_even_when_sensors_share_a_state_shard():
    from transforms.keys import sensor_shard

    first = "s0"
    twin = next(f"s{i}" for i in range(1, 200) if sensor_shard(f"s{i}") == sensor_shard(first))
    events = [event(first, 320, 30.0), event(twin, 10, 50.0), event(first, 10, 40.0)]
    with test_pipeline.TestPipeline() as p:
        result = p | beam.Create(events) | beam.Map(stamped) | WindowedAggregate(allowed_lateness_s=0)
        assert_that(
            records(result.aggregates) | beam.Map(brief),
            equal_to([(first, 1, "ON_TIME", 1, 0, 30.0), (twin, 0, "ON_TIME", 1, 0, 50.0)]),
            label="CheckAggregates",
        )
        assert_that(records(result.late, "LateRecords") | beam.Map(lambda e: (e["sensor_id"], e["speed_mph"])),
                    equal_to([(first, 40.0)]), label="CheckLate")


def test_streaming_discarding_mode_and_counts_add_up():
    readings = [event("a", t, 40.0 + t / 100) for t in (10, 50, 90, 310, 320)] + [event("b", 5, None)]
    stream = test_stream.TestStream().advance_watermark_to(T0_MS / 1000)
    for e in readings:
        stream = stream.add_elements([stamped(e)])
    stream = stream.add_elements([stamped(event("a", 20, 99.0))])  # late: a's mark is at 320 > 300 + 0
    stream = stream.advance_watermark_to_infinity()
    with test_pipeline.TestPipeline(options=streaming_options()) as p:
        result = p | stream | WindowedAggregate(early_firing_count=2, accumulate=False)
        parts = (
            records(result.aggregates) | beam.Map(lambda a: ("aggregated", a["count"])),
            records(result.late, "LateRecords") | "Late" >> beam.Map(lambda e: ("late", 1)),
        ) | beam.Flatten()

        def counts_add_up(actual: list) -> None:
            assert sum(n for _, n in actual) == len(readings) + 1
            assert sum(n for kind, n in actual if kind == "late") == 1

        assert_that(parts, counts_add_up)


def test_invalid_parameters_are_rejected():
    for kwargs in ({"window_s": 0}, {"allowed_lateness_s": -1}, {"early_firing_count": 0}, {"lateness_grace_s": -5}):
        with pytest.raises(TransformConfigError):
            WindowedAggregate(**kwargs)


def _window_and_time(batch, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
    for start in sorted(set(batch["window_start"].tolist())):
        yield start, window.start.micros // 1000, window.end.micros // 1000, timestamp.micros


def test_the_windowed_batch_path_gives_one_batch_per_window_stamped_with_the_window_end():
    events = [event("a", 10, 50.0), event("a", 20, 52.0), event("b", 400, None)]
    with test_pipeline.TestPipeline() as p:
        result = p | beam.Create(events) | beam.Map(stamped) | WindowedAggregate(allowed_lateness_s=0)
        assert_that(
            result.aggregates | beam.FlatMap(_window_and_time),
            equal_to(
                [
                    (T0_MS, T0_MS, T0_MS + W_MS, (T0_MS + W_MS) * 1000 - 1000),
                    (T0_MS + W_MS, T0_MS + W_MS, T0_MS + 2 * W_MS, (T0_MS + 2 * W_MS) * 1000 - 1000),
                ]
            ),
            label="CheckWindows",
        )
        assert_that(
            records(result.aggregates) | "Brief" >> beam.Map(brief),
            equal_to([("a", 0, "ON_TIME", 2, 0, 51.0), ("b", 1, "ON_TIME", 1, 1, None)]),
            label="CheckValues",
        )


def _block_and_time(batch, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
    yield tuple(batch["window_start"].tolist()), isinstance(window, GlobalWindow), timestamp.micros


def test_the_bounded_path_gives_one_batch_per_day_of_windows_stamped_with_its_last_window_end():
    day_ms = 86_400_000
    events = [event("a", 10, 50.0), event("b", 400, None), event("a", 20, 52.0),
              event("a", day_ms / 1000 + 5, 60.0)]  # the next day
    with test_pipeline.TestPipeline() as p:
        result = p | beam.Create(events) | beam.Map(stamped) | WindowedAggregate(allowed_lateness_s=None)
        assert_that(
            result.aggregates | beam.FlatMap(_block_and_time),
            equal_to([
                ((T0_MS, T0_MS + W_MS), True, (T0_MS + 2 * W_MS) * 1000 - 1000),  # by window, then sensor
                ((T0_MS + day_ms,), True, (T0_MS + day_ms + W_MS) * 1000 - 1000),
            ]),
            label="CheckBlocks",
        )
        assert_that(
            records(result.aggregates) | "Brief" >> beam.Map(brief),
            equal_to([("a", 0, "ON_TIME", 2, 0, 51.0), ("b", 1, "ON_TIME", 1, 1, None),
                      ("a", day_ms // W_MS, "ON_TIME", 1, 0, 60.0)]),
            label="CheckValues",
        )
        ends = records(result.aggregates, "Records2") | "Ends" >> beam.Map(
            lambda a: a["window_end"] - a["window_start"])
        assert_that(ends, equal_to([W_MS] * 3), label="CheckEnds")


def test_stats_of_many_windows_at_once_equal_each_windows_own_bit_for_bit():
    rng = np.random.default_rng(4)
    sensors = rng.choice(np.array(["x", "y", "z"]), 900)
    starts = rng.integers(0, 6, 900) * W_MS
    speeds = np.where(rng.random(900) < 0.1, np.nan, rng.uniform(10, 70, 900))
    together = window_stats(sensors, speeds, starts)
    at = 0
    for start in range(0, 6 * W_MS, W_MS):
        alone = window_stats(sensors[starts == start], speeds[starts == start])
        n = len(alone["sensor_id"])
        assert together["window_start"][at : at + n].tolist() == [start] * n
        assert together["sensor_id"][at : at + n].tolist() == alone["sensor_id"].tolist()
        for name in ("mean", "min", "max", "stddev", "count", "missing"):
            assert np.array_equal(together[name][at : at + n], alone[name], equal_nan=True), name
        at += n
    assert at == len(together["sensor_id"])


@pytest.mark.parametrize("hashed_from", [0, 10**9], ids=["hash-ranked", "text-sorted"])
def test_stats_of_one_reading_per_window_and_sensor_come_sorted_by_window_then_sensor_as_text(monkeypatch,
                                                                                             hashed_from):
    monkeypatch.setattr(aggregate, "HASHED_SORT_FROM", hashed_from)
    rng = np.random.default_rng(8)
    names = np.array(["773869", "717445", "9", "10", "717446"], dtype=object)  # text order, not number order
    sensors, starts = np.repeat(names, 4), np.tile(np.array([3, 0, 2, 1]) * W_MS, len(names))
    speeds = np.where(rng.random(len(sensors)) < 0.2, np.nan, rng.uniform(10, 70, len(sensors)))
    order = rng.permutation(len(sensors))
    got = window_stats(sensors[order], speeds[order], starts[order])
    expected = sorted(zip(starts.tolist(), sensors.tolist(), speeds.tolist(), strict=True))
    assert list(zip(got["window_start"].tolist(), got["sensor_id"].tolist(), strict=True)) == [
        (start, sensor) for start, sensor, _ in expected]
    assert np.array_equal(got["mean"], [speed for *_, speed in expected], equal_nan=True)
    assert got["count"].tolist() == [1] * len(expected)
    assert got["missing"].tolist() == [int(math.isnan(speed)) for *_, speed in expected]


def test_both_sorts_give_the_same_stats_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(9)
    sensors = rng.choice(np.array(["717445", "9", "773869", "10"]), 2000)
    starts = rng.integers(0, 8, 2000) * W_MS
    speeds = np.where(rng.random(2000) < 0.1, np.nan, rng.uniform(10, 70, 2000))
    results = []
    for hashed_from in (0, 10**9):
        monkeypatch.setattr(aggregate, "HASHED_SORT_FROM", hashed_from)
        results.append((window_stats(sensors, speeds, starts), window_stats(sensors[:300], speeds[:300])))
    for hashed, text in zip(*results, strict=True):
        assert hashed.keys() == text.keys()
        for name in hashed:
            assert hashed[name].tobytes() == text[name].tobytes(), name
