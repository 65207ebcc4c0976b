"""One :class:`~kafka_client.stream_progress.StreamSample` read from the broker: the streaming job's topics' ends.

End offsets of the raw, events, dead-letter and predictions topics, the
timestamp of the newest raw record (producers stamp event times) and the
``event_time`` of the newest valid event and prediction (the last record of
each partition, decoded). One short-lived assign-only consumer per sample, always closed; it
joins no group and commits nothing, so it never disturbs the job's reader.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, TopicPartition

from kafka_client.factories import make_consumer
from kafka_client.reachability import check_kafka
from kafka_client.stream_progress import StreamSample
from schemas.codec import AvroCodec
from schemas.exceptions import DecodeError
from schemas.topics import TopicSettings

__all__ = ["sample_stream"]


def _ends(consumer: Consumer, metadata, topic: str, timeout_s: float) -> dict[int, tuple[int, int]]:
    """Partition -> (low, high) watermark offsets of ``topic`` (empty when the topic does not exist)."""
    meta = metadata.topics.get(topic)
    if meta is None or meta.error is not None:
        return {}
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)
            for p in meta.partitions}


def _newest(consumer: Consumer, wanted: dict[tuple[str, int], int], timeout_s: float,
            stamp: Callable[[str, bytes | None, int], int]) -> dict[str, int]:
    """Topic -> the largest ``stamp`` of the last record of each of its partitions (read at the given offsets)."""
    if not wanted:
        return {}
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in wanted.items()])
    pending = set(wanted)
    newest: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=len(pending), timeout=0.2):
            error = message.error()
            if error is not None:  # the end (nothing readable at that offset) or a transient error: wait it out
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((message.topic(), message.partition()))
                continue
            key = (message.topic(), message.partition())
            if key not in pending or message.offset() < wanted[key]:
                continue
            pending.discard(key)
            value = stamp(message.topic(), message.value(), message.timestamp()[1])
            newest[message.topic()] = max(newest.get(message.topic(), value), value)
    consumer.unassign()
    return newest


def sample_stream(bootstrap_servers: str, topics: TopicSettings, timeout_s: float,
                  clock: Callable[[], float] = time.time) -> StreamSample:
    """The ends of the job's topics now; :class:`~kafka_client.KafkaUnavailableError` when no broker answers."""
    consumer = make_consumer(bootstrap_servers, None, {"socket.connection.setup.timeout.ms": int(timeout_s * 1000),
                                                       "enable.partition.eof": True,
                                                       "log_level": 0})  # a broker that is down: one line, no chatter
    try:
        metadata = check_kafka(consumer, bootstrap_servers, timeout_s)
        raw = _ends(consumer, metadata, topics.raw, timeout_s)
        outputs = [_ends(consumer, metadata, t, timeout_s)
                   for t in (topics.events, topics.dead_letters, topics.predictions)]
        at_s = clock()  # the ends are as of now; the newest records below are read at these offsets
        wanted = {(topics.raw, p): high - 1 for p, (low, high) in raw.items() if high > low}
        for topic, ends in ((topics.events, outputs[0]), (topics.predictions, outputs[2])):
            wanted.update({(topic, p): high - 1 for p, (low, high) in ends.items() if high > low})
        # Raw records: their Kafka timestamp (the producer's event time; the value may be any bytes). The job's
        # records: the event_time inside (a published batch is stamped with its earliest record's time).
        codecs = {topics.events: AvroCodec("traffic_event"), topics.predictions: AvroCodec("prediction")}

        def stamp(topic: str, value: bytes | None, timestamp_ms: int) -> int:
            codec = codecs.get(topic)
            if codec is None:
                return timestamp_ms
            try:
                return int(codec.decode(value)["event_time"])
            except (DecodeError, KeyError, TypeError, ValueError):
                return timestamp_ms  # not a record of the job's schema: its Kafka timestamp stands in

        newest = _newest(consumer, wanted, timeout_s, stamp)
        return StreamSample(at_s, sum(high for _, high in raw.values()),
                            tuple(sum(high for _, high in ends.values()) for ends in outputs),
                            newest.get(topics.raw), newest.get(topics.predictions), newest.get(topics.events))
    finally:
        consumer.close()
