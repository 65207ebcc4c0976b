"""GET /stream over real HTTP and the real Kafka: snapshot, filtered live events, resume, lag, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from api_harness import serve, wait_until
from prometheus_client import generate_latest
from sse_reader import read_events

from api.settings import ApiSettings

pytestmark = pytest.mark.integration


def _next_events(events, count: int, kinds: set[str]) -> list:
    got = []
    for event in events:
        if event.event in kinds:
            got.append(event)
            if len(got) == count:
                return got
    raise AssertionError(f"the stream ended after {len(got)} of {count} events")


def test_snapshot_then_only_the_filtered_live_predictions(served_api, timeline):
    if timeline.produced == 0:
        timeline.produce_next()
    params = {"sensors": "773869,717458", "horizon": 15, "types": "prediction"}
    with served_api.client() as client, client.stream("GET", "/stream", params=params) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)
        snapshot = next(events)
        assert snapshot.event == "snapshot" and snapshot.id == snapshot.data["last_event_id"]
        assert {(p["sensor_id"], p["horizon_min"]) for p in snapshot.data["predictions"]} == \
            {("773869", 15), ("717458", 15)}
        assert snapshot.data["readings"] == [] and snapshot.data["alerts"] == []
        index = timeline.produce_next()
        live = _next_events(events, 2, {"prediction", "reading", "alert"})
    assert all(e.event == "prediction" for e in live)
    assert sorted(e.data["sensor_id"] for e in live) == ["717458", "773869"]
    for event in live:
        produced = timeline.prediction(index, event.data["sensor_id"], 15)
        assert event.data["predicted_speed_mph"] == produced["predicted_speed_mph"]
        assert event.data["event_time"] == timeline.steps[index]
        assert event.id > snapshot.id
        assert event.data["received_ms"] > 0


def test_last_event_id_resumes_exactly_after_the_missed_events(served_api, timeline):
    if timeline.produced == 0:
        timeline.produce_next()
    params = {"sensors": "773869"}
    with served_api.client() as client:
        with client.stream("GET", "/stream", params=params) as response:
            snapshot = next(read_events(response))
        last_id = snapshot.id
        index = timeline.produce_next()
        hub = served_api.runtime.hub
        wait_until(lambda: sum(1 for e in hub.ring if e.id > last_id and e.sensor_id == "773869") >= 4,
                   message="the step to reach the hub")
        expected = [e.id for e in hub.replay_after(last_id, _sensor_filter("773869"))]
        headers = {"Last-Event-ID": str(last_id)}
        with client.stream("GET", "/stream", params=params, headers=headers) as response:
            events = read_events(response)
            resumed = [next(events) for _ in range(len(expected))]
    assert all(e.event != "snapshot" for e in resumed)
    assert [e.id for e in resumed] == expected
    kinds = sorted(e.event for e in resumed)
    assert kinds.count("prediction") == 3 and "reading" in kinds
    assert {e.data["event_time"] for e in resumed if e.event == "prediction"} == {timeline.steps[index]}


def _sensor_filter(sensor_id: str):
    from api.hub import EventFilter

    return EventFilter(sensors=frozenset({sensor_id}))


def test_a_client_that_falls_behind_gets_lagged_then_can_resume(kafka_bootstrap, api_topics, model_registry, timeline):
    if timeline.produced == 0:
        timeline.produce_next()
    settings = ApiSettings(port=_port(), bootstrap_servers=kafka_bootstrap, model_registry=model_registry[0],
                           metadata_refresh_s=1.0, rate_limit_per_s=0, client_queue_size=20, backfill_per_partition=0)
    app, thread, server = serve(settings, api_topics)
    try:
        wait_until(lambda: len(app.state.runtime.feed.assigned) == 8, message="partitions")
        base = f"http://127.0.0.1:{settings.port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            with client.stream("GET", "/stream") as response:
                events = read_events(response)
                assert next(events).event == "snapshot"
                timeline.produce_next()  # one step is 828 records: a burst far beyond 20 queued events
                rest = list(events)  # the server closes the stream after the lagged event
            assert rest[-1].event == "lagged"
            lagged = rest[-1].data
            assert lagged["queue_size"] == 20 and "Last-Event-ID" in lagged["message"]
            assert app.state.runtime.metrics.sse_lagged._value.get() == 1
            headers = {"Last-Event-ID": str(lagged["last_event_id"])}
            with client.stream("GET", "/stream", params={"sensors": "773869"}, headers=headers) as response:
                first = next(read_events(response))
            assert first.event != "snapshot" and first.id > lagged["last_event_id"]
    finally:
        server.should_exit = True
        thread.join(30)


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_traffic_serve_says_bye_to_streams_on_sigterm(kafka_bootstrap, api_topics, model_registry, fresh_topic):
    port = _port()
    # Its own empty alerts and incidents topics: the session's topics hold other tests' alerts, which the API
    # re-reads at start-up and may still be publishing when the stream connects (they are not what is tested).
    env = dict(os.environ, TRAFFIC_API_PORT=str(port), TRAFFIC_API_BOOTSTRAP_SERVERS=kafka_bootstrap,
               TRAFFIC_API_MODEL_REGISTRY=str(model_registry[0]), TRAFFIC_API_SHUTDOWN_GRACE_S="5",
               TRAFFIC_TOPICS_PREDICTIONS=api_topics.predictions, TRAFFIC_TOPICS_ALERTS=fresh_topic("bye-alerts"),
               TRAFFIC_TOPICS_AGGREGATES=api_topics.aggregates, TRAFFIC_TOPICS_INCIDENTS=fresh_topic("bye-incidents"),
               TRAFFIC_API_RATE_LIMIT_PER_S="0")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180  # `traffic` imports every sub-command (Beam): slow on a busy machine
        while True:
            try:
                if httpx.get(base + "/dashboard/config.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "traffic serve did not start"
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=30) as client, \
                client.stream("GET", "/stream", params={"types": "alert", "x": uuid.uuid4().hex}) as response:
            events = read_events(response)
            assert next(events).event == "snapshot"
            proc.send_signal(signal.SIGTERM)
            rest = list(events)
        assert [e.event for e in rest] == ["bye"]
        # uvicorn finishes its graceful shutdown, then re-raises the signal it caught
        assert proc.wait(30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_keep_alive_comments_flow_while_no_event_matches(served_api):
    params = {"sensors": "773869", "types": "alert", "min_severity": "CRITICAL", "horizon": 15}
    with served_api.client() as client, client.stream("GET", "/stream", params=params) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("id: ")  # the snapshot
        comment = next(line for line in lines if line.startswith(":"))
    assert comment.startswith(": ping")  # served_api pings every second


def test_an_unknown_last_event_id_gets_a_fresh_snapshot(served_api, timeline):
    if timeline.produced == 0:
        timeline.produce_next()
    headers = {"Last-Event-ID": str(10**12)}  # from another server lifetime: cannot be resumed
    with served_api.client() as client, \
            client.stream("GET", "/stream", params={"sensors": "773869"}, headers=headers) as response:
        first = next(read_events(response))
    assert first.event == "snapshot" and first.id == first.data["last_event_id"]
    assert {p["horizon_min"] for p in first.data["predictions"]} == {15, 30, 60}


def test_a_stream_whose_write_stays_blocked_is_ended_by_the_send_deadline(tmp_path):
    """The real route and sse-starlette response; the server's send is a double that never returns."""
    import asyncio

    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.hub import EventFilter
    from api.routes.stream import stream

    settings = ApiSettings(model_registry=tmp_path / "registry", send_timeout_s=10.0, use_store=False)
    with TestClient(create_app(settings, start_feed=False)) as client:
        runtime = client.app.state.runtime

        async def scenario() -> tuple[list[str], bool]:
            sent: list[str] = []
            blocked = asyncio.Event()
            disconnected = asyncio.Event()

            async def send(message) -> None:  # a client that never reads: the first body write never completes
                sent.append(message["type"])
                if message["type"] == "http.response.body":
                    blocked.set()
                    await asyncio.Event().wait()

            async def receive():
                await disconnected.wait()
                return {"type": "http.disconnect"}

            response = await stream(runtime, EventFilter(), None, False)
            scope = {"type": "http", "method": "GET", "path": "/stream", "headers": []}
            task = asyncio.create_task(response(scope, receive, send))
            await asyncio.wait_for(blocked.wait(), 10)
            loop = asyncio.get_running_loop()
            assert runtime.hub.expire_sends(loop.time() + 5.0, 10.0) == 0  # within the deadline: kept
            assert runtime.hub.expire_sends(loop.time() + 10.5, 10.0) == 1  # past it: cancelled
            await asyncio.wait_for(task, 10)  # the response ends by itself
            disconnected.set()
            return sent, not runtime.hub.streams

        sent, gone = client.portal.call(scenario)
    assert sent == ["http.response.start", "http.response.body"] and gone
    assert "traffic_api_sse_send_timeouts_total 1.0" in generate_latest(runtime.metrics.registry).decode()
