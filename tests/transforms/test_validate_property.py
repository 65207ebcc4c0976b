"""Property tests: ValidateEvents never raises and never loses a record (>= 10,000 generated inputs).

Batches (RawBatch) mixing valid and hostile records get exactly the verdicts
of their records validated one by one: the numpy path and the per-record path
apply the same rules.

The bulk of the examples call the DoFn's ``process`` in-process (fast); one
test runs a few hundred generated inputs through a real pipeline.
"""

from __future__ import annotations

import io
import math
import random
import struct

import apache_beam as beam
import fastavro
import numpy as np
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.batches import RawBatch
from schemas.codec import AvroCodec, load_schema
from schemas.records import KafkaMessage
from transforms.validate import DEAD_LETTER_TAG, REASONS, ValidateEvents, ValidateEventsFn

SENSORS = frozenset({"773869", "767541", "767542", "717447"})
NOW_MS = 1_795_000_000_000
RAW = AvroCodec("raw_reading")
RAW_SCHEMA = load_schema("raw_reading")
FN = ValidateEventsFn(SENSORS, 3600, 946_684_800_000, 1024, 120.0, lambda: NOW_MS)
FN.setup()
FAST = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)

sensor_ids = st.one_of(st.sampled_from(sorted(SENSORS)), st.text(max_size=12))
event_times = st.one_of(
    st.integers(min_value=946_684_800_000 - 10**6, max_value=NOW_MS + 4_000_000),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
speeds = st.one_of(
    st.floats(min_value=-5.0, max_value=130.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just(0.0),
)


def _raw_body(sensor: str, event_time: int, speed: float) -> bytes:
    buffer = io.BytesIO()
    buffer.write(struct.pack(">bI", 0, RAW.schema_id))
    fastavro.schemaless_writer(buffer, RAW_SCHEMA, {"sensor_id": sensor, "event_time": event_time, "speed_mph": speed})
    return buffer.getvalue()


near_valid = st.builds(_raw_body, sensor_ids, event_times, speeds)
headers = st.builds(
    lambda magic, schema_id, body: struct.pack(">BI", magic, schema_id) + body,
    st.sampled_from([0, 0, 0, 1, 255]),
    st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1)),
    st.binary(max_size=64),
)


def _mutate(data: bytes, position: int, value: int, cut: int) -> bytes:
    if not data:
        return data
    flipped = bytearray(data)
    flipped[position % len(flipped)] = value
    return bytes(flipped[: max(0, len(flipped) - cut)])


mutated = st.builds(_mutate, near_valid, st.integers(0, 200), st.integers(0, 255), st.integers(0, 3))
payloads = st.one_of(
    near_valid,
    headers,
    mutated,
    st.binary(max_size=80),
    st.builds(lambda n, chunk: chunk * n, st.integers(1000, 3000), st.binary(min_size=1, max_size=3)),
    st.none(),
)
kafka_messages = st.builds(
    KafkaMessage,
    st.one_of(st.none(), st.binary(max_size=10), st.text(max_size=5)),
    payloads,
    st.one_of(st.text(max_size=10), st.none()),
    st.one_of(st.integers(-5, 100), st.none()),
    st.one_of(st.integers(-1, 2**40), st.none()),
    st.integers(-(2**40), 2**42),
)
others = st.one_of(
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.tuples(st.one_of(st.none(), st.binary(max_size=4), st.integers()), payloads),
    st.tuples(st.integers(), st.integers(), st.integers()),
)
elements = st.one_of(payloads, kafka_messages, others)


def check_one_output(element) -> None:
    outputs = list(FN.process(element))
    assert len(outputs) == 1, outputs
    (out,) = outputs
    if isinstance(element, tuple) and len(element) == 2:
        value = element[1]
    else:
        value = element.value if isinstance(element, KafkaMessage) else element
    if isinstance(out, TimestampedValue):
        (event,) = out.value.records()
        assert isinstance(value, bytes)
        assert event["sensor_id"] in SENSORS
        assert out.timestamp.micros == event["event_time"] * 1000
        assert 946_684_800_000 <= event["event_time"] <= NOW_MS + 3_600_000
        speed = event["speed_mph"]
        assert speed is None or (math.isfinite(speed) and 0 < speed <= 120.0)
        return
    assert isinstance(out, TaggedOutput) and out.tag == DEAD_LETTER_TAG
    letter = out.value
    assert letter["reason"] in REASONS
    assert "\n" not in letter["error"]
    if isinstance(value, bytes):
        assert letter["payload"] == value
    elif value is None:
        assert letter["payload"] == b""
    else:
        assert isinstance(letter["payload"], bytes) and letter["payload"]


@settings(FAST, max_examples=4000)
@given(near_valid)
def test_near_valid_records_always_yield_exactly_one_output(data):
    check_one_output(data)


@settings(FAST, max_examples=3000)
@given(payloads)
def test_arbitrary_payloads_always_yield_exactly_one_output(data):
    check_one_output(data)


@settings(FAST, max_examples=3000)
@given(elements)
def test_arbitrary_elements_and_kafka_messages_always_yield_exactly_one_output(element):
    check_one_output(element)


def _verdicts(outputs: list) -> tuple[list[dict], list[tuple]]:
    events = [r for o in outputs if isinstance(o, TimestampedValue) for r in o.value.records()]
    letters = [(o.value["reason"], o.value["payload"], o.value["source_offset"]) for o in outputs
               if isinstance(o, TaggedOutput)]
    return events, letters


@settings(FAST, max_examples=400)
@given(st.lists(st.one_of(near_valid, payloads, st.integers(), st.text(max_size=5)), min_size=1, max_size=60))
def test_batches_with_hostile_records_lose_nothing_and_match_record_by_record(values):
    batch = RawBatch(tuple(values), offsets=np.arange(len(values)))
    events, letters = _verdicts(list(FN.process(batch)))
    assert len(events) + len(letters) == len(values)
    one_by_one = [o for i, v in enumerate(values)
                  for o in FN.process(KafkaMessage(None, v, None, None, i, 0))]  # type: ignore[arg-type]
    assert (events, letters) == _verdicts(one_by_one)


def generated_batch(n: int, seed: int) -> list:
    """``n`` mixed inputs from a seeded generator (hypothesis cannot draw lists this large cheaply)."""
    rng = random.Random(seed)
    sensors = [*sorted(SENSORS), "", "999999", "77386"]
    batch: list = []
    for i in range(n):
        kind = i % 6
        if kind in (0, 1):
            speed = rng.choice([0.0, rng.uniform(-10, 140), float("nan"), float("inf"), rng.uniform(0, 80)])
            event_time = rng.choice([rng.randint(946_684_800_000, NOW_MS), rng.randint(-(2**40), 2**45)])
            batch.append(_raw_body(rng.choice(sensors), event_time, speed))
        elif kind == 2:
            batch.append(rng.randbytes(rng.randint(0, 40)))
        elif kind == 3:
            batch.append(_mutate(_raw_body(rng.choice(sensors), NOW_MS - 10**9, 50.0), rng.randint(0, 30), 255, 0))
        elif kind == 4:
            value = rng.choice([None, b"", rng.randbytes(2000), _raw_body(min(SENSORS), NOW_MS, 42.0)])
            batch.append(KafkaMessage(rng.randbytes(4), value, "traffic-raw", rng.randint(0, 3), i, NOW_MS))
        else:
            batch.append(rng.choice([None, 17, "text", 3.5, {"a": 1}]))
    return batch


def test_pipeline_never_loses_a_generated_record():
    batch = generated_batch(300, seed=11)
    p = test_pipeline.TestPipeline()
    result = (
        p
        | beam.Create(list(range(len(batch))))
        | "Lookup" >> beam.Map(lambda i, items=tuple(batch): items[i])
        | ValidateEvents(SENSORS, now_ms_fn=lambda: NOW_MS)
    )
    expected_valid = sum(isinstance(out, TimestampedValue) for e in batch for out in FN.process(e))
    assert 0 < expected_valid < len(batch)
    valid_count = (result.valid | "Records" >> beam.FlatMap(lambda b: b.records())
                   | "CountValid" >> beam.combiners.Count.Globally())
    dead_count = result.dead_letter | "CountDead" >> beam.combiners.Count.Globally()
    assert_that(valid_count, equal_to([expected_valid]), label="CheckValidCount")
    assert_that(dead_count, equal_to([len(batch) - expected_valid]), label="CheckDeadCount")
    p.run().wait_until_finish()
