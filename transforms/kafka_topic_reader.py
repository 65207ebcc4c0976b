"""The unbounded Kafka reader: one splittable restriction per topic, covering all its partitions.

Why one restriction per topic and not one per partition: a runner must hold the
output watermark of a splittable DoFn at its unstarted work, and Prism does not
(a partition read later than the others found the watermark already past its
records, which windows then dropped as late). With every partition in one
restriction, one watermark estimator sees them all and the watermark is the
oldest progress among the partitions that still have records to read:

* a partition with unread records holds the watermark at its newest record
  timestamp read so far (MIN before its first record);
* a partition that has read everything up to its high-water mark (as of the
  consumer's last fetch, at most about the 20 ms fetch wait old) holds nothing;
  when every partition is caught up, the watermark is the newest timestamp read
  (minus ``max_out_of_orderness_s``), so a quiet or empty partition never stalls
  event-time windows.

A backlog is read in step across partitions (:mod:`transforms.partition_merge`):
records more than ``max_skew_s`` (default 300 s) past the slowest partition are
held back, and a partition holding many is paused, so the watermark follows
what is read and the steps downstream hold a bounded span of event time, not
the backlog (librdkafka hands over one partition's backlog before the next's).

A read call lasts up to a second, and its watermark goes out when it ends. The
first call of a fresh read ends as soon as it can promise a watermark (every
partition has released a record): downstream a watermark waits behind every
record sent before it. The network history emits a complete first step without
waiting for the watermark, but an incomplete one waits for it, as do the
windows' ON_TIME panes and the hourly files.

The restriction records, per partition, the next offset and the newest
timestamp read, so a checkpoint (``defer_remainder``; on Flink part of the
runner's checkpoint) resumes exactly there with the same watermark. Offsets are
committed to ``group_id`` when a checkpointed restriction resumes: best effort,
for lag monitoring and ``start="committed"``; the checkpoint is what recovery uses.

A broker that goes away and comes back is waited out, not failed on: librdkafka
reconnects by itself, the transient errors it reports meanwhile (transport, all
brokers down, a partition's leader unknown, watermark offsets it cannot get) are
counted (``kafka_io/transient_errors``) and logged once a minute, and a partition
whose high-water mark is unknown counts as not caught up, so the watermark holds
until the broker answers again. Only a fatal or non-retriable error fails the read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Duration, Timestamp
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from kafka_client.lifecycle import TrackedClient, close_client, track
from schemas.batches import RawBatch
from schemas.records import KafkaMessage
from transforms.partition_merge import EventTimeMerge

__all__ = ["MAX_SKEW_S", "ReadTopicFn", "TopicRead", "TopicRestriction", "emit_messages", "is_transient"]

log = logging.getLogger(__name__)

_READ_CALL_S = 1.0  # a read checks itself in at least this often
# A call waits up to _IDLE_WAIT_S for its first record with poll(), which returns on the first record
# (consume() waits out its whole timeout unless a full batch is there), then takes what is ready. The
# broker answers a connection's requests in order, so its fetch wait is kept short: a long one held the
# fetched records, and any metadata request, back.
_IDLE_WAIT_S = 0.2
_FETCH_WAIT_MS = 20
_META_TIMEOUT_S = 10.0
_BATCH = 500
# Records read ahead of the slowest partition (transforms.partition_merge): a partition is paused once
# _HOLD_MAX of its records are held. librdkafka's own prefetch keeps its defaults (bounded: 64 MB or
# 100,000 records per partition): capping it at 2,000 records or 16 MB nearly doubled the worker's CPU in a
# 24 h catch-up (pausing a partition throws its prefetched records away).
MAX_SKEW_S = 300.0
_HOLD_MAX = 2_000
_EMIT_AT = 4_000  # claimed records emitted together (one RawBatch)
_LOG_EVERY_S = 60.0
# Errors a broker restart or a leader move produces; librdkafka recovers from them by itself.
_TRANSIENT = frozenset({
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT, KafkaError._RESOLVE,
    KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._WAIT_COORD, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION,
    KafkaError.BROKER_NOT_AVAILABLE, KafkaError.REPLICA_NOT_AVAILABLE,
})


def is_transient(error: KafkaError) -> bool:
    """Whether a consumer error is one the client recovers from once the broker is back."""
    return not error.fatal() and (error.code() in _TRANSIENT or error.retriable())


class TopicRead(NamedTuple):
    """What one reader reads: a topic and each partition's start offset."""

    topic: str
    starts: tuple[tuple[int, int], ...]  # (partition, offset)


class PartitionProgress(NamedTuple):
    partition: int
    next_offset: int
    newest_ms: int | None  # newest record timestamp read so far


class TopicRestriction(NamedTuple):
    """Per partition: where to read next and the newest timestamp read; ``done`` after a checkpoint."""

    partitions: tuple[PartitionProgress, ...]
    done: bool = False


class _TopicTracker(RestrictionTracker):
    """Claims (partition, offset, timestamp) positions; splits only to checkpoint (fraction 0)."""

    def __init__(self, restriction: TopicRestriction) -> None:
        self._restriction = restriction
        self._next = {p.partition: p.next_offset for p in restriction.partitions}
        self._newest = {p.partition: p.newest_ms for p in restriction.partitions}

    def current_restriction(self) -> TopicRestriction:
        return self._restriction

    def _progress(self) -> tuple[PartitionProgress, ...]:
        return tuple(PartitionProgress(p, self._next[p], self._newest[p]) for p in sorted(self._next))

    def try_claim(self, position: tuple[int, int, int]) -> bool:
        partition, offset, timestamp_ms = position
        if self._restriction.done or partition not in self._next or offset < self._next[partition]:
            return False
        self._next[partition] = offset + 1
        newest = self._newest[partition]
        self._newest[partition] = timestamp_ms if newest is None else max(newest, timestamp_ms)
        return True

    def try_split(self, fraction_of_remainder: float):
        if fraction_of_remainder > 0 or self._restriction.done:
            return None
        residual = TopicRestriction(self._progress())
        primary = TopicRestriction(self._progress(), done=True)
        self._restriction = primary
        return primary, residual

    def check_done(self) -> None:
        if not self._restriction.done:
            raise ValueError("an unbounded topic read ended without checkpointing its remainder")

    def current_progress(self) -> RestrictionProgress:
        """No measurable fraction of an endless read is done; the fraction is explicit on purpose.

        The Python SDK (2.77) replaces ``completed`` with its estimate of the bytes output since
        the element started, the element count times a sampled mean size. That mean is NaN in a
        bundle whose outputs were all skipped by the size sampler (its sampling gap outlives
        the bundle), and a NaN progress failed Prism's split request for a stalled bundle
        (``bundle_processor._compute_split``: "cannot convert float NaN to integer").
        A progress with ``fraction`` set keeps that fraction whatever the byte estimate.
        """
        return RestrictionProgress(fraction=0.0)

    def is_bounded(self) -> bool:
        return False


class _TopicRestrictions(RestrictionProvider):
    def initial_restriction(self, element: TopicRead) -> TopicRestriction:
        return TopicRestriction(tuple(PartitionProgress(p, offset, None) for p, offset in element.starts))

    def create_tracker(self, restriction: TopicRestriction) -> _TopicTracker:
        return _TopicTracker(restriction)

    def split(self, element: TopicRead, restriction: TopicRestriction) -> Iterator[TopicRestriction]:
        yield restriction

    def restriction_size(self, element: TopicRead, restriction: TopicRestriction) -> int:
        return 1


class _Watermarks(WatermarkEstimatorProvider):
    def initial_estimator_state(self, element: TopicRead, restriction: TopicRestriction) -> Timestamp:
        return MIN_TIMESTAMP

    def create_watermark_estimator(self, estimator_state: Timestamp) -> ManualWatermarkEstimator:
        return ManualWatermarkEstimator(estimator_state)


def topic_watermark_ms(newest_ms: Mapping[int, int | None], caught_up: Mapping[int, bool]) -> int | None:
    """The watermark of a topic read (see the module doc); None when nothing may be promised yet."""
    behind = [p for p, up in caught_up.items() if not up]
    if behind:
        stamps = [newest_ms.get(p) for p in behind]
        return None if any(s is None for s in stamps) else min(stamps)
    seen = [s for s in newest_ms.values() if s is not None]
    return max(seen) if seen else None


_RESTRICTION_PARAM = beam.DoFn.RestrictionParam(_TopicRestrictions())
_WATERMARK_PARAM = beam.DoFn.WatermarkEstimatorParam(_Watermarks())


class ReadTopicFn(beam.DoFn):
    """Splittable DoFn reading every partition of one topic without end (see the module doc)."""

    def __init__(self, consumer_config: Mapping[str, Any], max_out_of_orderness_s: float, commit_offsets: bool,
                 batches: bool = False, max_skew_s: float = MAX_SKEW_S):
        self._config = dict(consumer_config)
        self._max_skew_ms = int(max_skew_s * 1000)
        self._batches = batches
        self._lag_ms = int(max_out_of_orderness_s * 1000)
        self._commit = commit_offsets
        self._records = Metrics.counter("kafka_io", "records_read")
        self._transient = Metrics.counter("kafka_io", "transient_errors")

    def setup(self) -> None:
        self._logged_at = 0.0
        self._consumers: dict[str, TrackedClient] = {}  # closed by teardown, or kafka_client.lifecycle
        self._positions: dict[str, dict[int, int]] = {}  # per topic: where its consumer reads next
        self._merges: dict[str, EventTimeMerge] = {}  # per topic: records read ahead of the slowest partition
        self._paused: dict[str, set[int]] = {}  # per topic: partitions paused while the merge holds their records

    def teardown(self) -> None:
        for client in getattr(self, "_consumers", {}).values():
            close_client(client)
        self._consumers = {}

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: TopicRead,
        tracker=_RESTRICTION_PARAM,
        estimator=_WATERMARK_PARAM,
    ) -> Iterator[TimestampedValue]:
        client = self._client(element.topic)
        with client.lock:  # never closed under a running read (kafka_client.lifecycle)
            client.touch()
            yield from self._read(element, tracker, estimator, client.client)

    def _read(self, element: TopicRead, tracker: RestrictionTracker, estimator: ManualWatermarkEstimator,
              consumer: Consumer) -> Iterator[TimestampedValue]:
        restriction = tracker.current_restriction()
        topic = element.topic
        # The runner hands us a view of the tracker: keep this call's progress here too.
        next_offsets = {p.partition: p.next_offset for p in restriction.partitions}
        merge = self._assign_at(consumer, topic, next_offsets)
        self._commit_resumed(consumer, topic, restriction)
        newest_ms = {p.partition: p.newest_ms for p in restriction.partitions}
        # No watermark yet: this call ends as soon as it can promise one, so the first watermark follows the
        # first records closely (downstream a watermark waits behind every record sent before it).
        first = None in newest_ms.values()  # some partition has released nothing yet
        deadline = time.monotonic() + _READ_CALL_S
        read = 0
        claimed: list[KafkaMessage] = []  # emitted in batches of _EMIT_AT: the merge releases a little at a time
        while time.monotonic() < deadline:
            batch = _ready_records(consumer, _IDLE_WAIT_S if not read else 0.0)
            merge.add(self._stamped(topic, batch))
            caught_up = {p for p, offset in next_offsets.items() if self._caught_up(consumer, topic, p, offset, True)}
            for message in merge.release(newest_ms, caught_up):
                if not tracker.try_claim((message.partition, message.offset, message.timestamp_ms)):
                    self._merges.pop(topic, None)  # the consumer is moved back to the claimed offsets next call
                    yield from self._emit(claimed)
                    return
                next_offsets[message.partition] = message.offset + 1
                read += 1
                claimed.append(message)
            self._pause_holding(consumer, topic, merge)
            if len(claimed) >= _EMIT_AT:
                yield from self._emit(claimed)
                claimed = []
            if not batch or (first and None not in newest_ms.values()):
                break
        yield from self._emit(claimed)
        self._records.inc(read)
        self._positions[topic] = dict(next_offsets)  # claimed, or held by the merge: it reads on from here
        caught_up_now = {p: self._caught_up(consumer, topic, p, offset) for p, offset in next_offsets.items()}
        watermark = topic_watermark_ms(newest_ms, caught_up_now)
        if watermark is not None:
            candidate = Timestamp(micros=min((watermark - self._lag_ms) * 1000, MAX_TIMESTAMP.micros - 1))
            current = estimator.current_watermark()
            if current is None or candidate > current:
                estimator.set_watermark(candidate)
        tracker.defer_remainder(Duration(seconds=0))  # an idle call has already waited _IDLE_WAIT_S

    def _stamped(self, topic: str, batch: list) -> Iterator[tuple[int, int, KafkaMessage]]:
        """The batch's records as (partition, timestamp, message); errors are counted or raised."""
        for msg in batch:
            if msg.error() is not None:
                self._on_error(topic, msg.error())
                continue
            ts_ms = msg.timestamp()[1]
            ts_ms = ts_ms if ts_ms >= 0 else int(time.time() * 1000)
            partition = msg.partition()
            yield partition, ts_ms, KafkaMessage(msg.key(), msg.value(), topic, partition, msg.offset(), ts_ms)

    def _pause_holding(self, consumer: Consumer, topic: str, merge: EventTimeMerge) -> None:
        """Pause a partition once the merge holds _HOLD_MAX of its records; resume it below a quarter of that.

        A paused partition's backlog waits in Kafka, not here; the hysteresis keeps pausing rare.
        """
        paused = self._paused.setdefault(topic, set())
        counts = merge.held_counts()
        stop = {p for p, n in counts.items() if n >= _HOLD_MAX} - paused
        go = {p for p in paused if counts.get(p, 0) <= _HOLD_MAX // 4}
        if stop:
            consumer.pause([TopicPartition(topic, p) for p in sorted(stop)])
        if go:
            consumer.resume([TopicPartition(topic, p) for p in sorted(go)])
        paused |= stop
        paused -= go

    def _emit(self, claimed: list[KafkaMessage]) -> Iterator[TimestampedValue]:
        yield from emit_messages(claimed, self._batches)

    def _on_error(self, topic: str, error: KafkaError) -> None:
        """A transient error is counted and logged (once a minute at most); any other fails the read."""
        if not is_transient(error):
            raise RuntimeError(f"reading {topic}: {error.str()}")
        self._transient.inc()
        if time.monotonic() - self._logged_at >= _LOG_EVERY_S:
            self._logged_at = time.monotonic()
            log.warning("reading %s: %s (waiting for the broker; the read goes on when it answers)", topic, error.str())

    def _caught_up(self, consumer: Consumer, topic: str, partition: int, next_offset: int,
                   cached_only: bool = False) -> bool:
        """Whether the partition has nothing unread as of its last fetch (the broker is asked before the first).

        When the high-water mark cannot be had (the broker is away, or ``cached_only`` and none is
        cached yet), the partition is not caught up: the watermark holds, which is always safe.
        """
        tp = TopicPartition(topic, partition)
        try:
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0 and not cached_only:
                _, high = consumer.get_watermark_offsets(tp, timeout=_META_TIMEOUT_S, cached=False)
        except KafkaException as exc:
            self._on_error(topic, exc.args[0])
            return False
        return high >= 0 and next_offset >= high

    def _client(self, topic: str) -> TrackedClient:
        """The topic's consumer; a new one if it was closed (idle, or its job cancelled in this process)."""
        client = self._consumers.get(topic)
        if client is None or client.closed:
            self._positions.pop(topic, None)
            self._merges.pop(topic, None)
            consumer = Consumer({"fetch.wait.max.ms": _FETCH_WAIT_MS, **self._config})
            client = self._consumers[topic] = track(consumer, [topic])
        return client

    def _assign_at(self, consumer: Consumer, topic: str, next_offsets: Mapping[int, int]) -> EventTimeMerge:
        """The topic's merge; the consumer assigned at ``next_offsets`` unless the last call left it exactly there.

        Assigning again at every call (several a second while the topic is quiet) starved
        librdkafka's fetcher: records produced after a quiet spell were never returned.
        A new assignment starts with nothing held and nothing paused.
        """
        merge, last = self._merges.get(topic), self._positions.pop(topic, None)  # popped: a failed call re-assigns
        if merge is None or last != next_offsets:
            partitions = [TopicPartition(topic, p, offset) for p, offset in next_offsets.items()]
            consumer.assign(partitions)
            consumer.resume(partitions)
            self._paused[topic] = set()
            merge = self._merges[topic] = EventTimeMerge(self._max_skew_ms)
        return merge

    def _commit_resumed(self, consumer: Consumer, topic: str, restriction: TopicRestriction) -> None:
        """Best effort: a resumed restriction means the runner finished the bundles before it.

        (Bundle finalisation would be the textbook place, but Prism 2.77 fails FinalizeBundle
        for splittable DoFns.)
        """
        resumed = [p for p in restriction.partitions if p.newest_ms is not None]
        if self._commit and resumed:
            offsets = [TopicPartition(topic, p.partition, p.next_offset) for p in resumed]
            try:
                consumer.commit(offsets=offsets, asynchronous=True)
            except Exception:  # noqa: BLE001 - best effort by design (see the module doc)
                pass


def emit_messages(claimed: list[KafkaMessage], batches: bool) -> Iterator[TimestampedValue]:
    """The claimed records: one :class:`RawBatch` of them all (stamped with the earliest record) or one by one.

    One batch across partitions, in the merge's order: the partitions of a step travel together, so each
    (shard, window) downstream gets one part of it, not one per partition (each part fires an early pane).
    """
    if not batches:
        for m in claimed:
            yield TimestampedValue(m, m.timestamp_ms / 1000.0)
        return
    if claimed:
        yield TimestampedValue(RawBatch.from_messages(claimed), min(m.timestamp_ms for m in claimed) / 1000.0)


def _ready_records(consumer: Consumer, wait_s: float) -> list:
    """The records ready now, after waiting up to ``wait_s`` for the first one."""
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first, *consumer.consume(_BATCH - 1, timeout=0)]
