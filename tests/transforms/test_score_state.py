"""The columnar scoring state: its joins against plain-Python references, and each of its rules."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from transforms.score_state import (
    KEY_FIELDS,
    MISSING,
    SCORED,
    ScoreState,
    Settled,
)
from transforms.scoring import ScoreTable

T0, STEP = 1_338_000_000_000, 300_000


def _predictions(steps: range, sensors: tuple[str, ...] = ("s1", "s2"), horizons: tuple[int, ...] = (15, 30),
                 model: str = "v1") -> dict[str, np.ndarray]:
    rows = [(s, T0 + k * STEP, h) for k in steps for s in sensors for h in horizons]
    event = np.array([r[1] for r in rows], np.int64)
    horizon = np.array([r[2] for r in rows], np.int64)
    predicted = 50.0 + np.arange(len(rows), dtype=np.float64)
    return {"sensor_id": np.array([r[0] for r in rows]), "event_time": event,
            "target_time": event + horizon * 60_000, "horizon_min": horizon,
            "model_version": np.array([model] * len(rows)), "predicted_speed_mph": predicted,
            "lower_mph": predicted - 4, "upper_mph": predicted + 4, "coverage": np.full(len(rows), 0.9)}


def _actuals(target: int, sensors: list[str], timing: str, means: list[float | None], count: int = 1) -> dict:
    return {"sensor_id": np.array(sensors), "pane_timing": np.array([timing] * len(sensors), object),
            "count": np.full(len(sensors), count, np.int64),
            "mean_speed_mph": np.array([np.nan if m is None else m for m in means], np.float64),
            "targets": np.full(len(sensors), target, np.int64)}


def _observe(state: ScoreState, actuals: dict) -> bool:
    return state.observe(actuals.pop("targets"), actuals)


def test_hold_leaves_out_repeats_in_the_batch_held_or_already_scored() -> None:
    state = ScoreState()
    batch = _predictions(range(2))
    assert state.hold(batch) == 0 and len(state.predictions["sensor_id"]) == 8
    twice = {k: np.concatenate([v, v]) for k, v in _predictions(range(2, 3)).items()}
    assert state.hold(twice) == 4  # the second copy of each
    assert state.hold(batch) == 8  # all held already
    target = int(batch["target_time"][0])  # s1's 15-min prediction of step 0
    _observe(state, _actuals(target, ["s1"], "ON_TIME", [60.0]))
    scores = state.take_ready(7, target, target)
    assert scores is not None and len(scores) == 1
    assert state.hold({k: v[:1] for k, v in batch.items()}) == 1  # scored already: not held again


def test_only_a_final_observed_actual_scores_waiting_predictions() -> None:
    state = ScoreState()
    state.hold(_predictions(range(1), sensors=("s1", "s2", "s3"), horizons=(15,)))
    target = T0 + 15 * 60_000
    _observe(state, _actuals(target, ["s1", "s2", "s3"], "EARLY", [61.0, 62.0, 63.0]))
    assert state.take_ready(7, target, target) is None
    _observe(state, _actuals(target, ["s1", "s2", "s3"], "ON_TIME", [64.0, 0.0, None]))
    scores = state.take_ready(7, target, target)
    assert scores["sensor_id"].tolist() == ["s1"] and scores["actual_speed_mph"].tolist() == [64.0]
    assert scores["status"].tolist() == [SCORED] and scores["inside_interval"].tolist() == [False]
    scored = state.predictions["scored"]
    sensors = state.names[state.predictions["sensor_id"]]  # the tables hold indices into the names seen
    assert sensors[scored].tolist() == ["s1"] and sorted(sensors[~scored]) == ["s2", "s3"]


def test_the_best_pane_wins_and_the_later_of_equals() -> None:
    state = ScoreState()
    target = T0
    for timing, count, mean in [("ON_TIME", 3, 50.0), ("EARLY", 9, 10.0), ("ON_TIME", 2, 20.0),
                                ("ON_TIME", 3, 55.0), ("LATE", 1, 70.0), ("ON_TIME", 9, 30.0)]:
        _observe(state, _actuals(target, ["s1"], timing, [mean], count))
    assert state.actuals["mean"].tolist() == [70.0]  # LATE outranks any ON_TIME
    other = ScoreState()
    for timing, count, mean in [("ON_TIME", 3, 50.0), ("EARLY", 9, 10.0), ("ON_TIME", 3, 55.0)]:
        _observe(other, _actuals(target, ["s1"], timing, [mean], count))
    assert other.actuals["mean"].tolist() == [55.0]


def test_settling_scores_against_the_best_actual_known_or_missing() -> None:
    state = ScoreState()
    state.hold(_predictions(range(1), sensors=("s1", "s2"), horizons=(15, 30)))
    early, later = T0 + 15 * 60_000, T0 + 30 * 60_000
    _observe(state, _actuals(early, ["s1"], "EARLY", [40.0]))
    scores, actuals, keys = state.settle(np.array([early]), 11)
    got = {r["sensor_id"]: r for r in scores.records()}
    assert got["s1"]["status"] == SCORED and got["s1"]["actual_speed_mph"] == 40.0
    assert got["s2"]["status"] == MISSING and got["s2"]["error_mph"] is None and got["s2"]["inside_interval"] is None
    assert actuals["sensor_id"].tolist() == ["s1"] and sorted(keys["sensor_id"].tolist()) == ["s1", "s2"]
    assert state.targets().tolist() == [later] and len(state.actuals["mean"]) == 0


def test_a_late_prediction_is_scored_once_against_the_kept_actual() -> None:
    settled = Settled()
    target = T0 + 15 * 60_000
    settled.add(np.array([target]), {"target_time": np.array([target]), "sensor_id": np.array(["s1"]),
                                     "mean": np.array([60.0])},
                {"target_time": np.array([target]), "sensor_id": np.array(["s2"]),
                 "event_time": np.array([T0]), "horizon_min": np.array([15]), "model_version": np.array(["v1"])})
    batch = _predictions(range(2), sensors=("s1", "s2", "s3"), horizons=(15,))
    scores, duplicates = settled.score_late(batch, 5)
    assert duplicates == 1  # s2's was scored before it settled
    assert {r["sensor_id"]: r["status"] for r in scores.records()} == {"s1": SCORED, "s3": MISSING}
    again, duplicates = settled.score_late(batch, 5)
    assert again is None and duplicates == 3
    settled.keep_from(target + STEP)
    assert len(settled.targets) == 0 and len(settled.keys["sensor_id"]) == 0


def test_a_late_prediction_is_joined_with_its_own_targets_kept_rows_only() -> None:
    """Two settled targets hold the same sensor with different actuals, and a key scored for one of them: a
    step's forecasts for the other get that target's actual, and the key of the first target is no repeat."""
    settled = Settled()
    first, second = T0 + 15 * 60_000, T0 + 20 * 60_000
    settled.add(np.array([first, second]),
                {"target_time": np.array([first, second]), "sensor_id": np.array(["s1", "s1"]),
                 "mean": np.array([60.0, 30.0])},
                {"target_time": np.array([first]), "sensor_id": np.array(["s1"]), "event_time": np.array([T0]),
                 "horizon_min": np.array([15]), "model_version": np.array(["v1"])})
    batch = _predictions(range(1, 2), sensors=("s1",), horizons=(15,))  # made at T0 + 5 min: targets `second`
    scores, duplicates = settled.score_late(batch, 5)
    assert duplicates == 0
    assert [(r["target_time"], r["actual_speed_mph"]) for r in scores.records()] == [(second, 30.0)]
    again, duplicates = settled.score_late(batch, 5)
    assert again is None and duplicates == 1


def test_older_dict_tables_convert_to_the_same_state() -> None:
    p = {k: v[0].item() for k, v in _predictions(range(1), sensors=("s1",), horizons=(15,)).items()}
    target = p["target_time"]
    legacy = ScoreTable({target: {"s1": [((2, 1), 58.0), {(p["event_time"], 15, "v1"): p}, {(T0 - STEP, 30, "v1")}]}})
    legacy = pickle.loads(pickle.dumps(legacy))
    state = ScoreState.of(legacy)
    scored = state.predictions["scored"]
    assert state.predictions["predicted_speed_mph"][~scored].tolist() == [p["predicted_speed_mph"]]
    assert state.predictions["event_time"][scored].tolist() == [T0 - STEP] and state.actuals["mean"].tolist() == [58.0]
    assert state.take_ready(1, target, target)["actual_speed_mph"].tolist() == [58.0]
    settled = Settled.of({target: {"s1": [58.0, {(T0, 15, "v1")}], "s2": [None, set()]}})
    assert settled.targets.tolist() == [target] and settled.actuals["sensor_id"].tolist() == ["s1"]
    assert settled.score_late({k: np.asarray([v]) for k, v in p.items()}, 1) == (None, 1)


@pytest.mark.parametrize("steps", [12, 48])
def test_the_state_pickles_as_buffers_not_as_a_record_per_prediction(steps: int) -> None:
    """A shard's state of a catch-up (48 steps of 52 sensors x 3 horizons held) pickles to about the size of its
    arrays: under 120 bytes per held prediction, less than one pickled prediction dict alone takes (about 200).
    It pickles without its transient index of names, and reads back equal."""
    sensors = tuple(f"77{i:04d}" for i in range(52))
    state = ScoreState()
    batch = _predictions(range(steps), sensors=sensors, horizons=(15, 30, 60))
    state.hold(batch)
    held = len(state.predictions["sensor_id"])
    one_dict = len(pickle.dumps({k: v[0].item() for k, v in batch.items()}, pickle.HIGHEST_PROTOCOL))
    assert one_dict > 120
    pickled = pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
    assert len(pickled) < 120 * held
    back = pickle.loads(pickled)
    assert "_index" in state.__dict__ and "_index" not in back.__dict__
    assert back.names.tolist() == state.names.tolist() and back.hold(batch) == held  # all known: duplicates


def test_in_any_order_each_prediction_is_scored_once_and_the_tables_stay_sorted_by_target() -> None:
    """Random steps' predictions (some repeated) and random panes of actuals, in random order, then settle all:
    every distinct prediction is scored exactly once, a SCORED one against a mean seen for its target and
    sensor, and after every operation each table is sorted by target (what the joins by span rely on)."""
    rng = np.random.default_rng(11)
    sensors = ("s1", "s2", "s3")
    state, scores, means = ScoreState(), [], {}
    operations = [("p", k) for k in range(20)] + [("p", k) for k in range(0, 20, 3)] + \
                 [("a", k) for k in range(1, 34)] * 2
    for i in rng.permutation(len(operations)):
        kind, step = operations[i]
        if kind == "p":
            batch = _predictions(range(step, step + 1), sensors=sensors, horizons=(15, 30, 60))
            state.hold(batch)
            lo, hi = int(batch["target_time"].min()), int(batch["target_time"].max())
        else:
            target = T0 + step * STEP
            timing = str(rng.choice(["EARLY", "ON_TIME", "LATE"]))
            values = [float(v) if v > 5 else None for v in rng.uniform(0, 70, len(sensors))]
            for sensor, value in zip(sensors, values, strict=True):
                means.setdefault((target, sensor), set()).add(value)
            final = _observe(state, _actuals(target, list(sensors), timing, values))
            lo = hi = target
            assert final == (timing != "EARLY")
            if not final:  # the step skips the join then: nothing may be ready
                assert state.take_ready(5, lo, hi) is None
        scores.append(state.take_ready(5, lo, hi))
        probe = T0 + rng.integers(-2, 40, 12) * STEP
        assert state.new_targets(probe).tolist() == sorted(set(probe.tolist()) - set(state.targets().tolist()))
        for table in (state.predictions, state.actuals):
            assert np.all(np.diff(table["target_time"]) >= 0)
    scores.append(state.settle(state.targets(), 6)[0])
    records = [r for batch in scores if batch is not None for r in batch.records()]
    keys = [(r["sensor_id"], r["event_time"], r["horizon_min"]) for r in records]
    assert len(keys) == len(set(keys)) == 20 * len(sensors) * 3
    for r in records:
        if r["status"] == SCORED:
            assert r["actual_speed_mph"] in means[(r["target_time"], r["sensor_id"])]


def test_observe_tells_whether_a_final_pane_came_also_in_a_mixed_batch() -> None:
    state = ScoreState()
    target = T0
    assert _observe(state, _actuals(target, ["s1", "s2"], "EARLY", [40.0, 41.0])) is False
    mixed = _actuals(target, ["s1", "s2"], "EARLY", [42.0, 43.0], count=2)
    mixed["pane_timing"] = np.array(["EARLY", "LATE"], object)
    assert _observe(state, mixed) is True
    by_sensor = dict(zip(state.names[state.actuals["sensor_id"]].tolist(), state.actuals["rank"].tolist(),
                         strict=True))
    assert by_sensor == {"s1": 0, "s2": 3}  # EARLY and LATE, each row its own timing
    assert _observe(state, _actuals(target, [], "ON_TIME", [])) is False


def test_panes_of_one_window_and_of_several_are_joined_alike() -> None:
    """An element of one target is joined by sensor index, one of several by sort: the same tables and the same
    scores either way, repeated sensors within an element included."""
    rng = np.random.default_rng(17)
    sensors = ["s1", "s2", "s3", "s4"]
    by_index, by_sort = ScoreState(), ScoreState()
    for state in (by_index, by_sort):
        state.hold(_predictions(range(4), sensors=tuple(sensors), horizons=(15,)))
    targets = [T0 + k * STEP for k in range(3, 7)]
    for rnd in range(5):
        timing = ["EARLY", "ON_TIME", "LATE", "ON_TIME", "LATE"][rnd]
        panes = []
        for target in targets:
            chosen = list(rng.choice(sensors, 3))  # repeats sometimes
            panes.append(_actuals(target, chosen, timing, list(rng.uniform(1, 70, 3)), count=int(rng.integers(1, 4))))
        for pane in panes:
            _observe(by_index, dict(pane))
        merged = {name: np.concatenate([pane[name] for pane in panes]) for name in panes[0]}
        _observe(by_sort, merged)
        rows = [sorted(zip(*(state.actuals[name].tolist() for name in state.actuals), strict=True))
                for state in (by_index, by_sort)]
        assert rows[0] == rows[1] and len(rows[0]) >= len(targets)
    ready = [state.take_ready(9, targets[0], targets[0]) for state in (by_index, by_sort)]
    ready += [state.take_ready(9, targets[1], targets[-1]) for state in (by_index, by_sort)]
    assert ready[0] is not None and ready[2] is not None
    assert sorted(map(str, ready[0].records())) == sorted(map(str, ready[1].records()))
    assert sorted(map(str, ready[2].records())) == sorted(map(str, ready[3].records()))


def test_a_column_of_one_value_is_coded_like_any_other() -> None:
    state = ScoreState()
    mixed = state._codes(np.array(["v2", "s1", "v2"]))
    same = state._codes(np.array(["v2"] * 4))
    assert state.names[mixed].tolist() == ["v2", "s1", "v2"] and state.names[same].tolist() == ["v2"] * 4
    new = state._codes(np.array(["v3"] * 3))
    assert state.names[new].tolist() == ["v3"] * 3 and len(state.names) == 3


def test_the_settled_keys_model_version_pickles_as_one_value_and_older_pickles_still_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A model version in every key kept for the targets settled lately pickles as the value and the length
    (numpy text is 4 bytes a character); a Settled pickled before, with the column row by row, reads the same."""
    steps, version = 12, "20261206T014903Z-da05fb"
    batch = _predictions(range(steps), sensors=tuple(f"77{i:04d}" for i in range(207)), horizons=(15, 30, 60),
                         model=version)
    settled = Settled()
    keys = {name: batch[name] for name in KEY_FIELDS}
    settled.add(np.unique(batch["target_time"]), {"target_time": batch["target_time"][:1],
                                                  "sensor_id": batch["sensor_id"][:1], "mean": np.array([60.0])}, keys)
    compact = pickle.dumps(settled, pickle.HIGHEST_PROTOCOL)
    with monkeypatch.context() as patch:  # the older form: every array as it is
        patch.setattr(Settled, "__getstate__", lambda self: {k: v for k, v in self.__dict__.items()
                                                              if not k.startswith("_")})
        older = pickle.dumps(settled, pickle.HIGHEST_PROTOCOL)
    assert len(older) - len(compact) > len(batch["sensor_id"]) * 4 * len(version) * 0.9
    for back in (pickle.loads(compact), pickle.loads(older)):
        for name in KEY_FIELDS:
            assert back.keys[name].dtype == settled.keys[name].dtype, name
            np.testing.assert_array_equal(back.keys[name], settled.keys[name])
        assert back.score_late(batch, 1) == (None, len(batch["sensor_id"]))  # every key known: all duplicates
