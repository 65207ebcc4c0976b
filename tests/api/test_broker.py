"""api/broker.py, the API's Kafka feed: health round trip, backfill, decoding, new partitions (real Kafka)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from api.broker import KafkaFeed, StepGather, check_kafka
from api.state import Record
from kafka_client import KafkaUnavailableError
from schemas.codec import AvroCodec
from schemas.topics import TopicSettings

T0 = 1_338_000_000_000
PREDICTION = AvroCodec("prediction")


def test_check_kafka_on_a_port_nothing_listens_on_is_a_one_line_error() -> None:
    with pytest.raises(KafkaUnavailableError) as info:
        check_kafka("127.0.0.1:1", timeout_s=1.0)
    assert "\n" not in str(info.value) and str(info.value).startswith("Kafka at 127.0.0.1:1 is not reachable")


def _prediction(sensor: str, step: int) -> dict:
    event = T0 + step * 300_000
    return {"sensor_id": sensor, "event_time": event, "target_time": event + 900_000, "horizon_min": 15,
            "predicted_speed_mph": 50.0 + step, "lower_mph": 45.0, "upper_mph": 55.0, "coverage": 0.9,
            "congestion": "FREE_FLOW", "model_version": "v1", "processing_time": event}


class _Loop:
    """An event loop on a thread, collecting what the feed delivers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.batches: list[list[Record]] = []
        self.positions: list[tuple[str, int, int]] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def deliver(self, batch: list[Record], positions: list[tuple[str, int, int]]) -> None:
        """A batch and the (topic, partition, next offset) it brings each partition to."""
        assert threading.current_thread() is self.thread  # handed over with call_soon_threadsafe
        self.batches.append(batch)
        self.positions.extend(positions)

    def records(self) -> list[Record]:
        return [record for batch in list(self.batches) for record in batch]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[_Loop]:
    running = _Loop()
    yield running
    running.close()


def _wait(predicate: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.integration
def test_health_round_trip_lists_the_topics(kafka_bootstrap: str, fresh_topic) -> None:
    topic = fresh_topic("broker-health")
    info = check_kafka(kafka_bootstrap, timeout_s=10.0)
    assert info["brokers"] >= 1 and topic in info["topics"]


@pytest.mark.integration
def test_the_feed_backfills_decodes_and_skips_bad_records(kafka_bootstrap: str, fresh_topic, loop: _Loop) -> None:
    # Every topic the feed reads is the test's own: a shared one (traffic-incidents) may hold a user's records.
    topics = TopicSettings(predictions=fresh_topic("broker-pred", partitions=2), alerts=fresh_topic("broker-alert"),
                           aggregates=fresh_topic("broker-agg"), incidents=fresh_topic("broker-incidents"))
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for step in range(6):  # before the feed starts: only the last 2 per partition are re-read
        producer.produce(topics.predictions, PREDICTION.encode(_prediction("773869", step)), partition=step % 2)
    producer.flush(30)
    feed = KafkaFeed(kafka_bootstrap, topics, loop.deliver, loop.loop, consume_actuals=False,
                     backfill_per_partition=2, metadata_refresh_s=0.5, timeout_s=5.0)
    feed.start()
    try:
        assert _wait(lambda: len(loop.records()) >= 4), feed.last_error
        assert sorted(r["event_time"] for _, r, _ in loop.records()) == [T0 + s * 300_000 for s in range(2, 6)]
        assert {(kind, r["sensor_id"]) for kind, r, _ in loop.records()} == {("prediction", "773869")}
        assert all(received > 0 for _, _, received in loop.records())
        assert (topics.aggregates, 0) not in feed.assigned  # consume_actuals=False

        producer.produce(topics.predictions, b"not avro", partition=0)  # after start: live records
        producer.produce(topics.predictions, PREDICTION.encode(_prediction("773869", 9)), partition=1)
        producer.flush(30)
        assert _wait(lambda: feed.decode_errors == 1 and len(loop.records()) == 5), feed.last_error
        assert loop.records()[-1][1]["event_time"] == T0 + 9 * 300_000 and feed.consumed == 5
        assert feed.alive
    finally:
        feed.stop()
    assert not feed.alive


@pytest.mark.integration
def test_topics_created_later_are_picked_up(kafka_bootstrap: str, fresh_topic, loop: _Loop) -> None:
    late = f"broker-late-{uuid.uuid4().hex[:12]}"
    topics = TopicSettings(predictions=late, alerts=fresh_topic("broker-alert"), aggregates=fresh_topic("broker-agg"),
                           incidents=fresh_topic("broker-incident"))
    feed = KafkaFeed(kafka_bootstrap, topics, loop.deliver, loop.loop, metadata_refresh_s=0.5, timeout_s=5.0)
    feed.start()
    try:
        assert _wait(lambda: len(feed.assigned) == 3), feed.last_error  # alerts, aggregates, incidents: they exist
        assert not any(topic == late for topic, _ in feed.assigned)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        admin.create_topics([NewTopic(late, num_partitions=1, replication_factor=1)])[late].result(30)
        try:
            producer = Producer({"bootstrap.servers": kafka_bootstrap})
            assert _wait(lambda: (late, 0) in feed.assigned), feed.last_error
            producer.produce(late, PREDICTION.encode(_prediction("767541", 1)))
            producer.flush(30)
            assert _wait(lambda: any(r["sensor_id"] == "767541" for _, r, _ in loop.records())), feed.last_error
            producer.close()
        finally:
            admin.delete_topics([late])[late].result(30)
    finally:
        feed.stop()


def _step(step: int, sensors: tuple[str, ...], horizons: tuple[int, ...] = (15, 30, 60)) -> list[Record]:
    return [("prediction", {**_prediction(sensor, step), "horizon_min": h}, 0.0) for sensor in sensors
            for h in horizons]


def test_step_gather_waits_while_the_newest_step_is_smaller_than_the_largest_seen() -> None:
    steps = StepGather()
    steps.start()
    steps.add(_step(0, ("a", "b")))
    assert steps.size == 6 and not steps.waiting  # nothing known to be missing
    steps.start()
    steps.add(_step(1, ("a",)))
    assert steps.waiting  # 3 of 6
    steps.add(_step(1, ("b",)) + [("alert", {"sensor_id": "b"}, 0.0)])  # alerts are not counted
    assert not steps.waiting
    steps.start()
    steps.add(_step(2, ("a",)) + _step(3, ("a", "b")))  # the newest step decides
    assert not steps.waiting and steps.newest == T0 + 3 * 300_000
    steps.start()
    steps.add([("alert", {"sensor_id": "a"}, 0.0)])
    assert not steps.waiting  # no prediction in the delivery


def test_step_gather_starts_from_the_hint_and_forgets_old_steps() -> None:
    steps = StepGather(size_hint=6, keep=2)
    steps.start()
    steps.add(_step(0, ("a", "b"))[:4])
    assert steps.waiting  # 4 of the expected 6 before any step was seen whole
    for step in range(1, 5):
        steps.add(_step(step, ("a",)))
    assert sorted(steps.counts) == [T0 + 3 * 300_000, T0 + 4 * 300_000] and steps.size == 6


@pytest.mark.integration
def test_a_step_arriving_in_parts_is_delivered_as_one_batch(kafka_bootstrap: str, fresh_topic, loop: _Loop) -> None:
    topics = TopicSettings(predictions=fresh_topic("broker-steps", partitions=3), alerts=fresh_topic("broker-alert"),
                           aggregates=fresh_topic("broker-agg"), incidents=fresh_topic("broker-incidents"))
    sensors = ("773869", "767541", "767542", "717447")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    # a quiet gap of 1 s ends the gathering: the parts below come 0.2 s apart, robust on a busy machine
    feed = KafkaFeed(kafka_bootstrap, topics, loop.deliver, loop.loop, consume_actuals=False, backfill_per_partition=0,
                     metadata_refresh_s=0.5, timeout_s=5.0, step_gather_ms=2000, step_records=12)
    feed.start()
    try:
        assert _wait(lambda: (topics.predictions, 2) in feed.assigned), feed.last_error
        records = _step(1, sensors)
        for part in range(3):  # the step in three parts, one per partition, flushed apart
            for _, record, _ in records[part * 4:(part + 1) * 4]:
                producer.produce(topics.predictions, PREDICTION.encode(record), partition=part)
            producer.flush(30)
            time.sleep(0.2)
        assert _wait(lambda: len(loop.records()) >= 12), feed.last_error
        assert [len(batch) for batch in loop.batches] == [12]  # one delivery: one frame per client

        for _, record, _ in _step(2, sensors)[:8]:  # a step that stays short still goes out (after the quiet gap)
            producer.produce(topics.predictions, PREDICTION.encode(record), partition=0)
        producer.flush(30)
        assert _wait(lambda: len(loop.records()) == 20), feed.last_error
        assert [len(batch) for batch in loop.batches] == [12, 8]
    finally:
        feed.stop()
        producer.flush(10)
