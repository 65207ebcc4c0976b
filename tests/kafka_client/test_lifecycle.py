"""The registry of long-lived Kafka clients (kafka_client/lifecycle.py) and the DoFns that open clients through it.

Doubles stand in for clients where only the registry's bookkeeping is checked; real librdkafka clients
(pointed at a port where no broker listens: a client starts its thread either way) where closing must
really end a client.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from apache_beam.utils.timestamp import Timestamp
from kafka_clients import client_threads

from kafka_client import make_producer
from kafka_client.lifecycle import TrackedClient, close_client, close_clients, close_idle, open_clients, track
from transforms.kafka_io import KafkaIOError, _WriteFn
from transforms.kafka_topic_reader import ReadTopicFn

NOWHERE = "127.0.0.1:1"


class _Client:
    """A client double: records flush and close calls in order."""

    def __init__(self, producer: bool, undelivered: int = 0) -> None:
        self.calls: list[tuple] = []
        if producer:  # flush() returns how many records it still holds
            self.flush = lambda timeout: self.calls.append(("flush", timeout)) or undelivered
            self.purge = lambda: self.calls.append(("purge",))

    def close(self) -> None:
        self.calls.append(("close",))


def _topic() -> str:
    return f"lifecycle-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tracked():
    """Entries the test tracks; any still open afterwards are closed (the registry is process-wide)."""
    made: list[TrackedClient] = []
    yield made
    for entry in made:
        close_client(entry, flush_s=0)


def test_close_clients_closes_the_clients_of_the_given_topics_only_and_each_once(tracked) -> None:
    mine, other = _topic(), _topic()
    producer, consumer, bystander = _Client(producer=True), _Client(producer=False), _Client(producer=True)
    tracked += [track(producer, [mine]), track(consumer, [mine, "x"]), track(bystander, [other])]
    assert close_clients([mine], flush_s=1.5) == 2
    assert producer.calls == [("flush", 1.5), ("close",)]  # a producer delivers what it holds, then closes
    assert consumer.calls == [("close",)]
    assert bystander.calls == []
    assert tracked[0].closed and tracked[1].closed and not tracked[2].closed
    assert {id(e) for e in open_clients()} >= {id(tracked[2])}
    assert not {id(e) for e in open_clients()} & {id(tracked[0]), id(tracked[1])}
    assert close_clients([mine]) == 0 and close_client(tracked[0]) is False
    assert producer.calls == [("flush", 1.5), ("close",)]  # not closed twice


def test_a_producer_that_cannot_deliver_is_purged_before_it_closes(tracked) -> None:
    producer = _Client(producer=True, undelivered=3)  # closing with records queued would wait out their timeout
    tracked.append(track(producer, [_topic()]))
    assert close_client(tracked[0], flush_s=2.0) is True
    assert producer.calls == [("flush", 2.0), ("purge",), ("flush", 0), ("close",)]


def test_closing_waits_for_the_owners_running_call(tracked) -> None:
    client = _Client(producer=False)
    entry = track(client, [_topic()])
    tracked.append(entry)
    entry.lock.acquire()  # the owner is in a call
    closer = threading.Thread(target=close_client, args=(entry,))
    closer.start()
    closer.join(0.5)
    assert closer.is_alive() and client.calls == [], "closed under a running call"
    entry.lock.release()  # the call ends
    closer.join()
    assert client.calls == [("close",)] and entry.closed


def test_close_idle_closes_only_clients_unused_that_long_and_not_in_a_call(tracked) -> None:
    idle, busy, fresh = _Client(False), _Client(False), _Client(False)
    tracked += [track(idle, [_topic()]), track(busy, [_topic()]), track(fresh, [_topic()])]
    now = tracked[2].used_at + 100.0
    tracked[0].used_at = tracked[1].used_at = now - 100.0
    tracked[2].used_at = now - 10.0
    with tracked[1].lock:  # its owner is calling it right now
        assert close_idle(idle_s=50.0, now=now) == 1
    assert idle.calls == [("close",)] and busy.calls == [] and fresh.calls == []
    assert close_idle(idle_s=50.0, now=now) == 1  # the call ended: now it goes too
    assert busy.calls == [("close",)] and fresh.calls == []


def test_a_real_producer_closed_through_the_registry_ends_its_client_thread() -> None:
    before = client_threads()
    entry = track(make_producer(NOWHERE), [_topic()])
    try:
        opened = client_threads() - before
        assert len(opened) == 1, opened
        entry.client.produce(next(iter(entry.topics)), b"never delivered")  # queued: the flush cannot deliver it
        assert close_clients(entry.topics, flush_s=0.1) == 1
    finally:
        close_client(entry, flush_s=0)
    assert not client_threads() & opened, "the closed producer still runs its thread"


def test_the_writer_reopens_after_a_cancel_closed_its_producer_and_fails_a_bundle_it_closed() -> None:
    topic = _topic()
    fn = _WriteFn(NOWHERE, topic, None, None, {"message.timeout.ms": 1000})
    fn.setup()
    try:
        fn.start_bundle()
        first = fn._client
        assert first in open_clients() and first.topics == {topic}
        assert close_clients([topic], flush_s=0) == 1  # the job was cancelled in this process
        with pytest.raises(KafkaIOError, match="closed during a bundle"):
            fn.process(b"value", timestamp=Timestamp(1))  # not produced to a closed client: the bundle fails
        fn.start_bundle()  # the next bundle (if the DoFn is used again) opens a new producer
        assert fn._client is not first and not fn._client.closed and fn._client in open_clients()
    finally:
        second = fn._client
        fn.teardown()
    assert second.closed and second not in open_clients()


def test_the_topic_reader_opens_a_new_consumer_once_its_consumer_was_closed() -> None:
    topic = _topic()
    fn = ReadTopicFn({"bootstrap.servers": NOWHERE, "group.id": "lifecycle"}, 0.0, commit_offsets=False)
    fn.setup()
    try:
        first = fn._client(topic)
        assert fn._client(topic) is first and first.topics == {topic}
        assert close_clients([topic]) == 1
        second = fn._client(topic)
        assert second is not first and not second.closed
    finally:
        fn.teardown()
    assert second.closed and not {id(first), id(second)} & {id(e) for e in open_clients()}
