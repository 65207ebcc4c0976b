"""The served API against the real Kafka, fed with predictions made by the project's own model."""

from __future__ import annotations

import pytest
from api_harness import ServedApi, Timeline, wait_until
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings

pytestmark = pytest.mark.integration

FIELDS = ("event_time", "target_time", "horizon_min", "predicted_speed_mph", "lower_mph", "upper_mph", "coverage",
          "congestion", "model_version")


def _produced_through(served_api: ServedApi, timeline: Timeline, index: int) -> None:
    """Make sure steps 0..index are produced and the API has the last one."""
    while timeline.produced <= index:
        timeline.produce_next()
    step = timeline.steps[index]
    state = served_api.runtime.state
    wait_until(lambda: any(p["event_time"] >= step for p in state.latest.values())
               and sum(1 for p in state.latest.values() if p["event_time"] >= step) == 207 * 3,
               message=f"the API to consume step {index}")


def test_latest_predictions_are_the_models_records(served_api, timeline):
    _produced_through(served_api, timeline, 0)
    index = timeline.produced - 1
    with served_api.client() as client:
        rows = client.get("/predictions/latest", params={"sensors": "773869,767541", "horizon": 15}).json()
        everything = client.get("/predictions/latest", params={"limit": 5000}).json()
    assert sorted(r["sensor_id"] for r in rows) == ["767541", "773869"]
    for row in rows:
        produced = timeline.prediction(index, row["sensor_id"], 15)
        assert {k: row[k] for k in FIELDS} == {k: produced[k] for k in FIELDS}
    assert len(everything) == 207 * 3
    assert {r["model_version"] for r in everything} == {timeline.records.model_version}


def test_filters_and_limit_on_latest(served_api, timeline):
    _produced_through(served_api, timeline, 0)
    with served_api.client() as client:
        heavy = client.get("/predictions/latest", params={"min_congestion": "HEAVY", "horizon": 60}).json()
        boxed = client.get("/predictions/latest", params={"bbox": "34.10,-118.40,34.20,-118.25"}).json()
        limited = client.get("/predictions/latest", params={"limit": 7}).json()
    assert heavy and all(r["congestion"] in ("HEAVY", "SEVERE") and r["horizon_min"] == 60 for r in heavy)
    catalog = served_api.runtime.catalog
    assert boxed and all(34.10 <= catalog.lat[r["sensor_id"]] <= 34.20 for r in boxed)
    assert len(limited) == 7


def test_sensor_has_location_latest_reading_and_predictions(served_api, timeline):
    _produced_through(served_api, timeline, 1)
    index = timeline.produced - 1
    with served_api.client() as client:
        sensor = client.get("/sensors/773869").json()
    assert (round(sensor["latitude"], 5), round(sensor["longitude"], 5)) == (34.15497, -118.31829)
    assert sensor["latest_reading"]["time_ms"] >= timeline.steps[index]
    assert set(sensor["latest_predictions"]) == {"15", "30", "60"}
    assert sensor["latest_predictions"]["30"]["predicted_speed_mph"] == \
        timeline.prediction(index, "773869", 30)["predicted_speed_mph"]


def test_history_pairs_actual_speeds_with_predicted_intervals(served_api, timeline):
    _produced_through(served_api, timeline, 2)
    with served_api.client() as client:
        history = client.get("/sensors/773869/history", params={"horizon": 15}).json()
    produced = [timeline.prediction(i, "773869", 15) for i in range(timeline.produced)]
    assert [p["target_time"] for p in history["predicted"]] == [p["target_time"] for p in produced]
    assert all(p["lower_mph"] <= p["predicted_speed_mph"] <= p["upper_mph"] for p in history["predicted"])
    actual_times = [a["time_ms"] for a in history["actual"]]
    assert actual_times == sorted(actual_times) and len(actual_times) >= 12 + timeline.produced
    assert any(a["speed_mph"] is not None for a in history["actual"])


def test_alerts_newest_first_and_filtered_by_severity(served_api, timeline):
    _produced_through(served_api, timeline, 2)
    produced = [a for i in range(timeline.produced) for a in timeline.step_records(i, "alert")]
    assert produced, "the model's predictions fired no alert in these hours"
    wait_until(lambda: len(served_api.runtime.state.alerts) >= len(produced), message="alerts")
    with served_api.client() as client:
        alerts = client.get("/alerts", params={"limit": 1000}).json()
        critical = client.get("/alerts", params={"min_severity": "CRITICAL", "limit": 1000}).json()
    assert {a["alert_id"] for a in alerts} == {a["alert_id"] for a in produced}
    assert [a["event_time"] for a in alerts] == sorted((a["event_time"] for a in alerts), reverse=True)
    assert {a["alert_id"] for a in critical} == {a["alert_id"] for a in produced if a["severity"] == "CRITICAL"}


def test_analytics_counts_the_latest_predictions(served_api, timeline):
    _produced_through(served_api, timeline, 0)
    index = timeline.produced - 1
    expected = {}
    for p in timeline.step_records(index, "prediction"):
        if p["horizon_min"] == 30:
            expected[p["congestion"]] = expected.get(p["congestion"], 0) + 1
    with served_api.client() as client:
        stats = client.get("/predictions/analytics", params={"horizon": 30}).json()
    assert stats["sensors_with_prediction"] == 207
    assert {k: v for k, v in stats["congestion"].items() if v} == expected
    assert 0 < stats["avg_predicted_speed_mph"] < 100 and 0 < stats["avg_actual_speed_mph"] < 100


def test_model_shows_the_registered_version_and_admin_reload_needs_the_key(served_api, model_registry):
    _, version = model_registry
    with served_api.client() as client:
        model = client.get("/model").json()
        denied = client.post("/admin/model/reload")
        reloaded = client.post("/admin/model/reload", headers={"X-API-Key": served_api.admin_key})
    assert model["version"] == version
    assert set(model["metadata"]["validation_metrics"]) == {"15", "30", "60"}
    assert denied.status_code == 401
    assert reloaded.status_code == 200 and reloaded.json()["version"] == version


def test_health_checks_kafka_consumer_and_registry(served_api):
    with served_api.client() as client:
        response = client.get("/health")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["kafka"]["ok"] and body["checks"]["kafka"]["missing_topics"] == []
    assert body["checks"]["consumer"]["partitions"] == 8
    assert body["checks"]["model_registry"]["latest_version"] == served_api.runtime.model.version
    assert body["checks"]["streaming_job"]["state"] == "no_input"  # the session's raw topic does not exist


def test_health_is_503_when_kafka_is_unreachable(tmp_path):
    settings = ApiSettings(bootstrap_servers="127.0.0.1:1", kafka_timeout_s=1.0, model_registry=tmp_path)
    with TestClient(create_app(settings, start_feed=False)) as client:
        response = client.get("/health")
    body = response.json()
    assert response.status_code == 503 and body["status"] == "degraded"
    assert body["checks"]["kafka"]["ok"] is False and body["checks"]["model_registry"]["ok"] is False


def test_metrics_expose_ingest_and_stream_counters(served_api, timeline):
    _produced_through(served_api, timeline, 0)
    with served_api.client() as client:
        text = client.get("/metrics").text
    assert 'traffic_api_records_total{kind="prediction"}' in text
    assert "traffic_api_sse_clients" in text and "traffic_api_hub_last_event_id" in text
