"""The scoring table's estimated cache weight against the SDK's own measurement, and its round trip."""

from __future__ import annotations

import pickle
import random

import pytest
from apache_beam.coders import PickleCoder
from apache_beam.runners.worker.statecache import _get_referents_func, get_deep_size

from transforms.scoring import ScoreTable
from transforms.state_tables import StateTable

T0_MS = 1_336_000_000_000
SENSORS = [str(773_000 + i) for i in range(52)]  # one shard's worth of the 207 sensors


def _prediction(sensor: str, k: int, h: int) -> dict:
    return {"sensor_id": sensor, "event_time": T0_MS + k * 300_000, "target_time": T0_MS + (k + h // 5) * 300_000,
            "horizon_min": h, "model_version": "20120601T000000", "predicted_speed_mph": random.uniform(5, 70),
            "lower_mph": 1.0, "upper_mph": 80.0, "coverage": 0.9}


def _pending(targets: int) -> dict:
    """12 targets ahead, each with an actual and the three horizons' predictions waiting per sensor."""
    return {T0_MS + t * 300_000: {s: [((2, 1), random.uniform(5, 70)),
                                      {(t, h, "v"): _prediction(s, t, h) for h in (15, 30, 60)}, set()]
                                  for s in SENSORS} for t in range(targets)}


def test_the_estimated_weight_is_within_a_factor_of_two_of_the_measured_one():
    contents = _pending(12)
    measured = get_deep_size([contents])  # a plain dict: objsize walks every entry
    estimated = get_deep_size([ScoreTable(contents)])  # the table: hash table + entries x entry_bytes
    assert measured / 2 <= estimated <= measured * 2, (measured, estimated)


def test_the_weight_grows_with_the_entries_without_walking_them():
    small, large = ScoreTable(_pending(1)), ScoreTable(_pending(12))
    assert get_deep_size(large) > 10 * get_deep_size(small) / 2
    (stand_in,) = _get_referents_func(large)  # all the cache's walk reaches from the table: no entry
    assert stand_in.__sizeof__() == large.entries() * ScoreTable.entry_bytes


@pytest.mark.parametrize("table_type", [ScoreTable, StateTable])
def test_a_table_survives_the_state_coder_as_its_own_type(table_type):
    original = table_type({("a", 1): (50.0,), ("b", 2): (None,)})
    coder = PickleCoder()
    decoded = coder.decode(coder.encode(original))
    assert type(decoded) is table_type and decoded == original
    assert pickle.loads(pickle.dumps(original)) == original


def test_of_keeps_a_table_converts_a_plain_dict_and_starts_empty():
    table = ScoreTable({"a": 1})
    assert ScoreTable.of(table) is table
    converted = ScoreTable.of({"a": 1})
    assert type(converted) is ScoreTable and converted == {"a": 1}
    assert type(ScoreTable.of(None)) is ScoreTable and ScoreTable.of(None) == {}


def test_an_array_state_weighs_as_its_arrays_and_pickles_without_its_transients():
    from transforms.score_state import ScoreState

    state = ScoreState()
    sensors = SENSORS * 3
    state.hold({"sensor_id": sensors, "event_time": [T0_MS] * len(sensors),
                "target_time": [T0_MS + 900_000] * len(sensors), "horizon_min": [15] * len(sensors),
                "model_version": ["v"] * len(sensors), "predicted_speed_mph": [50.0] * len(sensors),
                "lower_mph": [45.0] * len(sensors), "upper_mph": [55.0] * len(sensors),
                "coverage": [0.9] * len(sensors)})
    arrays = sum(a.nbytes for a in state.predictions.values()) + sum(a.nbytes for a in state.actuals.values()) \
        + state.names.nbytes
    (stand_in,) = _get_referents_func(state)
    assert stand_in.__sizeof__() == arrays
    assert arrays <= get_deep_size(state) <= arrays + 1_000  # the stand-in and the value's own header
    back = pickle.loads(pickle.dumps(state))
    assert not [k for k in back.__dict__ if k.startswith("_")] and back.names.tolist() == state.names.tolist()


def test_quick_weighing_gives_the_sdks_weights_and_is_installed_by_a_stateful_fn(monkeypatch):
    import numpy as np
    import objsize
    from apache_beam.runners.worker import statecache

    from transforms.score_state import ScoreState
    from transforms.state_tables import StatefulFn

    def original(*objs):  # the SDK's own measurement (statecache.get_deep_size as shipped)
        return objsize.get_deep_size(*objs, get_size_func=statecache._size_func,
                                     get_referents_func=statecache._get_referents_func,
                                     filter_func=statecache._filter_func)

    monkeypatch.setattr(statecache, "get_deep_size", original)  # restored after the test
    values = [[], [None], [{"a": np.arange(100.0), "b": [1, 2, 3]}], [StateTable(_pending(2))],
              [ScoreState.of(None)], [{int(d): {s: np.arange(12) for s in SENSORS} for d in range(3)}]]
    expected = [original(v) for v in values]
    StatefulFn().setup()
    assert statecache.get_deep_size is not original
    quick = [statecache.get_deep_size(v) for v in values]
    plain = [0, 1, 2, 3, 5]  # nothing in them is also a module global: the very same weight
    assert [quick[i] for i in plain] == [expected[i] for i in plain]
    # The score state's column names are module-level strings too: counted now, a few bytes each.
    assert expected[4] < quick[4] <= expected[4] + 1024, (expected[4], quick[4])
    cache = statecache.StateCache(1 << 20)
    cache.put("key", [np.zeros(1000)])  # the cache itself measures through the replaced function
    assert cache.size() == 1
    assert cache.describe_stats().startswith("used/max")
