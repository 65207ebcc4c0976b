"""Which test left a Kafka client open, and where in the code it was made.

Every librdkafka client (producer, consumer, admin client) runs one native
thread named ``rdk:main`` until it is closed or destroyed, so the open clients
of this process are its ``rdk:main`` threads (Linux ``/proc``). :func:`install`
swaps ``confluent_kafka``'s ``Producer``, ``Consumer`` and ``AdminClient`` for
subclasses that remember the call stack that made each client (keyed by its
thread), before any project module imports them; ``tests/conftest.py`` also
notes after each test which threads it left behind. At the end of the session
:meth:`ClientLedger.report` names, for every client still open, the test and
the code that made it.
"""

from __future__ import annotations

import sysconfig
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import confluent_kafka
from confluent_kafka import admin as kafka_admin

__all__ = ["ClientLedger", "client_threads", "install"]

_STACK_FRAMES = 6  # the project frames above the constructor kept for the report
_STDLIB = sysconfig.get_paths()["stdlib"]
_NAMING_S = 0.05  # a new librdkafka thread has named itself by then


def _library(filename: str) -> bool:
    """Whether a frame is Python's, pytest's, Beam's or another installed library's (not the project's)."""
    return "site-packages" in filename or filename.startswith(("<", _STDLIB))


def client_threads() -> set[int]:
    """The thread ids of the librdkafka clients open in this process (one ``rdk:main`` thread each).

    A thread ``rdk:main`` starts (a broker thread) is called ``rdk:main`` too until it names itself, so a
    thread counts only if it still has that name a moment later.
    """
    first = _main_threads()
    if not first:
        return first
    time.sleep(_NAMING_S)
    return first & _main_threads()


def _main_threads() -> set[int]:
    tids = set()
    for comm in Path("/proc/self/task").glob("*/comm"):
        try:
            if comm.read_text().strip() == "rdk:main":
                tids.add(int(comm.parent.name))
        except (OSError, ValueError):  # a thread that just ended
            pass
    return tids


class ClientLedger:
    """Client thread id -> the test during which it appeared, and the stack that made the client."""

    def __init__(self) -> None:
        self.tests: dict[int, str] = {}
        self.stacks: dict[int, str] = {}
        self.running: str | None = None  # the test running now
        self.last_ended: str | None = None  # the last test that ended, for clients made between tests

    def made(self, before: set[int], kind: str) -> None:
        frames = [f for f in traceback.extract_stack()[:-2] if not _library(f.filename)]
        stack = "".join(traceback.format_list(frames[-_STACK_FRAMES:]))
        new = client_threads() - before
        # Clients made at the same moment in other threads (a pipeline's workers) also show up as new here:
        # a thread is only claimed outright when it is the one new thread.
        for tid in new:
            if len(new) == 1 or tid not in self.stacks:
                together = "" if len(new) == 1 else f" (or by one of {len(new) - 1} made at the same moment)"
                self.stacks[tid] = f"{kind} made at{together}\n{stack}"
            if self.running is not None:  # (a thread id can be reused: a new client's name replaces the old one's)
                self.tests[tid] = self.running
            elif self.last_ended is not None:  # a worker thread of a job an ended test left running
                self.tests[tid] = f"no test: made after {self.last_ended} ended (a job it left running?)"

    def test_started(self, nodeid: str) -> None:
        self.running = nodeid

    def test_ended(self, before: set[int], nodeid: str) -> None:
        for tid in client_threads() - before:
            self.tests.setdefault(tid, nodeid)  # clients made outside confluent_kafka's classes too
        self.running, self.last_ended = None, nodeid

    def report(self, open_tids: set[int]) -> str:
        lines = []
        for tid in sorted(open_tids):
            lines.append(f"- client thread {tid}, opened during {self.tests.get(tid, 'the session set-up')}")
            lines.append(self.stacks.get(tid, "  (made outside confluent_kafka's Python classes)\n").rstrip())
        return "\n".join(lines)


def _tracking_init(init: Callable[..., None], name: str, ledger: ClientLedger) -> Callable[..., None]:
    def __init__(self, *args, **kwargs) -> None:  # noqa: N807 - a constructor
        before = client_threads()
        init(self, *args, **kwargs)
        ledger.made(before, name)

    return __init__


_LEDGER: ClientLedger | None = None


def install() -> ClientLedger:
    """Makes every client created from now on remember its creator; returns the ledger they write to.

    ``Producer`` and ``Consumer`` are C types: they are replaced by subclasses (as confluent_kafka's own
    ``SerializingProducer`` subclasses them). ``AdminClient`` is a Python class whose ``__init__`` names
    itself, so its ``__init__`` is wrapped in place instead.
    """
    global _LEDGER  # noqa: PLW0603 - one ledger per process, however often this is called
    if _LEDGER is not None:
        return _LEDGER
    ledger = _LEDGER = ClientLedger()
    for name in ("Producer", "Consumer"):
        base = getattr(confluent_kafka, name)
        setattr(confluent_kafka, name, type(name, (base,), {
            "__init__": _tracking_init(base.__init__, name, ledger), "__doc__": base.__doc__}))
    admin = kafka_admin.AdminClient
    admin.__init__ = _tracking_init(admin.__init__, "AdminClient", ledger)
    return ledger
