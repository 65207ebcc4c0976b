"""api/state.py: the API's in-memory view (latest and recent values, alerts, analytics) on hand-made records."""

from __future__ import annotations

import math

import pytest

from api.state import LiveState, SensorCatalog
from ml.network import load_network

STEP_MS = 300_000
T0 = 1_338_000_000_000


@pytest.fixture(scope="module")
def catalog() -> SensorCatalog:
    return SensorCatalog.from_network(load_network())


def _prediction(sensor: str, step: int, horizon: int = 15, speed: float = 50.0, congestion: str = "FREE_FLOW",
                processed: int = 0) -> dict:
    event = T0 + step * STEP_MS
    return {"sensor_id": sensor, "event_time": event, "target_time": event + horizon * 60_000, "horizon_min": horizon,
            "predicted_speed_mph": speed, "lower_mph": speed - 5, "upper_mph": speed + 5, "coverage": 0.9,
            "congestion": congestion, "model_version": "v1", "processing_time": event + processed}


def _aggregate(sensor: str, step: int, speed: float | None) -> dict:
    return {"sensor_id": sensor, "window_start": T0 + step * STEP_MS, "mean_speed_mph": speed}


def test_the_catalog_reads_the_bundled_sensors_with_locations(catalog: SensorCatalog) -> None:
    assert len(catalog.ids) == 207 and "773869" in catalog and "nope" not in catalog
    assert catalog.lat["773869"] == pytest.approx(34.15497) and catalog.lon["773869"] == pytest.approx(-118.31829)
    assert catalog.in_bbox(34.15, -118.32, 34.16, -118.31) >= {"773869"}
    assert catalog.in_bbox(0, 0, 1, 1) == frozenset()


def test_ingest_returns_hub_items_and_keeps_the_newest_prediction_per_sensor_and_horizon(catalog) -> None:
    state = LiveState(catalog, history_steps=12, alerts_kept=10)
    items = state.ingest([("prediction", _prediction("773869", 2, congestion="HEAVY"), 1.0),
                          ("prediction", _prediction("773869", 1), 2.0)])  # an older step arrives late
    assert [(kind, sid, h, rank) for kind, sid, h, rank, _ in items] == [
        ("prediction", "773869", 15, 3), ("prediction", "773869", 15, 1)]
    latest = state.latest[("773869", 15)]
    assert latest["event_time"] == T0 + 2 * STEP_MS and latest["received_ms"] == 1.0
    assert len(state.predicted[("773869", 15)]) == 2 and state.counts["prediction"] == 2


def test_unknown_sensors_and_non_finite_values_are_counted_not_served(catalog) -> None:
    state = LiveState(catalog, history_steps=12, alerts_kept=10)
    items = state.ingest([("prediction", _prediction("no-such-sensor", 0), 0.0),
                          ("prediction", _prediction("773869", 0, speed=math.nan), 0.0)])
    assert items == [] and state.latest == {}
    assert state.counts["unknown_sensor"] == 1 and state.counts["not_finite"] == 1


def test_readings_come_from_aggregates_and_events_and_history_is_bounded(catalog) -> None:
    state = LiveState(catalog, history_steps=4, alerts_kept=10)
    state.ingest([("aggregate", _aggregate("773869", step, 60.0 - step), 0.0) for step in range(10)])
    state.ingest([("event", {"sensor_id": "773869", "event_time": T0 + 10 * STEP_MS, "speed_mph": 42.0}, 0.0)])
    assert state.readings["773869"]["speed_mph"] == 42.0
    actual = state.actuals["773869"]
    assert len(actual) <= 4 + 4 // 4 and max(actual) == T0 + 10 * STEP_MS  # the oldest were trimmed
    history = state.sensor_history("773869", 15, since_ms=T0 + 9 * STEP_MS)
    assert [p["time_ms"] for p in history["actual"]] == [T0 + 9 * STEP_MS, T0 + 10 * STEP_MS]


def test_alerts_are_kept_up_to_the_limit(catalog) -> None:
    state = LiveState(catalog, history_steps=4, alerts_kept=2)
    alerts = [{"alert_id": str(i), "sensor_id": "773869", "horizon_min": 30, "severity": "CRITICAL",
               "event_time": T0, "target_time": T0, "rule": "r", "message": "m", "predicted_speed_mph": 10.0,
               "current_speed_mph": None, "model_version": "v1"} for i in range(3)]
    items = state.ingest([("alert", a, 0.0) for a in alerts])
    assert [rank for _, _, _, rank, _ in items] == [3, 3, 3]
    assert [a["alert_id"] for a in state.alerts] == ["1", "2"]


def test_latest_predictions_filter_and_analytics_sum_up(catalog) -> None:
    state = LiveState(catalog, history_steps=12, alerts_kept=10)
    state.ingest([("prediction", _prediction("773869", 3, speed=20.0, congestion="SEVERE"), 0.0),
                  ("prediction", _prediction("767541", 2, speed=60.0), 0.0),
                  ("prediction", _prediction("767541", 2, horizon=60, speed=55.0), 0.0),
                  ("aggregate", _aggregate("767541", 2, 58.0), 0.0)])
    assert [r["sensor_id"] for r in state.latest_predictions(horizons=frozenset({15}))] == ["773869", "767541"]
    assert [r["sensor_id"] for r in state.latest_predictions(min_congestion=4)] == ["773869"]
    assert state.latest_predictions(sensors=frozenset({"767541"}), horizons=frozenset({60}))[0]["horizon_min"] == 60
    stats = state.analytics(15)
    assert stats["sensors"] == 207 and stats["sensors_with_prediction"] == 2 and stats["sensors_with_reading"] == 1
    assert stats["avg_predicted_speed_mph"] == pytest.approx(40.0) and stats["avg_actual_speed_mph"] == 58.0
    assert stats["congestion"]["SEVERE"] == 1 and stats["congestion"]["FREE_FLOW"] == 1
    assert stats["latest_event_time"] == T0 + 3 * STEP_MS
