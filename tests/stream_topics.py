"""The streaming job's topics with no job behind them, for the stall checks' tests: raw input and job output
written by hand (tests/runners/test_platform_stream_watch.py, tests/api/test_stream_watch.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from kafka_client import make_producer
from schemas.codec import AvroCodec
from schemas.topics import TopicSettings

__all__ = ["SENSORS", "STEP_MS", "T0_MS", "events_of", "make_stream_topics", "predictions_at", "produce",
           "raw_steps"]

T0_MS = 1_330_560_000_000  # 2012-03-01 00:00 UTC
STEP_MS = 300_000
SENSORS = [f"7{i:05d}" for i in range(20)]


def make_stream_topics(fresh_topic: Callable[..., str]) -> TopicSettings:
    """Fresh raw, events, dead-letter and predictions topics (2 partitions each) from the ``fresh_topic`` factory."""
    names = {kind: fresh_topic(f"watch-{kind}", partitions=2) for kind in ("raw", "events", "dlq", "predictions")}
    return TopicSettings(raw=names["raw"], events=names["events"], dead_letters=names["dlq"],
                         predictions=names["predictions"])


def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes, int]]) -> None:
    """(key, value, timestamp ms) records, delivered before it returns; the producer is closed."""
    producer = make_producer(bootstrap)
    try:
        for key, value, timestamp_ms in records:
            producer.produce(topic, value, key.encode(), timestamp=timestamp_ms)
        assert producer.flush(30) == 0, "records were not delivered"
    finally:
        producer.close()


def raw_steps(steps: range) -> list[tuple[str, bytes, int]]:
    """One reading per sensor and step; the value does not matter to the watch (only its timestamp)."""
    return [(sensor, b'{"speed": 60}', T0_MS + step * STEP_MS) for step in steps for sensor in SENSORS]


def events_of(steps: range) -> list[tuple[str, bytes, int]]:
    """The valid events the job makes of :func:`raw_steps` (Avro; Kafka timestamp earlier, as in a batch)."""
    codec = AvroCodec("traffic_event")
    now_ms = int(time.time() * 1000)
    return [(sensor, codec.encode({"sensor_id": sensor, "event_time": T0_MS + step * STEP_MS, "speed_mph": 60.0,
                                   "validated_at": now_ms}), T0_MS) for step in steps for sensor in SENSORS]


def predictions_at(step: int) -> list[tuple[str, bytes, int]]:
    """One 15-minute prediction per sensor made from ``step`` (Avro, as the job publishes them)."""
    codec = AvroCodec("prediction")
    event_ms = T0_MS + step * STEP_MS
    return [(sensor, codec.encode({
        "sensor_id": sensor, "event_time": event_ms, "target_time": event_ms + 15 * 60_000, "horizon_min": 15,
        "predicted_speed_mph": 61.0, "lower_mph": 55.0, "upper_mph": 66.0, "coverage": 0.9,
        "congestion": "FREE_FLOW", "model_version": "test", "processing_time": int(time.time() * 1000)}), event_ms)
        for sensor in SENSORS]
