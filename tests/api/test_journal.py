"""The SSE event journal (api/journal.py) with the hub: ids survive a restart, re-read records keep their ids."""

from __future__ import annotations

import asyncio
from pathlib import Path

from api.hub import CONGESTION_RANK, EventFilter, Hub
from api.journal import EventJournal


def _item(sensor: str, offset: int, partition: int = 0):
    return ("prediction", sensor, 15, CONGESTION_RANK["FREE_FLOW"],
            {"sensor_id": sensor, "horizon_min": 15, "offset": offset}, ("preds", partition, offset))


def test_a_restarted_hub_gives_re_read_records_their_old_ids_and_resumes_without_gap(tmp_path: Path) -> None:
    path = tmp_path / "events.journal"

    async def first_life() -> list[int]:
        hub = Hub(ring_size=100, queue_size=100, journal=EventJournal(path, keep=100))
        events = hub.publish([_item("a", 0), _item("b", 0, partition=1), _item("c", 1)])
        hub.journal.close()
        return [e.id for e in events]

    async def second_life():
        journal = EventJournal(path, keep=100)
        hub = Hub(ring_size=100, queue_size=100, journal=journal)
        assert hub.last_id == 3 and not hub.restored.is_set()
        live = hub.subscribe(EventFilter())
        # The feed re-reads from the journal's oldest offsets, partition by partition (another order than
        # before), and a new record comes in before the last old one is back.
        new = hub.publish([_item("a", 0), _item("c", 1), _item("d", 2)])
        assert [e.id for e in new] == [4] and not hub.restored.is_set()
        assert hub.publish([_item("b", 0, partition=1)]) == [] and hub.restored.is_set()
        resumed = hub.replay_after(1, EventFilter())
        journal.close()
        return live.take(), resumed, [e.id for e in hub.ring]

    assert asyncio.run(first_life()) == [1, 2, 3]
    delivered, resumed, ring = asyncio.run(second_life())
    assert [b.last_id for b in delivered] == [4]  # live clients get only the new record
    assert [(e.id, e.sensor_id) for e in resumed] == [(2, "b"), (3, "c"), (4, "d")]
    assert ring == [1, 2, 3, 4]
    assert path.read_text().splitlines()[-1] == "4\tpreds\t0\t2"


def test_records_older_than_the_journal_update_state_only_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.journal"
    path.write_text("7\tpreds\t0\t10\n8\tpreds\t0\t11\n9\tpre")  # killed mid-write

    async def run():
        hub = Hub(ring_size=100, queue_size=100, journal=EventJournal(path, keep=100))
        assert hub.last_id == 8
        published = hub.publish([_item("x", 9), _item("a", 10), _item("b", 11), _item("c", 12)])
        return [(e.id, e.sensor_id) for e in published], hub.replay_after(6, EventFilter()), hub.restored.is_set()

    published, resumed, restored = asyncio.run(run())
    assert published == [(9, "c")] and restored
    assert [e.id for e in resumed] == [7, 8, 9]


def test_a_gap_in_the_restored_ring_falls_back_to_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "events.journal"
    path.write_text("1\tpreds\t0\t0\n2\tpreds\t0\t1\n3\tpreds\t0\t2\n")

    async def run():
        hub = Hub(ring_size=100, queue_size=100, journal=EventJournal(path, keep=100))
        hub.publish([_item("a", 0), _item("c", 2)])  # offset 1 is gone (retention)
        hub.finish_restore()
        return hub.replay_after(0, EventFilter()), hub.replay_after(2, EventFilter())

    from_start, after_gap = asyncio.run(run())
    assert from_start is None and after_gap is not None and [e.id for e in after_gap] == [3]


def test_the_journal_is_compacted_to_what_the_ring_keeps(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "events.journal", keep=5)
    for i in range(1, 12):
        journal.append([(i, ("t", 0, i))])
    journal.close()
    lines = (tmp_path / "events.journal").read_text().splitlines()
    assert len(lines) <= 10 and lines[-1] == "11\tt\t0\t11"
    again = EventJournal(tmp_path / "events.journal", keep=5)
    assert again.last_id == 11 and len(again.restoring) == 5
    again.close()
