"""ValidateEvents: every reason code, both outputs, coordinates, timestamps and counters."""

from __future__ import annotations

import io
import struct

import apache_beam as beam
import fastavro
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipelines.bad_records import VALIDATOR_REASON, BadRecordInjector, Reading
from schemas.batches import RawBatch, reading_columns
from schemas.codec import AvroCodec
from schemas.exceptions import SchemaError
from schemas.records import KafkaMessage
from transforms.exceptions import TransformConfigError
from transforms.validate import DEAD_LETTER_TAG, REASONS, STEP, VALID_TAG, ValidateEvents, ValidateEventsFn

SENSORS = ("773869", "767541", "767542")
T0_MS = 1_330_560_000_000  # 2012-03-01T00:00:00Z
NOW_MS = 1_795_000_000_000  # a fixed "wall clock" in 2026
RAW = AvroCodec("raw_reading")


def fixed_now() -> int:
    return NOW_MS


def reading(sensor: str = SENSORS[0], event_time: int = T0_MS, speed: float = 55.5) -> bytes:
    return RAW.encode({"sensor_id": sensor, "event_time": event_time, "speed_mph": speed})


def make_fn(**overrides) -> ValidateEventsFn:
    args = {
        "known_sensor_ids": frozenset(SENSORS),
        "max_future_s": 3600,
        "min_event_time_ms": 946_684_800_000,
        "max_payload_bytes": 1024,
        "max_speed_mph": 120.0,
        "now_ms_fn": fixed_now,
    }
    args.update(overrides)
    fn = ValidateEventsFn(**args)
    fn.setup()
    return fn


def run_one(fn: ValidateEventsFn, element) -> list:
    return list(fn.process(element))


def other_schema_record() -> bytes:
    event = {"sensor_id": SENSORS[0], "event_time": T0_MS, "speed_mph": 50.0, "validated_at": T0_MS}
    return AvroCodec("traffic_event").encode(event)


def wrong_types_under_raw_id() -> bytes:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "X",
            "fields": [{"name": "sensor_id", "type": "long"}, {"name": "t", "type": "string"}],
        }
    )
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, {"sensor_id": 773869, "t": "yesterday"})
    return struct.pack(">bI", 0, RAW.schema_id) + body.getvalue()


CASES = [
    ("wrong_type", "a string, not bytes"),
    ("wrong_type", 12345),
    ("empty", None),
    ("empty", b""),
    ("oversized", reading() + b"\x00" * 2000),
    ("undecodable", b"\x00\x00"),
    ("undecodable", b"\x01" + reading()[1:]),
    ("undecodable", reading()[:-3]),
    ("undecodable", reading() + b"\x07"),
    ("undecodable", wrong_types_under_raw_id()),
    ("wrong_schema", other_schema_record()),
    ("wrong_schema", b"\x00\x00\x00\x03\xe7" + reading()[5:]),
    ("unknown_sensor", reading(sensor="999999")),
    ("unknown_sensor", reading(sensor="")),
    ("ancient_timestamp", reading(event_time=0)),
    ("undecodable", reading(event_time=-(2**63))),  # beyond datetime: the codec cannot decode it
    ("future_timestamp", reading(event_time=NOW_MS + 3600 * 1000 + 1)),
    ("undecodable", reading(event_time=2**63 - 1)),
    ("future_timestamp", reading(event_time=253_402_300_799_000)),  # 9999-12-31
    ("not_finite", reading(speed=float("nan"))),
    ("not_finite", reading(speed=float("inf"))),
    ("not_finite", reading(speed=float("-inf"))),
    ("negative_speed", reading(speed=-0.5)),
    ("absurd_speed", reading(speed=120.01)),
]


@pytest.mark.parametrize(("reason", "element"), CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_each_bad_record_gets_its_reason_and_keeps_its_bytes(reason, element):
    outputs = run_one(make_fn(), element)
    assert len(outputs) == 1
    (out,) = outputs
    assert isinstance(out, TaggedOutput) and out.tag == DEAD_LETTER_TAG
    letter = out.value
    assert letter["reason"] == reason, letter["error"]
    assert reason in REASONS
    assert letter["step"] == STEP
    assert letter["failed_at"] == NOW_MS
    assert "\n" not in letter["error"] and letter["error"]
    if isinstance(element, bytes):
        assert letter["payload"] == element
    elif element is None:
        assert letter["payload"] == b""
    else:
        assert letter["payload"] == repr(element).encode()
    AvroCodec("dead_letter").encode(letter)  # every dead letter fits dead_letter.avsc


def test_boundaries_that_are_still_valid():
    fn = make_fn()
    for element in (
        reading(speed=120.0),
        reading(event_time=946_684_800_000),
        reading(event_time=NOW_MS + 3600 * 1000),
        reading(speed=0.0),
    ):
        (out,) = run_one(fn, element)
        assert isinstance(out, TimestampedValue), out


def test_valid_record_is_a_timestamped_traffic_event():
    (out,) = run_one(make_fn(), reading(sensor=SENSORS[1], event_time=T0_MS + 300_000, speed=61.25))
    assert isinstance(out, TimestampedValue)
    assert out.timestamp.micros == (T0_MS + 300_000) * 1000
    assert out.value.records() == [{
        "sensor_id": SENSORS[1],
        "event_time": T0_MS + 300_000,
        "speed_mph": 61.25,
        "validated_at": NOW_MS,
    }]
    AvroCodec("traffic_event").encode(out.value.records()[0])


def test_zero_speed_means_missing():
    (out,) = run_one(make_fn(), reading(speed=0.0))
    assert out.value.records()[0]["speed_mph"] is None


def _verdicts(outputs: list) -> tuple[list[dict], list[dict]]:
    events = [r for o in outputs if isinstance(o, TimestampedValue) for r in o.value.records()]
    letters = [o.value for o in outputs if isinstance(o, TaggedOutput)]
    return events, letters


def test_a_batch_gets_the_verdicts_of_its_records_one_by_one():
    good = [reading(SENSORS[i % 3], T0_MS + 300_000 * (i % 5), float(i % 90)) for i in range(40)]
    values = [v for pair in zip(good, [element for _, element in CASES] + [None] * 16, strict=True) for v in pair]
    batch = RawBatch(tuple(values), tuple(f"k{i}".encode() for i in range(len(values))), "traffic-raw",
                     np.arange(len(values)) % 3, np.arange(len(values)) + 100)
    fn = make_fn()
    assert fn._wire is not None  # the numpy path is the one under test
    outputs = run_one(fn, batch)
    (stamped,) = [o for o in outputs if isinstance(o, TimestampedValue)]  # one batch of valid events
    assert stamped.timestamp.micros == T0_MS * 1000  # the earliest event time
    events, letters = _verdicts(outputs)
    one_by_one = [run_one(make_fn(), KafkaMessage(batch.keys[i], v, "traffic-raw", int(batch.partitions[i]),
                                                   int(batch.offsets[i]), 0)) for i, v in enumerate(values)]
    expected_events, expected_letters = _verdicts([o for out in one_by_one for o in out])
    assert events == expected_events and len(events) == 40  # every CASES record is bad, every good one valid
    assert [(d["reason"], d["payload"], d["source_offset"], d["key"]) for d in letters] == [
        (d["reason"], d["payload"], d["source_offset"], d["key"]) for d in expected_letters]
    assert len(events) + len(letters) == len(values)


def test_a_raw_reading_batch_gets_the_verdicts_of_its_avro_values():
    """A history file's readings in columns: the same events and dead letters as their Avro values, one by one."""
    rows = [(SENSORS[i % 3], T0_MS + 300_000 * (i % 5), float(i % 90)) for i in range(12)]
    rows += [("999999", T0_MS, 50.0),  # unknown sensor
             (SENSORS[0], T0_MS, -3.0), (SENSORS[1], T0_MS, 500.0), (SENSORS[2], T0_MS, float("nan")),
             (SENSORS[0], NOW_MS + 7_200_000, 50.0), (SENSORS[1], 1_000, 50.0),  # far future, before 2000
             (SENSORS[2], T0_MS, 0.0)]  # zero: missing, still valid
    sensor, when, speed = zip(*rows, strict=True)
    outputs = run_one(make_fn(), reading_columns(list(sensor), list(when), list(speed)))
    events, letters = _verdicts(outputs)
    one_by_one = [run_one(make_fn(), reading(*row)) for row in rows]
    expected_events, expected_letters = _verdicts([o for out in one_by_one for o in out])
    assert events == expected_events and len(events) == 13
    assert [(d["reason"], d["payload"]) for d in letters] == [(d["reason"], d["payload"]) for d in expected_letters]
    assert len(letters) == 6 and all(d["payload"] == reading(*rows[12 + i]) for i, d in enumerate(letters))


def test_replayed_2012_data_is_not_future_but_far_future_is():
    fn = make_fn(now_ms_fn=lambda: T0_MS)  # as if validated in 2012: 2026 readings are in the future
    (out,) = run_one(fn, reading(event_time=NOW_MS))
    assert out.value["reason"] == "future_timestamp"


def test_kafka_coordinates_and_key_go_into_the_dead_letter():
    message = KafkaMessage(b"773869", b"garbage!", "traffic-raw", 3, 1234, T0_MS)
    (out,) = run_one(make_fn(), message)
    letter = out.value
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == ("traffic-raw", 3, 1234)
    assert letter["key"] == b"773869" and letter["payload"] == b"garbage!"


def test_hostile_kafka_message_fields_do_not_raise():
    message = KafkaMessage(object(), 3.5, None, "x", -1, None)  # type: ignore[arg-type]
    (out,) = run_one(make_fn(), message)
    assert out.value["reason"] == "wrong_type"
    assert out.value["key"] is None and out.value["source_partition"] is None


def test_key_value_pairs_and_plain_tuples_are_accepted():
    (pair,) = run_one(make_fn(), (b"773869", reading()))
    assert isinstance(pair, TimestampedValue)
    (plain,) = run_one(make_fn(), ("773869", b"junk", "traffic-raw", 1, 99, 0))
    assert plain.value["key"] == b"773869" and plain.value["source_offset"] == 99
    (odd,) = run_one(make_fn(), (1, 2, 3))
    assert odd.value["reason"] == "wrong_type"


def test_a_failing_clock_does_not_lose_the_record():
    def broken_clock() -> int:
        raise RuntimeError("no clock")

    (out,) = run_one(make_fn(now_ms_fn=broken_clock), reading())
    assert isinstance(out, TimestampedValue)


@pytest.mark.parametrize("kind", [k for k, reason in VALIDATOR_REASON.items() if reason is not None])
def test_the_replay_bad_record_catalogue_gets_the_documented_reasons(kind):
    injector = BadRecordInjector(fraction=1.0, codec=RAW, known_sensors=SENSORS, seed=7, kinds=(kind,))
    fn = make_fn(now_ms_fn=None)  # real wall clock: the catalogue's future records are relative to it
    good = Reading(SENSORS[0], T0_MS, 57.0)
    for _ in range(20):
        bad = injector.make(good, RAW.encode({"sensor_id": good.sensor_id, "event_time": T0_MS, "speed_mph": 57.0}))
        (out,) = run_one(fn, bad.value)
        assert out.value["reason"] == VALIDATOR_REASON[kind]
        assert out.value["payload"] == bad.value


def test_a_registry_url_makes_the_codec_use_the_registry():
    fn = ValidateEventsFn(frozenset(SENSORS), 3600, 0, 1024, 120.0, fixed_now, registry_url="http://127.0.0.1:9")
    with pytest.raises(SchemaError, match="not reachable"):
        fn.setup()  # a registry that is down is a deployment error, reported once at setup


def test_constructor_rejects_unusable_parameters():
    with pytest.raises(TransformConfigError):
        ValidateEvents([])
    with pytest.raises(TransformConfigError):
        ValidateEvents(SENSORS, max_payload_bytes=0)


def _event_time_of(element, timestamp=beam.DoFn.TimestampParam):
    for event in element.records():
        yield event["sensor_id"], event["event_time"], timestamp.micros // 1000


def test_pipeline_splits_valid_and_dead_letters_and_counts_add_up():
    messages = [
        KafkaMessage(b"773869", reading(SENSORS[0], T0_MS + 600_000, 50.0), "traffic-raw", 0, 10, 0),
        KafkaMessage(b"767541", reading(SENSORS[1], T0_MS, 0.0), "traffic-raw", 1, 11, 0),
        KafkaMessage(b"767542", reading(SENSORS[2], T0_MS + 300_000, 70.0), "traffic-raw", 2, 12, 0),
        KafkaMessage(None, b"\x00\x01", "traffic-raw", 0, 13, 0),
        KafkaMessage(b"x", reading("nope"), "traffic-raw", 1, 14, 0),
        KafkaMessage(b"773869", reading(speed=-3.0), "traffic-raw", 2, 15, 0),
    ]
    elements = [*messages, reading(SENSORS[0], T0_MS, 40.0), None]
    p = test_pipeline.TestPipeline()
    result = p | beam.Create(elements) | ValidateEvents(SENSORS, now_ms_fn=fixed_now)
    assert_that(
        result[VALID_TAG] | "EventTimes" >> beam.FlatMap(_event_time_of),
        equal_to(
            [
                (SENSORS[0], T0_MS + 600_000, T0_MS + 600_000),
                (SENSORS[1], T0_MS, T0_MS),
                (SENSORS[2], T0_MS + 300_000, T0_MS + 300_000),
                (SENSORS[0], T0_MS, T0_MS),
            ]
        ),
        label="CheckValid",
    )
    assert_that(
        result.dead_letter | "Reasons" >> beam.Map(lambda d: (d["reason"], d["source_offset"])),
        equal_to([("undecodable", 13), ("unknown_sensor", 14), ("negative_speed", 15), ("empty", None)]),
        label="CheckDeadLetters",
    )
    outcome = p.run()
    outcome.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in outcome.metrics().query(MetricsFilter().with_namespace(STEP))["counters"]
    }
    assert counters["valid"] == 4
    assert counters["dead_letter_undecodable"] == 1 and counters["dead_letter_empty"] == 1
    dead = sum(v for k, v in counters.items() if k.startswith("dead_letter_"))
    assert counters["valid"] + dead == len(elements)
