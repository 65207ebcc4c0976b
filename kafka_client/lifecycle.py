"""The Kafka clients a long-lived owner holds open (Beam DoFns), in one process-wide registry that can close them.

A Beam DoFn opens its producer or consumer in ``setup`` and closes it in
``teardown``, but a runner never tears down the DoFns of a cancelled job: the
SDK harness (inside the submitting process with LOOPBACK, or a long-lived
worker pool) keeps their bundle processors, and the open clients reconnect to
their broker, and log every refusal, until the process ends. So every such
client is tracked here, with the topics it serves, and closed by whichever
comes first:

* its owner (``close_client`` in ``teardown``);
* :func:`close_clients` by topic: whoever cancels a job in this process (the
  command line, a test) closes the clients of that job's topics;
* idleness: a client unused for :data:`IDLE_CLOSE_S` is closed by a reaper
  thread (a cancelled job's clients are never used again; a live reader is used
  every second, and a live writer that was idle that long opens a new producer
  at its next bundle);
* the process's exit (``atexit``), so a worker that shuts down flushes its producers.

An owner holds :attr:`TrackedClient.lock` while it calls its client (a
reader's whole poll, a writer's ``produce`` calls and flush) and checks
:attr:`TrackedClient.closed` under it; closing takes the same lock, so a client is
never closed under a running call. The cost on the hot path is one uncontended
lock and a clock read per call, not per record.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["IDLE_CLOSE_S", "TrackedClient", "close_client", "close_clients", "close_idle", "open_clients", "track"]

log = logging.getLogger(__name__)

IDLE_CLOSE_S = 600.0  # a tracked client unused this long belongs to a job that is gone: closed
_REAP_EVERY_S = 60.0
_FLUSH_S = 5.0  # what closing waits for a producer's queued records (teardown passes its own)
_LOCK_WAIT_S = 15.0  # longer than any one call an owner makes under the lock (a metadata request: 10 s)


class TrackedClient:
    """A client in the registry: the client, the topics it serves, and the lock its owner calls it under."""

    __slots__ = ("client", "closed", "lock", "topics", "used_at")

    def __init__(self, client: Any, topics: Iterable[str]) -> None:
        self.client = client
        self.topics = frozenset(topics)
        self.lock = threading.Lock()
        self.closed = False
        self.used_at = time.monotonic()

    def touch(self) -> None:
        """Marks the client used now (call it under :attr:`lock`)."""
        self.used_at = time.monotonic()


_registry: dict[int, TrackedClient] = {}
_registry_lock = threading.Lock()
_reaper: threading.Thread | None = None


def track(client: Any, topics: Iterable[str]) -> TrackedClient:
    """Registers ``client`` (a confluent-kafka Producer or Consumer) serving ``topics``; returns its entry."""
    entry = TrackedClient(client, topics)
    with _registry_lock:
        _registry[id(entry)] = entry
    _start_reaper()
    return entry


def open_clients() -> list[TrackedClient]:
    """The tracked clients not closed yet."""
    with _registry_lock:
        return list(_registry.values())


def close_client(entry: TrackedClient, flush_s: float = _FLUSH_S, lock_wait_s: float = _LOCK_WAIT_S) -> bool:
    """Flushes (a producer, up to ``flush_s``) and closes one client, once; False if it was already closed.

    Waits up to ``lock_wait_s`` for its owner's running call; a call stuck longer than that (a harness
    thread blocked for good) will not touch the client again, so it is closed anyway.
    """
    with _registry_lock:
        _registry.pop(id(entry), None)
    got = entry.lock.acquire(timeout=lock_wait_s)
    try:
        if entry.closed:
            return False
        entry.closed = True
        _close(entry.client, flush_s)
        return True
    finally:
        if got:
            entry.lock.release()


def close_clients(topics: Iterable[str] | None = None, flush_s: float = _FLUSH_S) -> int:
    """Closes every tracked client serving any of ``topics`` (every one when None); returns how many."""
    wanted = None if topics is None else frozenset(topics)
    chosen = [e for e in open_clients() if wanted is None or e.topics & wanted]
    return sum(close_client(e, flush_s) for e in chosen)


def close_idle(idle_s: float = IDLE_CLOSE_S, now: float | None = None) -> int:
    """Closes the tracked clients unused for ``idle_s`` whose owner is not calling them; returns how many."""
    now = time.monotonic() if now is None else now
    closed = 0
    for entry in open_clients():
        if now - entry.used_at < idle_s or not entry.lock.acquire(blocking=False):
            continue
        try:
            if not entry.closed and now - entry.used_at >= idle_s:
                entry.closed = True
                with _registry_lock:
                    _registry.pop(id(entry), None)
                _close(entry.client, _FLUSH_S)
                closed += 1
        finally:
            entry.lock.release()
    return closed


def _close(client: Any, flush_s: float) -> None:
    try:
        if hasattr(client, "flush"):  # a producer: deliver what it still holds first, ...
            if client.flush(flush_s):
                client.purge()  # ... and drop what it could not (its owner's bundle fails on the error reports):
                client.flush(0)  # closing a producer with records queued would wait their whole delivery timeout
        client.close()
    except Exception as exc:  # noqa: BLE001 - a client that fails to close is closed as far as it goes
        log.warning("closing a Kafka client: %s", exc)


def _reap() -> None:
    while True:
        time.sleep(_REAP_EVERY_S)
        if n := close_idle():
            log.info("closed %d Kafka client(s) unused for %.0f s (their job is gone)", n, IDLE_CLOSE_S)


def _start_reaper() -> None:
    global _reaper  # noqa: PLW0603 - one reaper per process
    if _reaper is None:
        with _registry_lock:
            if _reaper is None:
                _reaper = threading.Thread(target=_reap, name="kafka-client-reaper", daemon=True)
                _reaper.start()


def _forget_after_fork() -> None:
    """A forked child holds none of its parent's clients (librdkafka's threads are not copied) nor its reaper."""
    global _reaper, _registry_lock  # noqa: PLW0603 - the child's own
    _registry.clear()
    _registry_lock = threading.Lock()
    _reaper = None


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(close_clients)
