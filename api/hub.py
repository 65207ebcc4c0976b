"""The fan-out hub: one stream of events in, any number of filtered SSE clients out.

Every event gets a monotonically increasing id and is encoded once as an SSE
frame; the hub keeps the last ``ring_size`` events so a client reconnecting
with ``Last-Event-ID`` gets exactly what it missed.

Slow-client policy: each client has a bounded queue (``queue_size`` events,
held as the batches the Kafka consumer delivered, so a burst costs one wake-up
and one write per client). When a new batch would overflow it, the client is marked *lagged* and removed
from the hub; its stream sends one ``lagged`` event (carrying the id of the
last event it was sent) and closes. The client may reconnect with that id as
``Last-Event-ID``: if it is still in the ring buffer it resumes without a gap,
otherwise it gets a fresh snapshot. Nobody else waits for a slow client.
A client that stops reading altogether (one write blocked ``send_timeout_s``)
is dropped by :meth:`Hub.expire_sends`, and a stream that wrote nothing for
``ping_s`` is woken for a keep-alive comment by :meth:`Hub.due_pings`; one
task per app runs both every second over every open stream, so a write costs
two clock reads, not a timer and a cancel scope of its own, and a stream that
gets data is never pinged.

With an :class:`~api.journal.EventJournal` the ids survive a restart: ids
continue after the journal's last, and records re-read at start-up get their
old ids back into the ring (without going to live clients); resumes wait until
that restore is finished (:attr:`Hub.restored`). Items published with their
Kafka position (a sixth element) are journaled.

All methods run on the event loop thread (the Kafka thread hands batches over
with ``loop.call_soon_threadsafe``), so no locks are needed.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from api.frames import encode_events
from api.journal import EventJournal, Position

__all__ = [
    "CONGESTION_RANK",
    "Batch",
    "EVENT_KINDS",
    "SEVERITY_RANK",
    "Event",
    "EventFilter",
    "Hub",
    "Subscriber",
    "encode_frame",
]

EVENT_KINDS: tuple[str, ...] = ("prediction", "alert", "reading", "incident")
CONGESTION_RANK: dict[str, int] = {"UNKNOWN": 0, "FREE_FLOW": 1, "MODERATE": 2, "HEAVY": 3, "SEVERE": 4}
SEVERITY_RANK: dict[str, int] = {"INFO": 1, "WARNING": 2, "CRITICAL": 3}


def encode_frame(event_id: int | None, kind: str, data: Any) -> bytes:
    """One SSE frame (``id``, ``event``, a single-line JSON ``data``)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return f"{head}event: {kind}\ndata: {body}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Event:
    """One published event; its SSE frame is encoded from ``data`` the first time a client needs it.

    A step of 621 predictions to clients that all ask for step frames (``batch=true``) never needs the
    single-event frames, so publishing does not spend a JSON encoding per event on them.
    """

    id: int
    kind: str
    sensor_id: str
    horizon_min: int | None
    rank: int  # congestion rank of a prediction, severity rank of an alert, 0 for readings
    encoded: bytes | None  # the frame, or None until first asked for (then encoded from ``data`` once)
    received_ms: float = 0.0  # when the API's consumer polled the record (epoch ms)
    sensors: frozenset[str] | None = None  # an incident's sensors: a sensor filter matches any of them
    data: dict[str, Any] | None = None  # the record, for step frames (api/frames.py)

    @property
    def frame(self) -> bytes:
        """The event as one SSE frame (encoded once, then shared by every client)."""
        if self.encoded is None:
            object.__setattr__(self, "encoded", encode_frame(self.id, self.kind, self.data))
        return self.encoded


@dataclass(frozen=True)
class EventFilter:
    """What one client wants; ``None`` means no restriction.

    A bounding box is resolved to the set of sensors inside it when the filter
    is built, so matching is a set lookup per event.
    """

    sensors: frozenset[str] | None = None
    horizons: frozenset[int] | None = None
    kinds: frozenset[str] = frozenset(EVENT_KINDS)
    min_congestion: int = 0
    min_severity: int = 0
    batched: bool = False  # step frames: runs of predictions/readings as one column event (api/frames.py)

    def matches(self, event: Event) -> bool:
        if event.kind not in self.kinds:
            return False
        if self.sensors is not None and (self.sensors.isdisjoint(event.sensors) if event.sensors is not None
                                         else event.sensor_id not in self.sensors):
            return False
        if event.horizon_min is not None and self.horizons is not None and event.horizon_min not in self.horizons:
            return False
        if event.kind == "prediction" and event.rank < self.min_congestion:
            return False
        return not (event.kind == "alert" and event.rank < self.min_severity)

    def matches_record(self, kind: str, record: dict[str, Any]) -> bool:
        """The same test on a decoded record (used for snapshots and REST)."""
        if kind == "prediction":
            rank = CONGESTION_RANK.get(record.get("congestion", "UNKNOWN"), 0)
        elif kind == "alert":
            rank = SEVERITY_RANK.get(record.get("severity", "INFO"), 0)
        else:
            rank = 0
        sensors = frozenset(record["sensor_ids"]) if kind == "incident" else None
        sensor_id = record["seed_sensor_id"] if kind == "incident" else record["sensor_id"]
        probe = Event(0, kind, sensor_id, record.get("horizon_min"), rank, b"", sensors=sensors)
        return self.matches(probe)


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive events for one filter, encoded once and shared by every client with that filter."""

    payload: bytes
    count: int
    last_id: int
    received_ms: float  # the oldest event's arrival at the API

    @classmethod
    def of(cls, events: list[Event], batched: bool = False) -> Batch:
        payload = encode_events(events) if batched else b"".join([event.frame for event in events])
        return cls(payload, len(events), events[-1].id, events[0].received_ms)


@dataclass(eq=False)
class Subscriber:
    """One connected client: its filter, its bounded queue of event batches, and whether it lagged."""

    filter: EventFilter
    limit: int
    batches: deque = field(default_factory=deque)
    pending: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lagged: bool = False
    closed: bool = False
    last_sent_id: int = 0
    dropped: int = 0
    task: asyncio.Task | None = None  # the task writing this client's stream
    sending_since: float = 0.0  # loop time the write in flight was handed to the server; 0.0 when none is
    last_write: float = 0.0  # loop time of the last write (data or keep-alive)
    timed_out: bool = False
    ping_due: bool = False

    def offer(self, batch: Batch) -> bool:
        """Queue a batch of matching events; False (and lagged) when it would overflow the queue."""
        if self.pending + batch.count > self.limit:
            self.lagged = True
            self.dropped += batch.count
            self.wake.set()  # the stream reports the lag at once
            return False
        self.batches.append(batch)
        self.pending += batch.count
        self.wake.set()
        return True

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    def take(self) -> list[Batch]:
        """Every queued batch, oldest first; the queue is empty afterwards."""
        batches = list(self.batches)
        self.batches.clear()
        self.pending = 0
        self.wake.clear()
        return batches


class Hub:
    """Assigns ids, keeps the ring buffer, and fans events out to subscribers."""

    def __init__(self, ring_size: int, queue_size: int, journal: EventJournal | None = None) -> None:
        self.ring: deque[Event] = deque(maxlen=ring_size)
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()
        self.streams: set[Subscriber] = set()  # every stream that started, lagged ones (saying so) included
        self.journal = journal
        self.last_id = journal.last_id if journal is not None else 0
        self.published = 0
        self.lagged_total = 0
        self.closed = False
        self.restored = asyncio.Event()  # set once the journaled events are back in the ring
        self._restoring: list[Event] = []
        if journal is None or not journal.restoring:
            self.restored.set()

    def publish(self, items: Iterable[tuple]) -> list[Event]:
        """Publish ``(kind, sensor_id, horizon_min, rank, data[, position])`` items; returns the new events."""
        events = []
        journaled: list[tuple[int, Position]] = []
        journal = self.journal
        for kind, sensor_id, horizon, rank, data, *position in items:
            if journal is not None and position:
                old_id = journal.known(position[0])
                if old_id is not None:  # re-read after a restart: back into the ring under its old id
                    self._restoring.append(Event(old_id, kind, sensor_id, horizon, rank,
                                                 encode_frame(old_id, kind, data), data.get("received_ms", 0.0)))
                    continue
                if journal.is_old(position[0]):
                    continue  # older than the journal: the live state has it, no client needs it again
            self.last_id += 1
            event = Event(self.last_id, kind, sensor_id, horizon, rank, None, data.get("received_ms", 0.0),
                          frozenset(data["sensor_ids"]) if kind == "incident" else None, data)
            self.ring.append(event)
            events.append(event)
            if journal is not None and position:
                journaled.append((self.last_id, position[0]))
        if journal is not None:
            journal.append(journaled)
            if self._restoring and not journal.restoring:
                self.finish_restore()
        self.published += len(events)
        if not events:
            return events
        lagging = []
        batches: dict[EventFilter, Batch | None] = {}  # clients with equal filters share one encoded batch
        for sub in self.subscribers:
            if sub.filter in batches:
                batch = batches[sub.filter]
            else:
                matched = [event for event in events if sub.filter.matches(event)]
                batch = batches[sub.filter] = Batch.of(matched, sub.filter.batched) if matched else None
            if batch is not None and not sub.offer(batch):
                lagging.append(sub)
        for sub in lagging:
            self.subscribers.discard(sub)
            self.lagged_total += 1
        return events

    def subscribe(self, event_filter: EventFilter) -> Subscriber:
        sub = Subscriber(event_filter, self.queue_size)
        if self.closed:
            sub.close()
        else:
            self.subscribers.add(sub)
        return sub

    def opened(self, sub: Subscriber) -> None:
        """The subscriber's stream has started writing: the send deadline and keep-alives watch it now."""
        self.streams.add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self.streams.discard(sub)

    def expire_sends(self, now: float, timeout_s: float) -> int:
        """Cancel the streams whose write has been blocked longer than ``timeout_s`` (loop time); how many."""
        expired = 0
        for sub in self.streams:
            if sub.sending_since and now - sub.sending_since > timeout_s and not sub.timed_out \
                    and sub.task is not None:
                sub.timed_out = True
                self.subscribers.discard(sub)
                sub.task.cancel()
                expired += 1
        return expired

    def due_pings(self, now: float, ping_s: float) -> int:
        """Wake the streams that wrote nothing for ``ping_s`` (loop time) to send a keep-alive; how many."""
        due = 0
        for sub in self.streams:
            if not sub.ping_due and not sub.sending_since and sub.last_write and now - sub.last_write >= ping_s:
                sub.ping_due = True
                sub.wake.set()
                due += 1
        return due

    def finish_restore(self) -> None:
        """Put the restored events (older ids) in front of the ring; resumes may go ahead."""
        if self._restoring:
            merged = sorted(self._restoring, key=lambda e: e.id) + list(self.ring)
            self.ring = deque(merged[-self.ring.maxlen:] if self.ring.maxlen else merged, maxlen=self.ring.maxlen)
            self._restoring = []
        self.restored.set()

    def replay_after(self, last_id: int, event_filter: EventFilter) -> list[Event] | None:
        """Events after ``last_id`` matching the filter, or None when the ring no longer reaches back that far
        (or has a gap: a journaled record that could not be read again)."""
        if last_id > self.last_id:
            return None  # an id from another process's lifetime
        if last_id == self.last_id:
            return []
        if not self.ring or self.ring[0].id > last_id + 1:
            return None
        start = last_id + 1 - self.ring[0].id
        if start < len(self.ring) and self.ring[start].id == last_id + 1 and self.ring[-1].id == self.last_id \
                and self.last_id - self.ring[start].id == len(self.ring) - 1 - start:  # contiguous: the usual case
            return [e for i, e in enumerate(self.ring) if i >= start and event_filter.matches(e)]
        after = [e for e in self.ring if e.id > last_id]  # a gap somewhere (a restored event could not be read)
        if after and after[0].id == last_id + 1 and after[-1].id == self.last_id and \
                after[-1].id - after[0].id == len(after) - 1:
            return [e for e in after if event_filter.matches(e)]
        return None

    def close(self) -> None:
        """Tell every stream to finish (server shutdown)."""
        self.closed = True
        for sub in list(self.subscribers):
            sub.close()
        self.subscribers.clear()
