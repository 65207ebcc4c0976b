"""The state tables' estimated cache weight against the SDK's own measurement, and their round trip."""

from __future__ import annotations

import pickle
import random

import pytest
from apache_beam.coders import PickleCoder
from apache_beam.runners.worker.statecache import get_deep_size

from transforms.state_tables import HistoryTable, SeenTable, StateTable, WatermarkTable

T0_MS = 1_336_000_000_000
SENSORS = [str(773_000 + i) for i in range(13)]  # one shard's worth of the 207 sensors


def _seen(steps: int) -> dict:
    return {(s, T0_MS + k * 300_000): (random.uniform(5, 70),) for k in range(steps) for s in SENSORS}


def _marks() -> dict:
    return {s: T0_MS + random.randrange(1000) * 300_000 for s in SENSORS}


def _history(steps: int) -> dict:
    return {T0_MS + k * 300_000: {m: ((2, 1), random.uniform(5, 70)) for m in range(207)} for k in range(steps)}


@pytest.mark.parametrize(
    ("table_type", "contents"),
    [(SeenTable, _seen(72)), (WatermarkTable, _marks()), (HistoryTable, _history(12))],
    ids=["seen", "watermarks", "history"],
)
def test_the_estimated_weight_is_within_a_factor_of_two_of_the_measured_one(table_type, contents):
    measured = get_deep_size([contents])  # a plain dict: objsize walks every entry
    estimated = get_deep_size([table_type(contents)])  # the table: hash table + entries x entry_bytes
    assert measured / 2 <= estimated <= measured * 2, (measured, estimated)


def test_the_weight_grows_with_the_entries_without_walking_them():
    from apache_beam.runners.worker.statecache import _get_referents_func

    small, large = SeenTable(_seen(1)), SeenTable(_seen(100))
    assert get_deep_size(large) > 50 * get_deep_size(small) / 2
    (stand_in,) = _get_referents_func(large)  # all the cache's walk reaches from the table: no entry
    assert stand_in.__sizeof__() == large.entries() * SeenTable.entry_bytes


def test_history_entries_count_every_members_pane():
    table = HistoryTable({1: {0: ((0, 1), 1.0), 1: ((0, 1), 2.0)}, 2: {0: ((2, 1), 3.0)}})
    assert table.entries() == 3 and len(table) == 2


@pytest.mark.parametrize("table_type", [SeenTable, WatermarkTable, HistoryTable, StateTable])
def test_a_table_survives_the_state_coder_as_its_own_type(table_type):
    original = table_type({("a", 1): (50.0,), ("b", 2): (None,)})
    coder = PickleCoder()
    decoded = coder.decode(coder.encode(original))
    assert type(decoded) is table_type and decoded == original
    assert pickle.loads(pickle.dumps(original)) == original


@pytest.mark.parametrize("table_type", [SeenTable, WatermarkTable, HistoryTable])
def test_of_keeps_a_table_converts_a_plain_dict_and_starts_empty(table_type):
    table = table_type({"a": 1})
    assert table_type.of(table) is table
    converted = table_type.of({"a": 1})
    assert type(converted) is table_type and converted == {"a": 1}
    assert type(table_type.of(None)) is table_type and table_type.of(None) == {}
