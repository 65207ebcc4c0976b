"""The API's single Kafka consumer: a background thread feeding the asyncio loop.

One :class:`KafkaFeed` per process reads the predictions and alerts topics (and
the aggregates topic for actual speeds), decodes every record with the Avro
codec, stamps it with its arrival time at the poll (``received_ms``, epoch ms),
and hands each batch to the event loop with ``loop.call_soon_threadsafe``,
where :class:`~api.state.LiveState` and :class:`~api.hub.Hub` take it.

Partitions are assigned explicitly (no consumer group, nothing committed):
every API process sees every record. At start the feed re-reads the last
``backfill_per_partition`` records of each partition so the latest state is
back after a restart; topics and partitions created later are picked up every
``metadata_refresh_s``.

A model step (207 sensors x 3 horizons = 621 predictions) is produced at once
but can reach the consumer in several fetches (one per partition, a few ms
apart). After a poll returns, the feed keeps reading while the newest step in
hand is smaller than the largest step it has seen (:class:`StepGather`), for at
most ``step_gather_ms`` and until half of it passes without a record, so
a step normally goes to the event loop as one delivery: one frame and one write
per SSE client instead of one per fetch (a later part would otherwise also
wait out the stream's ``coalesce_ms``). The records keep the arrival stamp of
their own poll, so any wait shows in the measured latency.

A broker outage never stops the feed: librdkafka reconnects by itself, and any
error meanwhile (a metadata request or a watermark query that fails, an error
event from the poll) is kept in ``last_error`` (with ``error_since``) and
cleared by the next record or the next metadata refresh that succeeds, so ``/health`` shows
the outage while it lasts and the recovery after.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from api.state import Record
from kafka_client import check_kafka as kafka_metadata
from kafka_client import make_consumer
from schemas.codec import AvroCodec
from schemas.exceptions import DecodeError
from schemas.topics import TopicSettings

__all__ = ["KafkaFeed", "StepGather", "check_kafka"]

log = logging.getLogger(__name__)


def check_kafka(bootstrap_servers: str, timeout_s: float) -> dict[str, object]:
    """A real round trip to the brokers (metadata request); raises KafkaUnavailableError when down."""
    consumer = make_consumer(bootstrap_servers, "traffic-api-health",
                             {"socket.connection.setup.timeout.ms": int(timeout_s * 1000)})
    try:
        metadata = kafka_metadata(consumer, bootstrap_servers, timeout_s)
        return {"brokers": len(metadata.brokers), "topics": sorted(t for t in metadata.topics if not t.startswith("_"))}
    finally:
        consumer.close()


class StepGather:
    """Prediction records per step (``event_time``): is the newest step of a delivery still incomplete?

    The complete size is the most records any step has had (at first: the hint, sensors x the model's horizons),
    so nothing is configured per network, and a step that stays short (a sensor without a forecast) costs at most
    the gather deadline.
    """

    def __init__(self, size_hint: int = 0, keep: int = 16) -> None:
        self.keep = keep
        self.counts: dict[int, int] = {}  # event_time -> prediction records seen (the last ``keep`` steps)
        self.size = size_hint  # the largest step seen (or expected: sensors x the model's horizons)
        self.newest: int | None = None  # the newest step of the current delivery

    def add(self, batch: list[Record]) -> None:
        """Count the predictions of a (part of a) delivery."""
        counts = self.counts
        for kind, record, _ in batch:
            if kind != "prediction":
                continue
            step = record["event_time"]
            counts[step] = n = counts.get(step, 0) + 1
            if n > self.size:
                self.size = n
            if self.newest is None or step > self.newest:
                self.newest = step
        if len(counts) > self.keep:
            for step in sorted(counts)[: len(counts) - self.keep]:
                del counts[step]

    def start(self) -> None:
        """A new delivery begins."""
        self.newest = None

    @property
    def waiting(self) -> bool:
        """The delivery's newest step has fewer records than a whole step (so more of it is on the way)."""
        return self.newest is not None and self.counts.get(self.newest, 0) < self.size


class KafkaFeed:
    """Consumes the API's topics on a daemon thread and delivers decoded batches to ``deliver``."""

    def __init__(self, bootstrap_servers: str, topics: TopicSettings,
                 deliver: Callable[[list[Record], list[tuple[str, int, int]]], None],
                 loop: asyncio.AbstractEventLoop, *, consume_actuals: bool = True, backfill_per_partition: int = 2000,
                 metadata_refresh_s: float = 5.0, timeout_s: float = 5.0, batch_size: int = 5000,
                 linger_ms: float = 5.0, step_gather_ms: float = 50.0, step_records: int = 0,
                 start_at: dict[tuple[str, int], int] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.kinds: dict[str, str] = {topics.predictions: "prediction", topics.alerts: "alert",
                                      topics.incidents: "incident"}
        if consume_actuals:
            self.kinds[topics.aggregates] = "aggregate"
        self.codecs = {
            topics.predictions: AvroCodec("prediction"),
            topics.alerts: AvroCodec("alert"),
            topics.aggregates: AvroCodec("window_aggregate"),
            topics.incidents: AvroCodec("incident"),
        }
        self.deliver = deliver
        self.loop = loop
        self.backfill = backfill_per_partition
        self.metadata_refresh_s = metadata_refresh_s
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.start_at = dict(start_at or {})  # (topic, partition) -> read from here at the latest (the event journal)
        self.linger_s = linger_ms / 1000.0
        self.gather_s = step_gather_ms / 1000.0
        self.steps = StepGather(step_records)
        self.assigned: set[tuple[str, int]] = set()
        self.consumed = 0
        self.decode_errors = 0
        self.last_error: str | None = None
        self.error_since: float | None = None  # epoch s of the first error of the current outage
        self.last_poll_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="traffic-api-kafka", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _consumer(self) -> Consumer:
        return make_consumer(self.bootstrap_servers, f"traffic-api-{uuid.uuid4().hex[:12]}", {  # assigned, never joined
            "fetch.wait.max.ms": 10,  # low delivery latency matters more than batching here
            "fetch.min.bytes": 1,
            "socket.connection.setup.timeout.ms": int(self.timeout_s * 1000),
        })

    def _failed(self, error: str) -> None:
        self.last_error = error
        if self.error_since is None:
            self.error_since = time.time()

    def _recovered(self) -> None:
        if self.last_error is not None:
            log.info("api consumer recovered after %.1f s (%s)", time.time() - (self.error_since or time.time()),
                     self.last_error)
        self.last_error, self.error_since = None, None

    def _assign_new(self, consumer: Consumer) -> None:
        try:
            metadata = consumer.list_topics(timeout=self.timeout_s)
            self._assign_from(consumer, metadata)
        except KafkaException as exc:
            self._failed(f"metadata: {exc}")
            return
        self._recovered()  # the broker answered

    def _assign_from(self, consumer: Consumer, metadata) -> None:
        fresh = []
        for topic in self.kinds:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for partition in meta.partitions:
                if (topic, partition) in self.assigned:
                    continue
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=self.timeout_s)
                start = min(high - self.backfill, self.start_at.get((topic, partition), high))
                fresh.append(TopicPartition(topic, partition, max(low, start)))
        if fresh:
            consumer.incremental_assign(fresh)
            self.assigned.update((tp.topic, tp.partition) for tp in fresh)
            log.info("api consumer assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in fresh))

    def _decode(self, messages: list) -> tuple[list[Record], list[tuple[str, int, int]]]:
        """The decoded records and each one's (topic, partition, offset)."""
        batch: list[Record] = []
        positions: list[tuple[str, int, int]] = []
        received_ms = time.time() * 1000.0  # arrival at the API: stamped at the poll
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self._failed(str(error))
                continue
            topic = message.topic()
            try:
                record = self.codecs[topic].decode(message.value())
            except DecodeError as exc:
                self.decode_errors += 1
                log.warning("skipping undecodable record %s[%d]@%d: %s", topic, message.partition(),
                            message.offset(), exc)
                continue
            batch.append((self.kinds[topic], record, received_ms))
            positions.append((topic, message.partition(), message.offset()))
        return batch, positions

    def _gather_step(self, consumer: Consumer, batch: list[Record], positions: list[tuple[str, int, int]]) -> None:
        """Read on (into ``batch``/``positions``) while the newest step is incomplete, within the gather deadline."""
        steps = self.steps
        steps.start()
        steps.add(batch)
        deadline = time.monotonic() + self.gather_s
        quiet_s = max(self.gather_s / 2, 0.001)
        while steps.waiting and len(batch) < self.batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = consumer.consume(num_messages=self.batch_size - len(batch), timeout=min(left, quiet_s))
            if not more:
                break  # nothing for half the deadline: the rest of the step is not coming soon
            extra, extra_positions = self._decode(more)
            batch += extra
            positions += extra_positions
            steps.add(extra)

    def _run(self) -> None:
        consumer = None
        next_refresh = 0.0
        try:
            while not self._stop.is_set():
                if consumer is None:
                    consumer = self._consumer()
                if time.monotonic() >= next_refresh:
                    self._assign_new(consumer)
                    next_refresh = time.monotonic() + self.metadata_refresh_s
                if not self.assigned:
                    self._stop.wait(0.2)
                    continue
                # poll() returns as soon as one record is there; then take what arrives within linger_ms more
                # (consume() waits out its timeout unless the batch fills), so a model step produced at once
                # (621 predictions over several fetches) is one delivery: one frame and one write per client
                # instead of several. Idle, the thread wakes 5 times a second, so it rarely competes with the
                # event loop for the GIL.
                first = consumer.poll(timeout=0.2)
                self.last_poll_s = time.time()
                if first is None:
                    continue
                messages = [first, *consumer.consume(num_messages=self.batch_size - 1, timeout=self.linger_s)]
                batch, positions = self._decode(messages)
                self._gather_step(consumer, batch, positions)
                if batch and self.last_error is not None:
                    self._recovered()
                self.consumed += len(batch)
                if batch and not self.loop.is_closed():
                    self.loop.call_soon_threadsafe(self.deliver, batch, positions)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("api Kafka consumer stopped")
        finally:
            if consumer is not None:
                consumer.close()
