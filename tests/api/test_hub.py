"""The fan-out hub in isolation: filters, ring-buffer resume, and the slow-client policy (synthetic events)."""

from __future__ import annotations

import asyncio
import json

from api.hub import CONGESTION_RANK, SEVERITY_RANK, EventFilter, Hub, encode_frame


def _prediction(sensor: str, horizon: int, congestion: str = "FREE_FLOW"):
    return ("prediction", sensor, horizon, CONGESTION_RANK[congestion],
            {"sensor_id": sensor, "horizon_min": horizon, "congestion": congestion})


def _ids(batches) -> list[int]:
    """Event ids in the encoded batches, in order."""
    return [int(line[4:]) for batch in batches for line in batch.payload.decode().splitlines()
            if line.startswith("id: ")]


def _alert(sensor: str, severity: str):
    return ("alert", sensor, 15, SEVERITY_RANK[severity], {"sensor_id": sensor, "severity": severity})


def test_encode_frame_is_one_sse_event_with_id_and_single_line_json():
    frame = encode_frame(7, "prediction", {"a": 1, "b": "x\ny"})
    assert frame == b'id: 7\nevent: prediction\ndata: {"a":1,"b":"x\\ny"}\n\n'
    assert json.loads(frame.split(b"data: ")[1]) == {"a": 1, "b": "x\ny"}


def test_ids_increase_and_filters_select_sensor_horizon_and_severity():
    async def run():
        hub = Hub(ring_size=100, queue_size=100)
        wanted = hub.subscribe(EventFilter(sensors=frozenset({"a"}), horizons=frozenset({15})))
        severe = hub.subscribe(EventFilter(kinds=frozenset({"alert"}), min_severity=SEVERITY_RANK["WARNING"]))
        congested = hub.subscribe(EventFilter(kinds=frozenset({"prediction"}),
                                              min_congestion=CONGESTION_RANK["HEAVY"]))
        events = hub.publish([_prediction("a", 15), _prediction("a", 30), _prediction("b", 15, "SEVERE"),
                              _alert("a", "INFO"), _alert("b", "CRITICAL")])
        assert [e.id for e in events] == [1, 2, 3, 4, 5]
        got = {name: _ids(sub.take())
               for name, sub in (("wanted", wanted), ("severe", severe), ("congested", congested))}
        assert got == {"wanted": [1, 4], "severe": [5], "congested": [3]}

    asyncio.run(run())


def test_replay_after_returns_exactly_the_missed_events_or_none_when_too_old():
    hub = Hub(ring_size=5, queue_size=10)
    hub.publish([_prediction(s, 15) for s in "abcdefg"])  # ids 1..7, ring keeps 3..7
    everything = EventFilter()
    assert [e.id for e in hub.replay_after(4, everything)] == [5, 6, 7]
    assert [e.id for e in hub.replay_after(2, everything)] == [3, 4, 5, 6, 7]
    assert hub.replay_after(1, everything) is None  # event 2 is gone: the client needs a snapshot
    assert hub.replay_after(7, everything) == []
    assert hub.replay_after(99, everything) is None  # an id from another server lifetime
    only_f = EventFilter(sensors=frozenset({"f"}))
    assert [e.id for e in hub.replay_after(3, only_f)] == [6]


def test_a_slow_client_is_marked_lagged_and_dropped_while_others_keep_receiving():
    async def run():
        hub = Hub(ring_size=100, queue_size=3)
        slow = hub.subscribe(EventFilter())
        fast = hub.subscribe(EventFilter())
        for _ in range(5):
            hub.publish([_prediction("a", 15)])
            fast.take()  # the fast client keeps up
        assert slow.lagged and slow not in hub.subscribers
        assert not fast.lagged and fast in hub.subscribers
        assert hub.lagged_total == 1
        assert slow.wake.is_set()  # its stream wakes up to report the lag at once
        assert _ids(slow.take()) == [1, 2, 3]

    asyncio.run(run())


def test_a_burst_larger_than_the_queue_lags_at_once():
    async def run():
        hub = Hub(ring_size=100, queue_size=3)
        sub = hub.subscribe(EventFilter())
        hub.publish([_prediction("a", 15) for _ in range(4)])
        assert sub.lagged and sub.take() == []

    asyncio.run(run())


def test_clients_with_equal_filters_share_the_matched_batch():
    async def run():
        hub = Hub(ring_size=100, queue_size=10)
        one = hub.subscribe(EventFilter(horizons=frozenset({15})))
        two = hub.subscribe(EventFilter(horizons=frozenset({15})))
        hub.publish([_prediction("a", 15), _prediction("a", 30)])
        first, second = one.take(), two.take()
        assert first[0] is second[0] and _ids(first) == [1]

    asyncio.run(run())


def test_close_wakes_every_subscriber_and_later_subscribers_are_closed_at_once():
    async def run():
        hub = Hub(ring_size=10, queue_size=10)
        sub = hub.subscribe(EventFilter())
        hub.close()
        assert sub.closed and sub.wake.is_set()
        late = hub.subscribe(EventFilter())
        assert late.closed and late not in hub.subscribers

    asyncio.run(run())


def test_an_event_frame_is_encoded_on_first_use_only_and_then_shared():
    hub = Hub(ring_size=10, queue_size=10)
    hub.subscribe(EventFilter(batched=True))  # a step-frame client: needs no single-event frames
    event, other = hub.publish([_prediction("a", 15), _prediction("b", 15)])  # one column frame for both
    assert event.encoded is None and other.encoded is None
    frame = event.frame
    assert frame == encode_frame(1, "prediction", event.data) and event.frame is frame


def test_expire_sends_cancels_only_streams_whose_write_is_blocked_past_the_deadline():
    async def run():
        hub = Hub(ring_size=10, queue_size=2)
        stuck, fresh, idle, lagged = (hub.subscribe(EventFilter()) for _ in range(4))
        for sub in (stuck, fresh, idle, lagged):
            hub.opened(sub)
            sub.task = asyncio.get_running_loop().create_task(asyncio.sleep(60))
        stuck.sending_since, fresh.sending_since, lagged.sending_since = 100.0, 108.0, 99.0
        hub.publish([_prediction(s, 15) for s in "abc"])  # 3 events > queue of 2: every subscriber lags ...
        assert hub.subscribers == set() and len(hub.streams) == 4  # ... but their streams are still open
        hub.subscribers.update((stuck, fresh, idle))  # (only `lagged` really lagged in this scenario)
        assert hub.expire_sends(now=111.0, timeout_s=10.0) == 2  # stuck 11 s and lagged 12 s; fresh 3 s, idle none
        await asyncio.sleep(0)
        assert stuck.task.cancelled() and lagged.task.cancelled() and stuck.timed_out
        assert not fresh.task.done() and not idle.task.done() and not fresh.timed_out
        assert hub.subscribers == {fresh, idle}
        assert hub.expire_sends(now=130.0, timeout_s=10.0) == 1  # now fresh too; the cancelled ones count once
        hub.unsubscribe(stuck)
        assert stuck not in hub.streams
        idle.task.cancel()

    asyncio.run(run())


def test_due_pings_wakes_only_streams_idle_for_ping_s():
    async def run():
        hub = Hub(ring_size=10, queue_size=10)
        idle, busy, sending, new = (hub.subscribe(EventFilter()) for _ in range(4))
        for sub in (idle, busy, sending, new):
            hub.opened(sub)
        idle.last_write, busy.last_write, sending.last_write = 100.0, 112.0, 100.0
        sending.sending_since = 114.0  # a write in flight: the send deadline's business, not a ping's
        assert hub.due_pings(now=115.0, ping_s=15.0) == 1
        assert idle.ping_due and idle.wake.is_set()
        assert not any(s.ping_due or s.wake.is_set() for s in (busy, sending, new))  # new: not started writing
        assert hub.due_pings(now=116.0, ping_s=15.0) == 0  # already due: woken once
        assert idle.take() == [] and idle.ping_due  # the stream finds no batch and sends the keep-alive

    asyncio.run(run())
