"""Incidents through the real Kafka into the API: REST with filters, SSE events with Last-Event-ID resume.

The incident records are those of a real model's predictions (see real_incidents.py), produced to a real
topic step by step with the predictions, alerts and readings of the same steps.
"""

from __future__ import annotations

import pytest
from api_harness import wait_until
from sse_reader import read_events

pytestmark = pytest.mark.integration


def _latest(records: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for r in records:
        latest[r["incident_id"]] = r
    return latest


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "received_ms"}


def _produce_until_incidents(timeline, real_incidents, served_api, closed: bool = False) -> list[dict]:
    """Produce steps until the produced ones hold an incident (a closed one if asked); the records so far."""
    def produced() -> list[dict]:
        steps = set(timeline.steps[: timeline.produced])
        return [r for r in real_incidents if r["updated_at"] in steps]

    while not produced() or (closed and not any(r["state"] == "CLOSED" for r in produced())):
        timeline.produce_next()
    want = produced()
    book = served_api.runtime.incidents
    wait_until(lambda: {k: _strip(v) for k, v in book.latest.items()} == _latest(want), message="incidents")
    return want


def test_the_real_hours_have_incidents(real_incidents) -> None:
    assert any(r["event"] == "OPENED" for r in real_incidents)
    assert any(r["event"] == "CLOSED" for r in real_incidents)


def test_rest_serves_open_first_with_filters(served_api, timeline, real_incidents) -> None:
    want = _produce_until_incidents(timeline, real_incidents, served_api, closed=True)
    latest = _latest(want)
    with served_api.client() as client:
        rows = client.get("/incidents", params={"limit": 1000}).json()
        assert [_strip(r) for r in rows] == sorted(
            latest.values(), key=lambda r: ({"OPEN": 0, "CLEARING": 1, "CLOSED": 2}[r["state"]], -r["updated_at"],
                                            r["incident_id"]))
        closed = client.get("/incidents", params={"state": "CLOSED"}).json()
        assert closed and {r["incident_id"] for r in closed} == {k for k, r in latest.items() if r["state"] == "CLOSED"}
        open_ = client.get("/incidents", params=[("state", "OPEN"), ("state", "CLEARING")]).json()
        assert {r["incident_id"] for r in open_} == {k for k, r in latest.items() if r["state"] != "CLOSED"}
        severe = client.get("/incidents", params={"min_severity": "SEVERE"}).json()
        assert {r["incident_id"] for r in severe} == {k for k, r in latest.items() if r["severity"] == "SEVERE"}
        some = next(iter(latest.values()))
        sensor = some["sensor_ids"][0]
        by_sensor = client.get("/incidents", params={"sensor": sensor}).json()
        assert {r["incident_id"] for r in by_sensor} == {k for k, r in latest.items() if sensor in r["sensor_ids"]}
        assert len(client.get("/incidents", params={"limit": 1}).json()) == 1
        end = some["closed_at"] or some["updated_at"]
        ranged = client.get("/incidents", params={"since_ms": some["opened_at"], "until_ms": end}).json()
        assert {r["incident_id"] for r in ranged} == {
            k for k, r in latest.items() if (r["closed_at"] or r["updated_at"]) >= some["opened_at"]
            and r["opened_at"] <= end}
        assert some["incident_id"] in {r["incident_id"] for r in ranged}
        gone = next(r for r in latest.values() if r["state"] == "CLOSED")
        after = client.get("/incidents", params={"since_ms": gone["closed_at"] + 1, "limit": 1000}).json()
        assert gone["incident_id"] not in {r["incident_id"] for r in after}
        detail = client.get(f"/incidents/{some['incident_id']}").json()
        assert [_strip(s) for s in detail["states"]] == [r for r in want if r["incident_id"] == some["incident_id"]]
        assert client.get("/incidents/nope@2012-01-01T00:00Z").status_code == 404
        assert client.get("/incidents", params={"since_ms": 5, "until_ms": 4}).json() == []  # an empty range
        unknown = client.get("/incidents", params={"sensor": "bogus"})
        assert unknown.status_code == 404 and "unknown sensor id" in unknown.text, unknown.text
        for params, needle in (({"limit": 0}, "greater than"),
                               ({"limit": 1001}, "less than"), ({"min_severity": "LOUD"}, "SEVERE"),
                               ({"state": "GONE"}, "CLEARING")):
            response = client.get("/incidents", params=params)
            assert response.status_code == 422 and needle in response.text, response.text


def test_a_replay_of_the_same_records_changes_nothing(served_api, timeline, real_incidents, producer) -> None:
    want = _produce_until_incidents(timeline, real_incidents, served_api)
    book = served_api.runtime.incidents
    before_id, before_stale = served_api.runtime.hub.last_id, book.counts["stale_incident"]
    with served_api.client() as client:
        before = client.get("/incidents", params={"limit": 1000}).json()
        producer.send("incident", want)
        wait_until(lambda: book.counts["stale_incident"] >= before_stale + len(want), message="replayed records")
        assert client.get("/incidents", params={"limit": 1000}).json() == before
    assert served_api.runtime.hub.last_id == before_id  # nothing re-published to the streams


def test_sse_incident_events_and_last_event_id_resume(served_api, timeline, real_incidents) -> None:
    _produce_until_incidents(timeline, real_incidents, served_api)
    later = [i for i in range(timeline.produced, len(timeline.steps))
             if sum(r["updated_at"] == timeline.steps[i] for r in real_incidents) >= 2]
    assert later, "a later step with two or more incident records"
    with served_api.client() as client:
        with client.stream("GET", "/stream", params={"types": "incident"}) as response:
            events = read_events(response)
            snapshot = next(events)
            assert snapshot.event == "snapshot"
            assert {i["incident_id"] for i in snapshot.data["incidents"]} == set(served_api.runtime.incidents.latest)
            while timeline.produced <= later[0]:
                timeline.produce_next()
            step = timeline.steps[later[0]]
            expected = [r for r in real_incidents if r["updated_at"] == step]
            got = []
            for event in events:
                assert event.event == "incident"
                if event.data["updated_at"] == step:
                    got.append(event)
                if len(got) == len(expected):
                    break
        assert sorted((_strip(e.data)["incident_id"], e.data["event"]) for e in got) == sorted(
            (r["incident_id"], r["event"]) for r in expected)
        first = min(got, key=lambda e: e.id)
        with client.stream("GET", "/stream", params={"types": "incident"},
                           headers={"Last-Event-ID": str(first.id)}) as response:
            events = read_events(response)
            resumed = [next(events) for _ in range(len(got) - 1)]
        assert [e.id for e in resumed] == sorted(e.id for e in got)[1:]
        assert all(e.event == "incident" for e in resumed)
