"""Producer and consumer factories: a client built from :mod:`kafka_client.config`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, Producer

from kafka_client.config import consumer_config, producer_config

__all__ = ["make_consumer", "make_producer", "produce_at"]


def make_producer(bootstrap_servers: str, **settings: Any) -> Producer:
    """A producer with :func:`~kafka_client.config.producer_config` (``settings`` as its arguments)."""
    return Producer(producer_config(bootstrap_servers, **settings))


def make_consumer(
    bootstrap_servers: str, group_id: str | None = None, extra: Mapping[str, Any] | None = None
) -> Consumer:
    """An assign-only consumer with :func:`~kafka_client.config.consumer_config`."""
    return Consumer(consumer_config(bootstrap_servers, group_id, extra))


def produce_at(producer: Producer, topic: str, value: bytes | None, key: bytes | None, timestamp_ms: int) -> None:
    """One record stamped ``timestamp_ms``, its arguments by position (partition -1: the partitioner's; no
    per-record callback, so the producer's ``on_delivery``). The keyword form builds a dict for every record,
    which the job's sinks and the replay pay millions of times. Raises BufferError when the local queue is full."""
    producer.produce(topic, value, key, -1, None, None, timestamp_ms)
