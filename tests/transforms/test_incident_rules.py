"""The incident lifecycle rules on a real METR-LA congestion episode and on hand-made flapping sensors."""

from __future__ import annotations

import numpy as np
import pytest
from incident_episode import HORIZONS, LINKS, SENSORS, STEP_MS, STEPS, T0_MS, episode

from schemas.codec import AvroCodec
from transforms.incident_rules import IncidentRules, advance, incident_id

INDEX = {s: i for i, s in enumerate(SENSORS)}


def neighbours(links=LINKS, sensors=SENSORS) -> dict[int, tuple[int, ...]]:
    index = {s: i for i, s in enumerate(sensors)}
    found: dict[int, set[int]] = {}
    for a, b in links:
        found.setdefault(index[a], set()).add(index[b])
        found.setdefault(index[b], set()).add(index[a])
    return {k: tuple(sorted(v)) for k, v in found.items()}


def run_steps(observed, predicted, rules=IncidentRules(), sensors=SENSORS, links=LINKS) -> list[dict]:
    incidents, out = [], []
    for t in range(len(observed)):
        records, incidents = advance(incidents, T0_MS + t * STEP_MS, observed[t], predicted[t], sensors, HORIZONS,
                                     neighbours(links, sensors), rules, "m1")
        out.extend(records)
    return out


def test_a_real_congestion_episode_opens_updates_and_closes_one_incident() -> None:
    observed, predicted = episode()
    records = run_steps(observed, predicted)
    assert {r["incident_id"] for r in records} == {"773904@2012-03-30T07:05Z"}
    events = [r["event"] for r in records]
    assert events[0] == "OPENED" and events[-1] == "CLOSED"
    assert set(events[1:-1]) == {"UPDATED"} and len(events) > 10
    assert records[0]["opened_at"] == T0_MS + 25 * STEP_MS  # 07:05, announced at the step after (open_steps=2)
    assert records[0]["updated_at"] == records[0]["opened_at"] + STEP_MS
    assert records[-1]["state"] == "CLOSED" and records[-1]["closed_at"] == records[-1]["updated_at"]
    assert max(len(r["sensor_ids"]) for r in records) >= 3  # a run of connected sensors, not one sensor
    assert {r["state"] for r in records[:-1]} <= {"OPEN", "CLEARING"}
    # the third clear step in a row closes it
    assert [r["state"] for r in records[-4:]] == ["OPEN", "CLEARING", "CLEARING", "CLOSED"]
    assert records[-1]["merged_into"] is None
    for r in records:
        AvroCodec("incident").encode(r)  # every record fits the schema
        assert [w["horizon_min"] for w in r["worst_predicted"]] == list(HORIZONS)
        members = [INDEX[s] for s in r["sensor_ids"]]
        t = (r["updated_at"] - T0_MS) // STEP_MS
        assert r["observed_min_speed_mph"] == pytest.approx(np.nanmin(observed[t, members]))
        for k, worst in enumerate(r["worst_predicted"]):
            assert worst["speed_mph"] == pytest.approx(predicted[t, k, members].min())
    open_records = [r for r in records if r["state"] == "OPEN"]
    assert all(r["worst_speed_mph"] < 45 for r in open_records)
    assert {r["severity"] for r in open_records} & {"HEAVY", "SEVERE"}


def test_replaying_the_same_hours_gives_the_same_records() -> None:
    observed, predicted = episode()
    assert run_steps(observed, predicted) == run_steps(observed.copy(), predicted.copy())


def test_clearance_is_the_first_horizon_from_which_every_forecast_is_clear() -> None:
    sensors, links = ("a", "b"), (("a", "b"),)
    observed = np.array([[20.0, 60.0], [20.0, 60.0]])
    predicted = np.array([[[30.0, 60.0], [50.0, 60.0], [55.0, 60.0]]] * 2)
    records = run_steps(observed, predicted, sensors=sensors, links=links)
    assert [r["event"] for r in records] == ["OPENED"]
    assert records[0]["expected_clearance_time"] == T0_MS + STEP_MS + 30 * 60_000
    assert records[0]["trend"] == "IMPROVING" and records[0]["severity"] == "HEAVY"
    assert records[0]["sensor_ids"] == ["a"] and records[0]["worst_sensor_id"] == "a"


@pytest.mark.parametrize("pattern", [(33.0, 37.0), (30.0, 50.0), (30.0, 50.0, 50.0)])
def test_a_flapping_sensor_keeps_one_incident(pattern: tuple[float, ...]) -> None:
    """Below 35 then back above (37 < clear 45, or 50 for up to two steps): one incident, not one per dip."""
    sensors, links = ("a",), ()
    speeds = np.array([pattern[t % len(pattern)] for t in range(30)])
    speeds[:2] = 30.0
    observed = speeds[:, None]
    predicted = np.repeat(speeds[:, None, None], 3, axis=1)
    records = run_steps(observed, predicted, sensors=sensors, links=links)
    assert len({r["incident_id"] for r in records}) == 1
    assert [r["event"] for r in records].count("OPENED") == 1
    assert "CLOSED" not in [r["event"] for r in records]


def test_a_member_stays_congested_until_clear_mph_and_others_join_below_enter_mph() -> None:
    """Hysteresis: 40 mph (between enter 35 and clear 45) keeps a member in, and is not enough for a newcomer."""
    sensors, links = ("a", "b"), (("a", "b"),)
    a = [30, 30, 40, 40, 40, 46, 46, 46]
    observed = np.array([[x, 40.0] for x in a])
    records = run_steps(observed, np.repeat(observed[:, None, :], 3, axis=1), sensors=sensors, links=links)
    assert [(r["event"], r["state"]) for r in records] == [("OPENED", "OPEN")] + [("UPDATED", "OPEN")] * 3 + [
        ("UPDATED", "CLEARING"), ("UPDATED", "CLEARING"), ("CLOSED", "CLOSED")]
    assert {tuple(r["sensor_ids"]) for r in records} == {("a",)}


def test_a_one_step_dip_is_never_announced_and_three_clear_steps_close() -> None:
    sensors, links = ("a",), ()
    dip = np.array([60, 30, 60, 60, 60, 30, 30, 50, 50, 50, 60], dtype=float)
    records = run_steps(dip[:, None], np.repeat(dip[:, None, None], 3, axis=1), sensors=sensors, links=links)
    assert [(r["event"], r["state"]) for r in records] == [
        ("OPENED", "OPEN"), ("UPDATED", "CLEARING"), ("UPDATED", "CLEARING"), ("CLOSED", "CLOSED")]
    assert records[0]["incident_id"] == incident_id("a", T0_MS + 5 * STEP_MS)


def test_two_incidents_that_join_merge_into_the_older() -> None:
    sensors, links = ("a", "b", "c"), (("a", "b"), ("b", "c"))
    observed = np.array([[30, 60, 60], [30, 60, 60], [30, 60, 30], [30, 60, 30], [30, 30, 30], [30, 30, 30]], float)
    predicted = np.repeat(observed[:, None, :], 3, axis=1)
    records = run_steps(observed, predicted, sensors=sensors, links=links)
    first, second = incident_id("a", T0_MS), incident_id("c", T0_MS + 2 * STEP_MS)
    closed = [r for r in records if r["event"] == "CLOSED"]
    assert [(r["incident_id"], r["merged_into"]) for r in closed] == [(second, first)]
    assert records[-1]["incident_id"] == first and records[-1]["sensor_ids"] == ["a", "b", "c"]


def test_rules_reject_inconsistent_thresholds() -> None:
    with pytest.raises(ValueError, match="enter_mph"):
        IncidentRules(enter_mph=50.0, clear_mph=45.0)
    assert STEPS == 48
