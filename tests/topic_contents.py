"""Reading what a test's Kafka topic holds: every message, or just how many there are."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message, TopicPartition

__all__ = ["read_all", "record_count"]


def read_all(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Message]:
    """Every message now in ``topic`` (all partitions, from offset 0), read by a fresh consumer group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while sum(ends.values()) > len(messages) and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
        return messages
    finally:
        consumer.close()


def record_count(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds (the sum of its partitions' high offsets; topics here start at 0)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "count"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()
