"""Step frames (``/stream?batch=true``): a run of predictions as one column event that gives the records back."""

from __future__ import annotations

import json

import pytest

from api.frames import encode_events
from api.hub import EventFilter, Hub


def _prediction(sensor: str, horizon: int, speed: float) -> tuple:
    data = {"sensor_id": sensor, "event_time": 1_000, "target_time": 1_000 + horizon * 60_000, "horizon_min": horizon,
            "predicted_speed_mph": speed, "lower_mph": speed - 5.0, "upper_mph": speed + 5.0, "coverage": 0.9,
            "congestion": "FREE_FLOW" if speed >= 50 else "HEAVY", "model_version": "v1", "processing_time": 2_000,
            "received_ms": 3_000.5}
    return "prediction", sensor, horizon, 1, data


def _frames(payload: bytes) -> list[tuple[int, str, dict]]:
    out = []
    for block in payload.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return out


def _rows(frame: dict) -> list[dict]:
    return [{**frame["const"], **{k: v[i] for k, v in frame["cols"].items()}} for i in range(frame["n"])]


def test_a_run_of_predictions_is_one_frame_that_gives_the_records_back() -> None:
    hub = Hub(ring_size=100, queue_size=1000)
    items = [_prediction(f"s{i}", h, 40.0 + i + h / 7) for i in range(5) for h in (15, 30, 60)]
    alert = ("alert", "s1", 15, 3, {"sensor_id": "s1", "severity": "CRITICAL", "received_ms": 3_000.5})
    events = hub.publish([*items[:6], alert, *items[6:]])
    frames = _frames(encode_events(events))
    assert [(i, kind) for i, kind, _ in frames] == [(6, "predictions"), (7, "alert"), (16, "predictions")]
    first, second = frames[0][2], frames[2][2]
    assert first["n"] == 6 and first["first_id"] == 1 and second["n"] == 9 and second["first_id"] == 8
    assert first["const"]["model_version"] == "v1" and "sensor_id" in first["cols"]
    expected = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items() if k != "received_ms"}
                for _, _, _, _, d in items]
    assert _rows(first) + _rows(second) == expected
    assert first["received_ms"] == 3_000.5
    unbatched = b"".join(e.frame for e in events)
    assert len(encode_events(events)) < len(unbatched) / 2  # the point: far fewer bytes per step


def test_batched_subscribers_share_one_frame_and_count_events_for_the_slow_client_policy() -> None:
    import asyncio

    async def main() -> None:
        hub = Hub(ring_size=100, queue_size=10)
        batched = [hub.subscribe(EventFilter(batched=True)) for _ in range(2)]
        plain = hub.subscribe(EventFilter())
        hub.publish([_prediction(f"s{i}", 15, 50.0) for i in range(4)])
        assert batched[0].batches[0] is batched[1].batches[0]  # encoded once, shared
        assert batched[0].pending == 4 == plain.pending
        assert b"event: predictions" in batched[0].batches[0].payload
        assert plain.batches[0].payload.count(b"event: prediction\n") == 4
        hub.publish([_prediction(f"s{i}", 15, 50.0) for i in range(7)])  # 11 > 10: both kinds lag alike
        assert all(s.lagged for s in [*batched, plain])

    asyncio.run(main())


@pytest.mark.integration
def test_a_step_arrives_as_frames_over_kafka_and_resumes_by_id(served_api, timeline) -> None:
    """/stream?batch=true: a produced step's predictions come back as column frames holding exactly its records."""
    from sse_reader import read_events

    with served_api.client() as client:
        with client.stream("GET", "/stream", params={"types": "prediction", "batch": "true"}) as response:
            events = read_events(response)
            assert next(events).event == "snapshot"
            index = timeline.produce_next()
            want = timeline.step_records(index, "prediction")
            frames = []
            while sum(f.data["n"] for f in frames) < len(want):
                event = next(events)
                assert event.event == "predictions"
                frames.append(event)
        got = [row for f in frames for row in _rows(f.data)]
        key = lambda r: (r["sensor_id"], r["horizon_min"])  # noqa: E731
        assert sorted(map(key, got)) == sorted(map(key, want))
        by_key = {key(r): r for r in want}
        for row in got:
            assert row["predicted_speed_mph"] == round(by_key[key(row)]["predicted_speed_mph"], 3)
            assert row["event_time"] == by_key[key(row)]["event_time"]
        ids = [f.id for f in frames]
        assert ids == sorted(ids) and frames[0].data["first_id"] <= ids[0]
        # resume after the step's first event (inside the first frame): the other events, as frames, by id
        first_id = frames[0].data["first_id"]
        with client.stream("GET", "/stream", params={"types": "prediction", "batch": "true"},
                           headers={"Last-Event-ID": str(first_id)}) as response:
            events = read_events(response)
            rest = []
            while sum(f.data["n"] for f in rest) < len(want) - 1:
                event = next(events)
                assert event.event == "predictions" and event.id > first_id
                rest.append(event)
        assert sum(f.data["n"] for f in rest) == len(want) - 1 and rest[-1].id == ids[-1]
        assert [row for f in rest for row in _rows(f.data)] == got[1:]
