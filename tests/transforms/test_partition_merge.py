"""EventTimeMerge: partitions released in event-time step, nothing lost or reordered within a partition."""

from __future__ import annotations

import random

import pytest

from transforms.partition_merge import EventTimeMerge

STEP = 300_000


def _records(partition: int, first_ms: int, steps: int, per_step: int = 2) -> list[tuple[int, int, tuple]]:
    return [(partition, first_ms + s * STEP, (partition, s * per_step + i))
            for s in range(steps) for i in range(per_step)]


def test_a_partition_read_whole_first_waits_for_the_others() -> None:
    merge = EventTimeMerge(max_skew_ms=STEP)
    newest: dict[int, int | None] = {0: None, 1: None}
    merge.add(_records(0, 0, steps=100))  # what librdkafka hands over first: all of partition 0
    assert merge.release(newest, caught_up=set()) == []  # partition 1 may hold older records
    assert merge.held_counts() == {0: 200}

    merge.add(_records(1, 0, steps=3))
    out = merge.release(newest, caught_up=set())
    # partition 1's three steps, and partition 0 up to one step past partition 1's newest
    assert sorted(r for r in out if r[0] == 1) == [(1, i) for i in range(6)]
    assert [r for r in out if r[0] == 0] == [(0, i) for i in range(8)]
    assert newest == {0: 3 * STEP, 1: 2 * STEP}
    assert merge.held_counts() == {0: 192}


def test_a_caught_up_partition_holds_nothing_back() -> None:
    merge = EventTimeMerge(max_skew_ms=0)
    newest: dict[int, int | None] = {0: None, 1: None}
    merge.add(_records(0, 0, steps=5))
    assert merge.release(newest, caught_up={1}) == [(0, i) for i in range(10)]
    assert merge.holding() == set()


def test_a_partition_that_jumps_ahead_waits_until_the_others_pass_or_are_caught_up() -> None:
    merge = EventTimeMerge(max_skew_ms=STEP)
    newest: dict[int, int | None] = {0: 10 * STEP, 1: 0}
    merge.add(_records(0, 11 * STEP, steps=1))
    merge.add(_records(1, 50 * STEP, steps=1))  # partition 1's next records are far ahead
    assert merge.release(newest, caught_up=set()) == [(0, 0), (0, 1)]  # the slowest frontier goes first
    assert merge.holding() == {1}
    merge.add(_records(0, 49 * STEP, steps=1))
    assert merge.release(newest, caught_up=set()) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert merge.release(newest, caught_up={0, 1}) == []
    assert newest == {0: 49 * STEP, 1: 50 * STEP}


def test_random_interleavings_release_everything_in_partition_order_within_the_skew() -> None:
    rng = random.Random(7)
    for trial in range(40):
        skew = rng.choice([0, STEP, 6 * STEP])
        merge = EventTimeMerge(max_skew_ms=skew)
        parts = {p: _records(p, rng.randrange(0, 5) * STEP, steps=rng.randrange(1, 40), per_step=3) for p in range(4)}
        cursor = {p: 0 for p in parts}
        newest: dict[int, int | None] = {p: None for p in parts}
        released: list[tuple] = []
        times = {record: ts for q in parts for (_, ts, record) in parts[q]}
        while any(cursor[p] < len(parts[p]) for p in parts) or merge.holding():
            p = rng.choice([q for q in parts if cursor[q] < len(parts[q])] or [0])
            take = parts[p][cursor[p]:cursor[p] + rng.randrange(1, 30)]
            cursor[p] += len(take)
            merge.add(take)
            done = {q for q in parts if cursor[q] >= len(parts[q])}
            out = merge.release(newest, caught_up=done)
            active = [q for q in parts if q not in done or q in merge.holding()]
            frontiers = [merge.frontier(q, newest) for q in active]
            if active and any(f is None for f in frontiers):
                assert out == []  # a partition not read yet may hold the oldest records of all
            elif active and out:
                floor = min(f for f in frontiers if f is not None)
                assert max(times[r] for r in out) <= floor + skew
            released += out
        for p in parts:
            mine = [r for r in released if r[0] == p]
            assert mine == [record for (_, _, record) in parts[p]], f"trial {trial}, partition {p}"


def test_a_negative_skew_is_refused() -> None:
    with pytest.raises(ValueError, match="max_skew_ms"):
        EventTimeMerge(max_skew_ms=-1)
