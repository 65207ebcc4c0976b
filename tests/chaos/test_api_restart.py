"""The API restarted under connected SSE clients: they resume with Last-Event-ID and miss nothing, twice nothing.

``traffic serve`` runs with an event journal (``TRAFFIC_API_EVENT_JOURNAL``,
api/journal.py) while a replay flows through ``traffic stream`` on Prism. Three
SSE clients stay connected; mid-replay the API is stopped (SIGTERM) and started
again. Each client reconnects with the id of the last event it got, as a
browser's EventSource does. Asserted for every client: one snapshot only (at
its first connect: every later connect resumed), event ids strictly increasing
across the restart (nothing twice), and the events it got are exactly the
records of the topics the API serves (every prediction, alert and actual
reading, as a multiset: no gap). The streaming job's output is checked as in
every fault test (see :mod:`chaos_harness`).
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest
from chaos_harness import ChaosRun, wait_for
from sse_reader import read_events
from topic_contents import read_all

from schemas.codec import AvroCodec

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SPEED = 90.0
CLIENTS = 3
WAIT_S = 600.0


class _Client(threading.Thread):
    """An SSE client that reconnects with Last-Event-ID, as EventSource does."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.events: list[tuple[int, str, dict]] = []
        self.snapshots = 0
        self.connects = 0
        self.last_id: int | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            headers = {"Last-Event-ID": str(self.last_id)} if self.last_id is not None else {}
            try:
                with httpx.stream("GET", self.url, headers=headers, timeout=httpx.Timeout(10, read=60)) as response:
                    if response.status_code != 200:
                        raise httpx.HTTPError(f"status {response.status_code}")
                    self.connects += 1
                    for sse in read_events(response):
                        kind, data, event_id = sse.event, sse.data, sse.id
                        if kind == "snapshot":
                            self.snapshots += 1
                        elif kind in ("prediction", "alert", "reading"):
                            self.events.append((event_id, kind, data))
                        if event_id is not None:
                            self.last_id = event_id
                        if self.stop.is_set():
                            return
            except (httpx.HTTPError, OSError):
                pass
            self.stop.wait(0.5)


def _key(kind: str, data: dict) -> tuple:
    if kind == "reading":
        return kind, data["sensor_id"], data["time_ms"]
    if kind == "alert":
        return kind, data["alert_id"], data["processing_time"]
    return kind, data["sensor_id"], data["event_time"], data["horizon_min"], data["processing_time"]


def _served_records(run: ChaosRun) -> Counter:
    """What the API must stream: every record of its topics whose numbers are finite (JSON has no NaN)."""
    out: Counter = Counter()
    for field, kind, schema in (("predictions", "prediction", "prediction"), ("alerts", "alert", "alert"),
                                ("aggregates", "reading", "window_aggregate")):
        codec = AvroCodec(schema)
        for message in read_all(run.bootstrap, run.topics[field]):
            record = codec.decode(message.value())
            if not all(math.isfinite(v) for v in record.values() if isinstance(v, float)):
                continue
            data = ({"sensor_id": record["sensor_id"], "time_ms": record["window_start"]}
                    if kind == "reading" else record)
            out[_key(kind, data)] += 1
    return out


def test_sse_clients_resume_across_an_api_restart_with_no_gap_and_no_repeat(
        registered, kafka_bootstrap, fresh_topic, tmp_path) -> None:
    root, bundle = registered
    run = ChaosRun(kafka_bootstrap, fresh_topic, root, bundle, tmp_path)
    run.env["TRAFFIC_API_EVENT_JOURNAL"] = str(tmp_path / "events.journal")
    reference = run.reference()
    port = int(os.environ.get("TRAFFIC_API_PORT", "8000"))
    serve = ["serve", "--port", str(port), "--bootstrap", kafka_bootstrap]
    clients = [_Client(f"http://127.0.0.1:{port}/stream") for _ in range(CLIENTS)]
    try:
        api = run.command("serve-1", serve)
        wait_for(lambda: run.health(port)[0] == 200, 180, "the API became healthy", alive=api.exited)
        for client in clients:
            client.start()
        wait_for(lambda: all(c.connects for c in clients), 60, "every client connected")
        job = run.stream("prism", f"chaos-api-{uuid.uuid4().hex[:8]}")
        run.replay_in_background(SPEED)
        wait_for(lambda: all(any(k == "prediction" for _, k, _ in c.events) for c in clients), WAIT_S,
                 "every client got predictions", every_s=2, alive=job.exited)
        stopped_at = time.monotonic()
        assert api.stop() == 0, api.output()
        before = [len(c.events) for c in clients]
        api = run.command("serve-2", serve)
        back_s = wait_for(lambda: all(c.connects >= 2 for c in clients), 180, "every client reconnected",
                          alive=lambda: job.exited() or api.exited())
        back_s = time.monotonic() - stopped_at
        wait_for(run.replay_done, WAIT_S, "the replay finished", alive=job.exited)
        wait_for(run.all_arrived(reference), WAIT_S, "every prediction arrived", every_s=2, alive=job.exited)
        expected = _served_records(run)
        wait_for(lambda: all(len(c.events) >= sum(expected.values()) for c in clients), 120,
                 f"every client got {sum(expected.values())} events")
        time.sleep(3)  # anything more (a repeat) would arrive now
    finally:
        for client in clients:
            client.stop.set()
        run.stop_all()
        for client in clients:
            client.join(30)

    for n, client in enumerate(clients):
        ids = [event_id for event_id, _, _ in client.events]
        assert all(b > a for a, b in zip(ids, ids[1:], strict=False)), f"client {n}: ids not strictly increasing"
        assert client.snapshots == 1, f"client {n} got {client.snapshots} snapshots (a resume fell back)"
        got = Counter(_key(kind, data) for _, kind, data in client.events)
        assert got == expected, (f"client {n}: {sum((expected - got).values())} missing, "
                                 f"{sum((got - expected).values())} extra")
    counts = run.check_nothing_lost(reference)
    print(f"\nAPI restart under {CLIENTS} SSE clients: all reconnected {back_s:.1f} s after the stop began; "
          f"{before} events each before the restart, {sum(expected.values())} after the run, each exactly once "
          f"(ids {clients[0].events[0][0]}-{clients[0].events[-1][0]}); counts {counts}")
