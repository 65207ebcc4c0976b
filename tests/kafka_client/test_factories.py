"""The client factories on the real broker: ``produce_at`` stamps the record and keeps the producer's callback."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, TopicPartition

from kafka_client import make_consumer, make_producer, produce_at

STAMP_MS = 1_338_508_800_000  # 2012-06-01, far from the append time


@pytest.mark.integration
def test_produce_at_stamps_the_record_and_reports_failures_to_on_delivery(
    kafka_bootstrap: str, fresh_topic: Callable[..., str]
) -> None:
    topic = fresh_topic("produce-at", partitions=1)
    failures: list[KafkaError] = []
    producer = make_producer(kafka_bootstrap, **{
        "delivery.report.only.error": True, "on_delivery": lambda err, _msg: failures.append(err),
        "message.max.bytes": 4_000_000, "compression.type": "none",  # the broker's limit is ~1 MB
    })
    produce_at(producer, topic, b"value", b"key", STAMP_MS)
    assert producer.flush(30) == 0 and failures == []
    consumer = make_consumer(kafka_bootstrap)
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        message = consumer.poll(30)
        assert message is not None and message.error() is None
        assert (message.key(), message.value(), message.timestamp()[1]) == (b"key", b"value", STAMP_MS)
    finally:
        consumer.close()
    produce_at(producer, topic, b"x" * 3_000_000, b"key", STAMP_MS)  # the broker refuses it after it is sent
    producer.flush(30)
    assert [err.code() for err in failures] == [KafkaError.MSG_SIZE_TOO_LARGE]
