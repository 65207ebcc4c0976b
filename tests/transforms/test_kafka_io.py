"""ReadFromKafka / WriteToKafka: bounded offset ranges and arguments as units, then on the real broker (direct preset).

Runner coverage (Prism, Flink through the job server, unbounded reads) is in
tests/runners/test_pipelines_on_platform.py; the unbounded topic reader's units in
tests/transforms/test_kafka_topic_reader.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from confluent_kafka import Consumer, Producer

from config.settings import PlatformSettings
from runners.presets import pipeline_options
from transforms.kafka_io import (
    KafkaIOError,
    PartitionRead,
    ReadFromKafka,
    WriteToKafka,
    _OffsetRanges,
)


@pytest.fixture
def direct_options(platform_settings: PlatformSettings) -> PipelineOptions:
    """The ``direct`` preset: Beam 2.77's DirectRunner, pointed at the local Prism (no download attempt)."""
    return pipeline_options("direct", False, [], platform_settings)


BASE_MS = int(time.time() * 1000) - 3_600_000  # recent: the broker's time retention must not delete them


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int]], partition: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    try:
        for key, value, ts_ms in records:
            extra = {} if partition is None else {"partition": partition}
            producer.produce(topic, key=key, value=value, timestamp=ts_ms, **extra)
        assert producer.flush(30) == 0
    finally:
        producer.close()


def _consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    messages, deadline = [], time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        messages += [m for m in consumer.consume(100, timeout=1.0) if m.error() is None]  # anything extra
    finally:
        consumer.close()
    return messages


# --- units ---------------------------------------------------------------------------------------------


def test_bounded_restriction_splits_and_sizes() -> None:
    provider = _OffsetRanges()
    element = PartitionRead("t", 1, 10, 30)
    restriction = provider.initial_restriction(element)
    assert provider.restriction_size(element, restriction) == 20
    tracker = provider.create_tracker(restriction)
    assert tracker.is_bounded()
    assert tracker.try_claim(10)
    primary, residual = tracker.try_split(0.5)
    assert primary.stop == residual.start and residual.stop == 30


def test_boundedness_follows_the_bounded_flag() -> None:
    # An unbounded PCollection would switch the Flink job server to streaming mode for a batch job.
    p = beam.Pipeline()
    assert (p | "Bounded" >> ReadFromKafka("127.0.0.1:1", "t", bounded=True)).is_bounded
    assert not (p | "Unbounded" >> ReadFromKafka("127.0.0.1:1", "t")).is_bounded


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": "newest"}, "start must be one of earliest, latest, committed"),
        ({"max_records": 5}, "max_records needs bounded=True"),
        ({"bounded": True, "stop_at_end": False}, "needs max_records"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(KafkaIOError, match=message):
        ReadFromKafka("127.0.0.1:1", "t", **kwargs)


# --- on the real broker ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_bounded_read_emits_every_record_with_its_kafka_coordinates_and_timestamp(
    direct_options: PipelineOptions, kafka_bootstrap: str, fresh_topic: Callable[..., str]
) -> None:
    topic = fresh_topic("kio-read", partitions=3)
    for p in range(3):
        _produce(kafka_bootstrap, topic, [(f"k{p}".encode(), f"{p}-{i}".encode(), BASE_MS + i) for i in range(4)], p)
    expected = [(p, i, f"{p}-{i}".encode(), BASE_MS + i, float(BASE_MS + i) / 1000) for p in range(3) for i in range(4)]
    with TestPipeline(options=direct_options) as p:
        got = (
            p
            | "Read" >> ReadFromKafka(kafka_bootstrap, topic, bounded=True)
            | "Coordinates"
            >> beam.Map(
                lambda m, ts=beam.DoFn.TimestampParam: (m.partition, m.offset, m.value, m.timestamp_ms, float(ts))
            )
        )
        assert_that(got, equal_to(expected))


@pytest.mark.integration
def test_max_records_takes_the_first_records_by_partition_and_offset(
    direct_options: PipelineOptions, kafka_bootstrap: str, fresh_topic: Callable[..., str]
) -> None:
    topic = fresh_topic("kio-max", partitions=2)
    for p in range(2):
        _produce(kafka_bootstrap, topic, [(b"k", f"{p}-{i}".encode(), BASE_MS) for i in range(5)], p)
    with TestPipeline(options=direct_options) as p:
        got = p | ReadFromKafka(kafka_bootstrap, topic, bounded=True, max_records=7) | beam.Map(lambda m: m.value)
        assert_that(got, equal_to([f"0-{i}".encode() for i in range(5)] + [b"1-0", b"1-1"]))


@pytest.mark.integration
def test_start_latest_and_start_at_a_timestamp(
    direct_options: PipelineOptions, kafka_bootstrap: str, fresh_topic: Callable[..., str]) -> None:
    topic = fresh_topic("kio-start")
    _produce(kafka_bootstrap, topic, [(b"k", str(i).encode(), BASE_MS + i * 1000) for i in range(6)])
    with TestPipeline(options=direct_options) as p:
        latest = p | "Latest" >> ReadFromKafka(kafka_bootstrap, topic, start="latest", bounded=True)
        assert_that(latest, equal_to([]), label="NothingAfterLatest")
        since = (
            p
            | "Since" >> ReadFromKafka(kafka_bootstrap, topic, start=BASE_MS + 4000, bounded=True)
            | "Values" >> beam.Map(lambda m: m.value)
        )
        assert_that(since, equal_to([b"4", b"5"]), label="FromTimestamp")


@pytest.mark.integration
def test_bounded_read_can_wait_for_records_produced_after_it_started(
    direct_options: PipelineOptions, kafka_bootstrap: str, fresh_topic: Callable[..., str]
) -> None:
    # start="latest": the read begins at the end offsets it finds when it starts, so every record it returns
    # was produced after it started. A producer keeps adding records until the pipeline is done.
    topic = fresh_topic("kio-wait", partitions=2)
    _produce(kafka_bootstrap, topic, [(b"k", b"early", BASE_MS)] * 3)
    done = threading.Event()

    def keep_producing() -> None:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
        try:
            i = 0
            while not done.is_set():
                producer.produce(topic, key=b"k", value=b"late-%d" % i, timestamp=BASE_MS, partition=i % 2)
                producer.flush(30)
                i += 1
                done.wait(0.3)
        finally:
            producer.close()

    def five_late_records(values: list[bytes]) -> None:
        assert len(values) == 5 and len(set(values)) == 5, values
        assert all(v.startswith(b"late-") for v in values), values  # none from before the read started

    later = threading.Thread(target=keep_producing, daemon=True)
    later.start()
    try:
        with TestPipeline(options=direct_options) as p:
            got = (
                p
                | ReadFromKafka(kafka_bootstrap, topic, start="latest", bounded=True, stop_at_end=False,
                                max_records=5)
                | beam.Map(lambda m: m.value)
            )
            assert_that(got, five_late_records)
    finally:
        done.set()
        later.join(60)


@pytest.mark.integration
def test_missing_topic_fails_with_its_name(
    direct_options: PipelineOptions, kafka_bootstrap: str) -> None:
    with pytest.raises(Exception, match="topic 'no-such-topic-kio' does not exist"):
        with TestPipeline(options=direct_options) as p:
            _ = p | ReadFromKafka(kafka_bootstrap, "no-such-topic-kio", bounded=True)


@pytest.mark.integration
def test_write_sets_key_value_and_event_timestamp(
    direct_options: PipelineOptions, kafka_bootstrap: str, fresh_topic: Callable[..., str]) -> None:
    topic = fresh_topic("kio-write", partitions=2)
    rows = [(f"s{i % 3}", f"v{i}".encode(), BASE_MS + i * 1000) for i in range(9)]
    with TestPipeline(options=direct_options) as p:
        _ = (
            p
            | beam.Create(rows)
            | "EventTime" >> beam.Map(lambda r: beam.window.TimestampedValue(r, r[2] / 1000))
            | WriteToKafka(kafka_bootstrap, topic, key_fn=lambda r: r[0], value_fn=lambda r: r[1])
        )
    got = _consume_all(kafka_bootstrap, topic, len(rows))
    assert sorted((m.key().decode(), m.value(), m.timestamp()[1]) for m in got) == sorted(rows)
    by_key = {}
    for m in got:
        by_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(parts) == 1 for parts in by_key.values())  # one key, one partition


@pytest.mark.integration
def test_round_trip_of_kafka_messages(
    direct_options: PipelineOptions, kafka_bootstrap: str, fresh_topic: Callable[..., str]) -> None:
    source, sink = fresh_topic("kio-src", partitions=2), fresh_topic("kio-dst", partitions=2)
    _produce(kafka_bootstrap, source, [(str(i % 4).encode(), str(i).encode(), BASE_MS + i) for i in range(40)])
    with TestPipeline(options=direct_options) as p:
        _ = (
            p
            | ReadFromKafka(kafka_bootstrap, source, bounded=True)
            | WriteToKafka(kafka_bootstrap, sink, key_fn=lambda m: m.key, value_fn=lambda m: m.value + b"!")
        )
    got = _consume_all(kafka_bootstrap, sink, 40)
    assert sorted(int(m.value()[:-1]) for m in got) == list(range(40))
    assert all(m.key() == str(int(m.value()[:-1]) % 4).encode() for m in got)  # keys carried over


@pytest.mark.integration
def test_undeliverable_records_fail_the_bundle(
    direct_options: PipelineOptions, kafka_bootstrap: str, fresh_topic: Callable[..., str]) -> None:
    topic = fresh_topic("kio-big")
    too_big = b"x" * 3_000_000  # the broker's default limit is ~1 MB; the client is told to allow it
    with pytest.raises(Exception, match=r"1 record\(s\) to kio-big-\w+ were not delivered: .*too large"):
        with TestPipeline(options=direct_options) as p:
            _ = (
                p
                | beam.Create([too_big])
                | WriteToKafka(
                    kafka_bootstrap, topic, producer_config={"message.max.bytes": 4_000_000, "compression.type": "none"}
                )
            )


@pytest.mark.integration
def test_non_bytes_values_are_rejected(
    direct_options: PipelineOptions, kafka_bootstrap: str, fresh_topic: Callable[..., str]) -> None:
    topic = fresh_topic("kio-type")
    with pytest.raises(Exception, match="needs bytes values, got dict"):
        with TestPipeline(options=direct_options) as p:
            _ = p | beam.Create([{"sensor_id": "1"}]) | WriteToKafka(kafka_bootstrap, topic)
