"""DeduplicateEvents: first wins, repeats become dead letters, identical in batch and streaming.

Inputs are ``traffic_event`` batches: one event each, or all in one (arrival order within it decides).
"""

from __future__ import annotations

import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from schemas.codec import AvroCodec
from transforms.dedupe import DAY_MS, DeduplicateEvents, first_wins, shard_day_parts
from transforms.exceptions import TransformConfigError
from transforms.validate import event_columns

T0_MS = 1_330_560_000_000
STEP_MS = 300_000


def event(sensor: str, step: int, speed: float | None, validated_at: int = 1) -> dict:
    return {"sensor_id": sensor, "event_time": T0_MS + step * STEP_MS, "speed_mph": speed, "validated_at": validated_at}


def stamped(*events: dict) -> TimestampedValue:
    columns = event_columns([e["sensor_id"] for e in events], [e["event_time"] for e in events],
                            [math.nan if e["speed_mph"] is None else e["speed_mph"] for e in events],
                            [e["validated_at"] for e in events])
    return TimestampedValue(columns, min(e["event_time"] for e in events) / 1000)


def records(pcoll, label: str = "Records"):
    return pcoll | label >> beam.FlatMap(lambda b: b.records())


EVENTS = [
    event("a", 0, 50.0),
    event("a", 1, 51.0),
    event("a", 0, 50.0, validated_at=2),  # exact repeat (re-sent later)
    event("b", 0, None),
    event("b", 0, None, validated_at=3),  # repeat of a missing reading
    event("a", 1, 49.0),  # same time, different speed
    event("b", 1, 30.0),
]
EXPECTED_VALID = [("a", 0, 50.0), ("a", 1, 51.0), ("b", 0, None), ("b", 1, 30.0)]
EXPECTED_DEAD = [("duplicate", b"a"), ("duplicate", b"b"), ("conflicting_duplicate", b"a")]


def summary(e: dict) -> tuple:
    return e["sensor_id"], (e["event_time"] - T0_MS) // STEP_MS, e["speed_mph"]


def check(result) -> None:
    assert_that(records(result.valid) | "Summarise" >> beam.Map(summary), equal_to(EXPECTED_VALID),
                label="CheckValid")
    assert_that(
        result.dead_letter | "Reasons" >> beam.Map(lambda d: (d["reason"], d["key"])),
        equal_to(EXPECTED_DEAD),
        label="CheckDeadLetters",
    )


@pytest.mark.parametrize("together", [False, True], ids=["one-per-batch", "one-batch"])
def test_batch_keeps_the_first_and_dead_letters_the_repeats(together):
    elements = [stamped(*EVENTS)] if together else [stamped(e) for e in EVENTS]
    with test_pipeline.TestPipeline() as p:
        result = p | beam.Create(elements) | DeduplicateEvents(now_ms_fn=lambda: 7)
        check(result)
        total = (records(result.valid, "ValidRecords"), result.dead_letter) | beam.Flatten() | (
            beam.combiners.Count.Globally())
        assert_that(total, equal_to([len(EVENTS)]), label="CountsAddUp")


def test_first_wins_within_a_batch_and_against_what_was_seen():
    seen: dict = {}
    keep, first = first_wins(seen, np.array(["a", "a", "b"]), np.array([1, 1, 1]), np.array([5.0, 6.0, 7.0]))
    assert keep.tolist() == [True, False, True] and first[1] == 5.0
    keep, first = first_wins(seen, np.array(["b", "c"]), np.array([1, 1]), np.array([np.nan, 1.0]))
    assert keep.tolist() == [False, True] and first[0] == 7.0
    assert seen["a"][0].tolist() == [1] and sorted(seen) == ["a", "b", "c"]


def test_first_wins_agrees_with_a_row_by_row_reading_over_many_batches():
    rng = np.random.default_rng(11)
    for _ in range(200):
        seen: dict = {}
        first_of: dict[tuple[str, int], float] = {}  # the row-by-row reading: the first speed of each pair
        for _ in range(int(rng.integers(1, 5))):
            n = int(rng.integers(0, 25))
            sensors = rng.choice(np.array(["x", "y", "z", "w"], dtype=object), n)
            times = rng.integers(0, 6, n).astype(np.int64)
            speeds = np.where(rng.random(n) < 0.2, np.nan, rng.integers(0, 3, n).astype(float))
            keep, first = first_wins(seen, sensors, times, speeds)
            for i, pair in enumerate(zip(sensors.tolist(), times.tolist(), strict=True)):
                if pair in first_of:
                    assert not keep[i] and (first[i] == first_of[pair] or (math.isnan(first[i])
                                                                           and math.isnan(first_of[pair])))
                else:
                    assert keep[i]
                    first_of[pair] = float(speeds[i])
        for sensor, (times, speeds) in seen.items():  # the memory: each sensor's times in order, first speeds
            expected = sorted((t, v) for (s, t), v in first_of.items() if s == sensor)
            assert times.tolist() == [t for t, _ in expected]
            assert np.array_equal(speeds, [v for _, v in expected], equal_nan=True)
        assert sorted(seen) == sorted({s for s, _ in first_of})


def test_streaming_gives_the_same_split():
    stream = test_stream.TestStream().advance_watermark_to(T0_MS / 1000)
    for e in EVENTS:
        stream = stream.add_elements([stamped(e)])
    stream = stream.advance_watermark_to((T0_MS + 2 * STEP_MS) / 1000).advance_watermark_to_infinity()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with test_pipeline.TestPipeline(options=options) as p:
        check(p | stream | DeduplicateEvents())


def test_dead_letter_payload_is_the_repeated_event_in_wire_format():
    repeat = event("a", 0, 50.0, validated_at=2)
    with test_pipeline.TestPipeline() as p:
        result = p | beam.Create([stamped(event("a", 0, 50.0)), stamped(repeat)]) | DeduplicateEvents()
        decoded = result.dead_letter | beam.Map(lambda d: AvroCodec("traffic_event").decode(d["payload"]))
        assert_that(decoded, equal_to([repeat]))


def test_state_expires_after_ttl_so_very_late_repeats_pass():
    """ttl_s bounds the state: once the watermark passes the end of the event's UTC day + ttl, a repeat passes."""
    first = event("a", 0, 50.0)
    day_end_s = (T0_MS - T0_MS % DAY_MS + DAY_MS) / 1000
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([stamped(first)])
        .add_elements([stamped(event("a", 0, 50.0, validated_at=2))])
        .advance_watermark_to(day_end_s + 30)  # within the ttl: still remembered
        .add_elements([stamped(event("a", 0, 50.0, validated_at=3))])
        .advance_watermark_to(day_end_s + 120)
        .add_elements([stamped(event("a", 0, 50.0, validated_at=4))])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with test_pipeline.TestPipeline(options=options) as p:
        result = p | stream | DeduplicateEvents(ttl_s=60)
        assert_that(records(result.valid) | beam.Map(lambda e: e["validated_at"]), equal_to([1, 4]),
                    label="CheckValid")
        assert_that(result.dead_letter | beam.Map(lambda d: d["reason"]), equal_to(["duplicate"] * 2),
                    label="CheckDead")


def test_ttl_must_be_positive():
    with pytest.raises(TransformConfigError):
        DeduplicateEvents(ttl_s=0)


def test_sensors_sharing_a_shard_keep_their_own_readings():
    from transforms.keys import sensor_shard

    names = [f"s{i}" for i in range(200)]
    first = names[0]
    twin = next(n for n in names[1:] if sensor_shard(n) == sensor_shard(first))
    events = [event(first, 0, 50.0), event(twin, 0, 40.0), event(twin, 0, 41.0), event(first, 0, 50.0)]
    with test_pipeline.TestPipeline() as p:
        result = p | beam.Create(events) | beam.Map(stamped) | DeduplicateEvents(now_ms_fn=lambda: 7)
        assert_that(records(result.valid) | beam.Map(summary), equal_to([(first, 0, 50.0), (twin, 0, 40.0)]),
                    label="OnePerSensor")
        assert_that(result.dead_letter | beam.Map(lambda d: (d["reason"], d["key"])),
                    equal_to([("conflicting_duplicate", twin.encode()), ("duplicate", first.encode())]),
                    label="RepeatsPerSensor")


def test_a_batch_across_midnight_splits_into_shard_and_day_keys_in_arrival_order():
    from transforms.keys import DEFAULT_SHARDS, sensor_shard

    day = T0_MS // DAY_MS
    steps_to_midnight = (DAY_MS - T0_MS % DAY_MS) // STEP_MS
    events = [event("a", steps_to_midnight, 1.0), event("b", 0, 2.0), event("a", 0, 3.0),
              event("a", steps_to_midnight + 1, 4.0), event("a", 1, 5.0)]
    parts = list(shard_day_parts(stamped(*events).value))
    got = {(key % DEFAULT_SHARDS, key // DEFAULT_SHARDS): part["speed_mph"].tolist() for key, part in parts}
    expected: dict = {}
    for e in events:
        key = (sensor_shard(e["sensor_id"]), e["event_time"] // DAY_MS)
        expected.setdefault(key, []).append(e["speed_mph"])
    assert got == expected and len(parts) == len(expected)
    assert {d for _, d in got} == {day, day + 1}


def test_a_repeat_from_an_earlier_day_after_a_later_days_readings_is_caught():
    events = [event("a", 0, 50.0), event("a", 300, 60.0), event("a", 0, 50.0, validated_at=2)]  # 300 steps: a day on
    with test_pipeline.TestPipeline() as p:
        result = p | beam.Create([stamped(*events[:2]), stamped(events[2])]) | DeduplicateEvents(now_ms_fn=lambda: 7)
        assert_that(records(result.valid) | beam.Map(summary), equal_to([("a", 0, 50.0), ("a", 300, 60.0)]),
                    label="Valid")
        assert_that(result.dead_letter | beam.Map(lambda d: d["reason"]), equal_to(["duplicate"]), label="Dead")
