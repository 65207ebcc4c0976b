"""Request validation, guards and docs of the app, without Kafka (``start_feed=False``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.errors import ValidationErrorBody
from api.settings import ApiSettings


def _client(tmp_path: Path, **overrides) -> TestClient:
    settings = ApiSettings(model_registry=tmp_path / "registry", **overrides)
    return TestClient(create_app(settings, start_feed=False))


@pytest.fixture
def client(tmp_path):
    with _client(tmp_path, rate_limit_per_s=0, admin_key="s3cret", max_request_bytes=1024) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("/sensors/nope", 404, "unknown sensor id 'nope'"),
        ("/sensors/nope/history", 404, "unknown sensor id"),
        ("/sensors?bbox=1,2,3", 422, "bbox: expected four numbers"),
        ("/sensors?bbox=a,b,c,d", 422, "bbox: expected four numbers"),
        ("/sensors?bbox=1e1,2,3,4", 422, "plain decimals"),
        ("/sensors?bbox=91,0,92,1", 422, "latitudes within [-90, 90]"),
        ("/sensors?bbox=0,-181,1,0", 422, "longitudes within [-180, 180]"),
        ("/predictions/latest?horizon=20", 422, "horizon.0: Input should be 15, 30 or 60"),
        ("/predictions/latest?limit=0", 422, "greater than or equal to 1"),
        ("/predictions/latest?limit=5001", 422, "less than or equal to 5000"),
        ("/predictions/latest?sensors=773869,bogus", 404, "unknown sensor ids: 'bogus'"),
        ("/alerts?sensors=bogus", 404, "unknown sensor ids: 'bogus'"),
        ("/predictions/latest?sensors=,", 422, "give one or more sensor ids"),
        ("/predictions/latest?sensors=773869,", 422, "no empty ids"),
        ("/predictions/latest?min_congestion=TERRIBLE", 422, "FREE_FLOW"),
        ("/alerts?min_severity=LOUD", 422, "CRITICAL"),
        ("/stream?types=weather", 422, "prediction"),
        ("/sensors/773869/history?horizon=45", 422, "15, 30 or 60"),
        ("/sensors/773869/history?since_ms=-5", 422, "greater than or equal to 0"),
        ("/predictions/analytics?horizon=abc", 422, "horizon: Input should be 15, 30 or 60"),
        ("/predictions/analytics?horizon=45", 422, "horizon: Input should be 15, 30 or 60"),
    ],
)
def test_invalid_requests_get_a_4xx_with_a_clear_message(client, path, status, needle):
    response = client.get(path)
    assert response.status_code == status, response.text
    body = response.json()
    assert needle in body["detail"]
    if status == 422:  # the documented ValidationErrorBody: a one-line detail plus every bad parameter
        assert ValidationErrorBody.model_validate(body).errors and "\n" not in body["detail"]
        assert body["errors"][0]["loc"][0] in ("query", "path", "header")
    else:
        assert set(body) == {"detail"}


@pytest.mark.parametrize("header", ["abc", "-3", "1.5"])
def test_bad_last_event_id_is_422(client, header):
    response = client.get("/stream", headers={"Last-Event-ID": header})
    assert response.status_code == 422
    assert response.json()["detail"] == "last-event-id: must be an event id (a non-negative integer; empty = none)"


def test_valid_filters_are_accepted_and_empty_state_is_served(client):
    assert client.get("/predictions/latest?horizon=15&horizon=60&bbox=33,-119,35,-117&limit=5").json() == []
    sensors = client.get("/sensors").json()
    assert len(sensors) == 207 and {"sensor_id", "latitude", "longitude"} <= set(sensors[0])
    boxed = client.get("/sensors?bbox=34.15,-118.35,34.20,-118.20").json()
    assert 0 < len(boxed) < 207 and all(34.15 <= s["latitude"] <= 34.20 for s in boxed)
    # the same box from its other two corners: the corners may come in any order
    assert client.get("/sensors?bbox=34.20,-118.20,34.15,-118.35").json() == boxed
    assert client.get("/sensors?bbox=34.20,-118.35,34.15,-118.20").json() == boxed
    assert client.get("/sensors?sensors=773869&bbox=34.15,-118.35,34.20,-118.20").json() == \
        [s for s in boxed if s["sensor_id"] == "773869"]
    assert client.get("/alerts?min_severity=WARNING").json() == []


def test_admin_needs_the_api_key(client):
    missing = client.post("/admin/model/reload")
    assert missing.status_code == 401 and missing.json() == {"detail": "missing X-API-Key header"}
    assert missing.headers["www-authenticate"] == "APIKey"
    wrong = client.post("/admin/model/reload", headers={"X-API-Key": "wrong"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "invalid API key"}
    assert wrong.headers["www-authenticate"] == "APIKey"
    assert client.post("/admin/model/reload", headers={"X-API-Key": "s3cret "}).status_code == 401
    response = client.post("/admin/model/reload", headers={"X-API-Key": "s3cret"})
    assert response.status_code == 409 and "does not exist" in response.json()["detail"]  # the key passed


def test_admin_is_disabled_without_a_configured_key(tmp_path):
    with _client(tmp_path) as c:
        for headers in ({"X-API-Key": "anything"}, {}):
            response = c.post("/admin/model/reload", headers=headers)
            assert response.status_code == 403 and "TRAFFIC_API_ADMIN_KEY" in response.json()["detail"]


def test_request_bodies_over_the_limit_get_413(client):
    response = client.post("/admin/model/reload", content=b"x" * 2048, headers={"X-API-Key": "s3cret"})
    assert response.status_code == 413 and "1024 bytes" in response.json()["detail"]

    def chunks():
        for _ in range(4):
            yield b"y" * 512

    response = client.post("/admin/model/reload", content=chunks(), headers={"X-API-Key": "s3cret"})
    assert response.status_code == 413


def test_rate_limit_answers_429_with_retry_after_and_spares_metrics(tmp_path):
    with _client(tmp_path, rate_limit_per_s=0.5, rate_limit_burst=3) as c:
        codes = [c.get("/sensors/773869").status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        limited = c.get("/sensors")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert c.get("/metrics").status_code == 200
        assert "traffic_api_rate_limited_total 3.0" in c.get("/metrics").text


def test_cors_allowlist(tmp_path):
    with _client(tmp_path, cors_origins=["https://ops.example.org"]) as c:
        allowed = c.get("/sensors/773869", headers={"Origin": "https://ops.example.org"})
        other = c.get("/sensors/773869", headers={"Origin": "https://evil.example.com"})
    assert allowed.headers.get("access-control-allow-origin") == "https://ops.example.org"
    assert "access-control-allow-origin" not in other.headers


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/stream", "/predictions/latest", "/predictions/analytics", "/sensors", "/sensors/{sensor_id}",
                 "/sensors/{sensor_id}/history", "/alerts", "/model", "/admin/model/reload", "/health", "/metrics"):
        assert path in paths
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/dashboard/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert client.get("/dashboard/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200


def test_dashboard_is_served_with_its_vendor_files(client):
    assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard/"
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "vendor/leaflet/leaflet.js" in page.text
    assert client.get("/dashboard/vendor/leaflet/leaflet.js").status_code == 200
    assert client.get("/dashboard/config.json").json()["tile_url"] is None  # offline by default


def test_head_on_the_stream_is_refused_without_subscribing(client):
    assert client.head("/stream").status_code == 405
    assert client.app.state.runtime.hub.subscribers == set()
