"""Kafka sources and sinks for Beam pipelines, in Python on confluent-kafka.

The Java Kafka transforms need an expansion service this machine cannot have,
so both directions are plain Python and run on every runner (Direct, Prism,
Flink through the portable job server).

Reading (:class:`ReadFromKafka`)
    At pipeline start one step lists the partitions of the topics and resolves
    the start offsets. Unbounded reads (streaming) then read each topic with
    one splittable restriction covering all its partitions
    (:mod:`transforms.kafka_topic_reader`), which checks itself in at least once
    a second so the runner checkpoints it: on Flink the checkpointed restriction
    (every partition's next offset) is the source of truth for where to resume.
    Bounded reads (batch, tests) read each ``(topic, partition)`` as an offset
    range ``[start, end)`` with the end offsets present when the pipeline started.

Delivery guarantee
    At least once. A restart from a runner checkpoint re-reads from the
    checkpointed offsets, so records after the last checkpoint may be seen
    twice (DeduplicateEvents drops exact repeats downstream); none is skipped.
    Committing offsets to the consumer group (when ``group_id`` is set) is best
    effort, when a checkpointed restriction resumes: it serves lag monitoring
    and ``start="committed"`` for a new pipeline, never recovery.

Watermarks and idle partitions
    Record timestamps are event times (the producers set them). A topic's
    watermark is the newest timestamp read in the partitions that still have
    unread records (held at MIN until each has read one); partitions that have
    read everything up to their high-water mark hold nothing, and when all are
    caught up the watermark is the newest timestamp read, minus
    ``max_out_of_orderness_s``. So an empty or quiet partition never stalls
    event-time windows, and a partition that starts late never finds the
    watermark already past its records.

Writing (:class:`WriteToKafka`)
    One idempotent producer per DoFn instance; every bundle is flushed in
    ``finish_bundle`` and the bundle fails (and is retried by the runner) if any
    record was not acknowledged, so nothing is lost silently. The flush waits as
    long as the producer keeps retrying a record (``message.timeout.ms``, 5 minutes
    by default), so a broker restart is waited out instead of failing the bundle. Values are bytes:
    callers encode records with :class:`schemas.codec.AvroCodec`. The Kafka
    record timestamp is the element's event timestamp.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP
from confluent_kafka import Consumer, KafkaError, TopicPartition

from kafka_client import KafkaUnavailableError, check_kafka, make_consumer, make_producer, produce_at
from kafka_client import consumer_config as kafka_consumer_config
from kafka_client.lifecycle import TrackedClient, close_client, track
from schemas.batches import RawBatch
from schemas.exceptions import TrafficError
from schemas.records import KafkaMessage
from transforms.kafka_topic_reader import ReadTopicFn, TopicRead, emit_messages

__all__ = ["KafkaIOError", "PartitionRead", "ReadFromKafka", "WriteToKafka"]

_POLL_S = 0.2
_POLL_EVERY = 512  # records produced between two polls for delivery reports (finish_bundle flushes the rest)
_META_TIMEOUT_S = 10.0
_MESSAGE_TIMEOUT_MS = 300_000  # how long the producer retries a record (through a broker restart) before failing it
_FLUSH_MARGIN_S = 10.0
START_POSITIONS = ("earliest", "latest", "committed")


class KafkaIOError(TrafficError):
    """Kafka is unreachable, a topic is missing, or records were not delivered."""


class PartitionRead(NamedTuple):
    """What one bounded partition reader reads: ``[start, stop)``."""

    topic: str
    partition: int
    start: int
    stop: int


def _partitions(consumer: Consumer, bootstrap_servers: str, topic: str) -> list[int]:
    try:
        meta = check_kafka(consumer, bootstrap_servers, _META_TIMEOUT_S)
    except KafkaUnavailableError as exc:
        raise KafkaIOError(str(exc)) from None
    info = meta.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise KafkaIOError(f"topic {topic!r} does not exist on {bootstrap_servers}")
    return sorted(info.partitions)


def _start_offset(consumer: Consumer, tp: TopicPartition, start: str | int) -> int:
    low, high = consumer.get_watermark_offsets(tp, timeout=_META_TIMEOUT_S)
    if start == "earliest":
        return low
    if start == "latest":
        return high
    if start == "committed":
        committed = consumer.committed([tp], timeout=_META_TIMEOUT_S)[0].offset
        return committed if committed >= 0 else low
    found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, int(start))], timeout=_META_TIMEOUT_S)
    return found[0].offset if found[0].offset >= 0 else high


class _PlanPartitions(beam.DoFn):
    """Lists the partitions and resolves their offset ranges, once, at pipeline start."""

    def __init__(self, bootstrap_servers: str, topics: Sequence[str], group_id: str | None, start: str | int,
                 bounded: bool, stop_at_end: bool, max_records: int | None, consumer_config: Mapping | None):
        self._servers, self._topics, self._group = bootstrap_servers, list(topics), group_id
        self._start, self._bounded, self._stop_at_end = start, bounded, stop_at_end
        self._max_records, self._config = max_records, dict(consumer_config or {})

    def process(self, _: bytes) -> Iterator[PartitionRead | TopicRead]:
        consumer = make_consumer(self._servers, self._group, self._config)
        try:
            tps = [TopicPartition(t, p) for t in self._topics for p in _partitions(consumer, self._servers, t)]
            starts = [_start_offset(consumer, tp, self._start) for tp in tps]
            if not self._bounded:
                for topic in self._topics:
                    yield TopicRead(topic, tuple((tp.partition, s) for tp, s in zip(tps, starts, strict=True)
                                                 if tp.topic == topic))
                return
            ends = self._end_offsets(consumer, tps, starts)
        finally:
            consumer.close()
        remaining = self._max_records
        for tp, start, end in zip(tps, starts, ends, strict=True):
            take = end - start if remaining is None else min(end - start, remaining)
            if remaining is not None:
                remaining -= take
            yield PartitionRead(tp.topic, tp.partition, start, start + max(take, 0))

    def _end_offsets(self, consumer: Consumer, tps: list[TopicPartition], starts: list[int]) -> list[int]:
        while True:
            ends = [consumer.get_watermark_offsets(tp, timeout=_META_TIMEOUT_S)[1] for tp in tps]
            available = sum(max(e - s, 0) for e, s in zip(ends, starts, strict=True))
            if self._stop_at_end or available >= (self._max_records or 0):
                return ends
            time.sleep(_POLL_S)  # wait for max_records records to exist


class _OffsetRanges(RestrictionProvider):
    def initial_restriction(self, element: PartitionRead) -> OffsetRange:
        return OffsetRange(element.start, element.stop)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def split(self, element: PartitionRead, restriction: OffsetRange) -> Iterator[OffsetRange]:
        yield restriction

    def restriction_size(self, element: PartitionRead, restriction: OffsetRange) -> int:
        return restriction.size()


_RESTRICTION_PARAM = beam.DoFn.RestrictionParam(_OffsetRanges())


class _ReadPartitionFn(beam.DoFn):
    """Splittable DoFn reading one partition's bounded offset range (batch reads and tests)."""

    def __init__(self, bootstrap_servers: str, group_id: str | None, consumer_config: Mapping | None,
                 batches: bool = False):
        self._servers, self._group, self._config = bootstrap_servers, group_id, dict(consumer_config or {})
        self._batches = batches
        self._records = Metrics.counter("kafka_io", "records_read")

    def setup(self) -> None:
        self._client: TrackedClient | None = None

    def teardown(self) -> None:
        if getattr(self, "_client", None) is not None:
            close_client(self._client)
            self._client = None

    def process(self, element: PartitionRead, tracker=_RESTRICTION_PARAM) -> Iterator[TimestampedValue]:
        if self._client is None or self._client.closed:  # first call, or closed as idle or its job cancelled
            self._client = track(make_consumer(self._servers, self._group, self._config), [element.topic])
        with self._client.lock:  # never closed under a running read (kafka_client.lifecycle)
            self._client.touch()
            self._consumer = self._client.client
            yield from self._read(element, tracker)

    def _read(self, element: PartitionRead, tracker: OffsetRestrictionTracker) -> Iterator[TimestampedValue]:
        restriction = tracker.current_restriction()
        tp = TopicPartition(element.topic, element.partition, restriction.start)
        self._consumer.assign([tp])
        next_offset = restriction.start
        while True:
            batch = self._consumer.consume(500, timeout=_POLL_S)
            claimed: list[KafkaMessage] = []
            for msg in batch:
                if msg.error() is not None:
                    raise KafkaIOError(f"reading {element.topic}[{element.partition}]: {msg.error().str()}")
                if not tracker.try_claim(msg.offset()):
                    yield from emit_messages(claimed, self._batches)
                    return
                ts_ms = msg.timestamp()[1]
                ts_ms = ts_ms if ts_ms >= 0 else int(time.time() * 1000)
                next_offset = msg.offset() + 1
                claimed.append(KafkaMessage(msg.key(), msg.value(), element.topic, element.partition, msg.offset(),
                                            ts_ms))
            self._records.inc(len(claimed))
            yield from emit_messages(claimed, self._batches)
            if self._position(tp, next_offset, fetched=bool(batch)) >= restriction.stop:
                tracker.try_claim(restriction.stop)  # gaps (compaction, markers) up to the end: done
                return

    def _position(self, tp: TopicPartition, next_offset: int, fetched: bool) -> int:
        """The next offset to read; before the first fetch, past records deleted by retention."""
        position = self._consumer.position([tp])[0].offset
        if position >= 0 or fetched:
            return max(position, next_offset)
        low, _ = self._consumer.get_watermark_offsets(tp, timeout=_META_TIMEOUT_S, cached=False)
        return max(next_offset, low)


class ReadFromKafka(beam.PTransform):
    """Reads ``topics`` as :class:`KafkaMessage` elements timestamped with the Kafka record time.

    ``start``: ``"earliest"``, ``"latest"``, ``"committed"`` (the group's offsets, earliest when
    none) or an epoch-ms timestamp. ``bounded=True`` reads up to the end offsets present at
    pipeline start (``stop_at_end=True``), or, with ``stop_at_end=False``, waits until
    ``max_records`` records exist; ``max_records`` caps a bounded read to the first records by
    (topic, partition, offset). Unbounded reads run until the pipeline is cancelled or drained.
    ``batches=True`` emits a :class:`~schemas.batches.RawBatch` per read (all partitions; what the
    pipelines read) instead of one ``KafkaMessage`` per record.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: str | Sequence[str],
        group_id: str | None = None,
        start: str | int = "earliest",
        bounded: bool = False,
        stop_at_end: bool = True,
        max_records: int | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        max_out_of_orderness_s: float = 0.0,
        commit_offsets: bool = True,
        batches: bool = False,
    ):
        super().__init__()
        if isinstance(start, str) and start not in START_POSITIONS:
            raise KafkaIOError(f"start must be one of {', '.join(START_POSITIONS)} or an epoch-ms int, not {start!r}")
        if max_records is not None and (not bounded or max_records < 0):
            raise KafkaIOError("max_records needs bounded=True and a non-negative count")
        if bounded and not stop_at_end and max_records is None:
            raise KafkaIOError("a bounded read with stop_at_end=False needs max_records")
        self._topics = [topics] if isinstance(topics, str) else list(topics)
        self._plan = _PlanPartitions(bootstrap_servers, self._topics, group_id, start, bounded, stop_at_end,
                                     max_records, consumer_config)
        self._bounded = bounded
        if bounded:
            self._read = _ReadPartitionFn(bootstrap_servers, group_id, consumer_config, batches)
        else:
            config = kafka_consumer_config(bootstrap_servers, group_id, consumer_config)
            self._read = ReadTopicFn(config, max_out_of_orderness_s, commit_offsets and group_id is not None, batches)
        self._output_type = RawBatch if batches else KafkaMessage

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[KafkaMessage]:
        planned = pbegin | "Impulse" >> beam.Impulse() | "PlanPartitions" >> beam.ParDo(self._plan)
        if self._bounded:
            planned = planned | "SpreadPartitions" >> beam.Reshuffle()
        return planned | "ReadPartitions" >> beam.ParDo(self._read).with_output_types(self._output_type)


class _WriteFn(beam.DoFn):
    def __init__(self, bootstrap_servers: str, topic: str, key_fn: Callable | None, value_fn: Callable | None,
                 producer_config: Mapping[str, Any] | None, many: bool = False):
        self._servers, self._topic, self._key_fn, self._value_fn = bootstrap_servers, topic, key_fn, value_fn
        self._many = many
        self._config = dict(producer_config or {})
        self._written = Metrics.counter("kafka_io", "records_written")

    def setup(self) -> None:
        # librdkafka reports failed deliveries only: a Python callback per delivered record cost about a
        # third of producing (docs/benchmarks.md); flush() then tells whether every record left the queue.
        config = {"message.timeout.ms": _MESSAGE_TIMEOUT_MS, **self._config,
                  "delivery.report.only.error": True, "on_delivery": self._failed}
        self._flush_s = float(config["message.timeout.ms"]) / 1000 + _FLUSH_MARGIN_S
        self._producer_settings = config
        self._client: TrackedClient | None = None

    def start_bundle(self) -> None:
        self._errors: list[str] = []
        self._produced = 0
        if self._client is None or self._client.closed:  # first bundle, or closed as idle or its job cancelled
            self._client = track(make_producer(self._servers, quiet=False, **self._producer_settings), [self._topic])
        self._producer = self._client.client

    def _failed(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:  # only failures are reported (delivery.report.only.error)
            self._errors.append(err.str())

    def process(self, element: Any, timestamp=beam.DoFn.TimestampParam) -> Iterable[None]:
        in_range = MIN_TIMESTAMP < timestamp < MAX_TIMESTAMP and timestamp.micros >= 0
        at_ms = timestamp.micros // 1000 if in_range else None
        with self._client.lock:  # never closed under a running call (kafka_client.lifecycle)
            self._check_open()
            if self._many:
                for key, value in element:
                    self._produce(key, value, at_ms)
                return ()
            value = self._value_fn(element) if self._value_fn is not None else element
            key = self._key_fn(element) if self._key_fn is not None else None
            self._produce(key, value, at_ms)
        return ()

    def _check_open(self) -> None:
        """Under the lock: the producer is open (closing it flushed what it held; the bundle fails, is retried)."""
        if self._client.closed:
            raise KafkaIOError(f"the producer to {self._topic} was closed during a bundle (its job was cancelled?)")
        self._client.touch()

    def _produce(self, key: Any, value: Any, at_ms: int | None) -> None:
        if value is not None and not isinstance(value, bytes):
            raise KafkaIOError(f"WriteToKafka({self._topic}) needs bytes values, got {type(value).__name__}")
        key = key.encode() if isinstance(key, str) else key
        while True:
            try:
                if at_ms is None:
                    self._producer.produce(self._topic, value, key)
                else:
                    produce_at(self._producer, self._topic, value, key, at_ms)
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: serve deliveries, then retry
        self._produced += 1
        if self._produced % _POLL_EVERY == 0:  # serve delivery reports now and then, not per record (costly)
            self._producer.poll(0)

    def finish_bundle(self) -> None:
        with self._client.lock:
            self._check_open()
            left = self._producer.flush(self._flush_s)  # ends early once every record is acknowledged or failed
        if left or self._errors:
            raise KafkaIOError(
                f"{len(self._errors) + left} record(s) to {self._topic} were not delivered: "
                f"{'; '.join(sorted(set(self._errors))[:3]) or 'flush timed out'}"
            )
        self._written.inc(self._produced)

    def teardown(self) -> None:
        client, self._client, self._producer = getattr(self, "_client", None), None, None
        if client is not None:  # closed: a cached DoFn's open producer would reconnect until the process ends
            close_client(client, flush_s=10.0)


class WriteToKafka(beam.PTransform):
    """Writes each element to ``topic``; the value is ``value_fn(element)`` (default: the element), bytes.

    ``key_fn(element)`` gives the key (bytes, str or None). ``many=True``: each element is
    a sequence of ``(key, value)`` pairs (a batch), produced in order. Returns an empty PCollection.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        key_fn: Callable[[Any], bytes | str | None] | None = None,
        producer_config: Mapping[str, Any] | None = None,
        value_fn: Callable[[Any], bytes | None] | None = None,
        many: bool = False,
    ):
        super().__init__()
        self._fn = _WriteFn(bootstrap_servers, topic, key_fn, value_fn, producer_config, many)
        self._topic = topic

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Produce" >> beam.ParDo(self._fn)
