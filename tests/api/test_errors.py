"""The error model and the OpenAPI contract of every route, checked on the app itself (no Kafka)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.deps import BBOX_PATTERN, SENSORS_PATTERN
from api.errors import ErrorBody, ValidationErrorBody, error_responses
from api.security import RATE_LIMIT_EXEMPT
from api.settings import ApiSettings

ERROR_REF = "#/components/schemas/ErrorBody"
VALIDATION_REF = "#/components/schemas/ValidationErrorBody"


def _client(tmp_path: Path, **overrides) -> TestClient:
    return TestClient(create_app(ApiSettings(model_registry=tmp_path / "registry", **overrides), start_feed=False))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with _client(tmp_path_factory.mktemp("errors"), rate_limit_per_s=0, admin_key="s3cret") as c:
        yield c


@pytest.fixture(scope="module")
def operations(client) -> dict[str, dict]:
    spec = client.get("/openapi.json").json()
    return {f"{method.upper()} {path}": op for path, item in spec["paths"].items() for method, op in item.items()}


def _ref(response: dict) -> str | None:
    return response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")


def test_error_responses_gives_each_code_its_body_and_headers():
    responses = error_responses(429, 401, 422)
    assert list(responses) == [401, 422, 429]
    assert responses[422]["model"] is ValidationErrorBody and responses[401]["model"] is ErrorBody
    assert responses[429]["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
    assert responses[401]["headers"]["WWW-Authenticate"]["required"] is True
    with pytest.raises(ValueError, match=r"no documented error body for status \[418\]"):
        error_responses(418)


def test_every_error_status_is_documented_with_the_shared_body(client, operations):
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's default 422 shape is gone
    for name, op in operations.items():
        path = name.split(" ", 1)[1]
        codes = set(op["responses"])
        assert "503" in codes, name
        assert ("429" in codes) == (path not in RATE_LIMIT_EXEMPT), name
        assert ("422" in codes) == bool(op.get("parameters")) or path.startswith("/sensors/"), name
        for code, response in op["responses"].items():
            if code.startswith(("4", "5")) and path != "/health":
                assert _ref(response) == (VALIDATION_REF if code == "422" else ERROR_REF), (name, code)
        if "429" in codes:
            assert op["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    assert _ref(operations["GET /health"]["responses"]["503"]) == "#/components/schemas/Health"
    admin = operations["POST /admin/model/reload"]
    assert {"400", "401", "403", "409", "413"} <= set(admin["responses"]) and admin["security"] == [{"AdminKey": []}]
    assert spec["components"]["securitySchemes"]["AdminKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "the admin key (TRAFFIC_API_ADMIN_KEY); admin routes only"}
    for name in ("GET /sensors/{sensor_id}", "GET /sensors/{sensor_id}/history", "GET /sensors", "GET /alerts",
                 "GET /predictions/latest", "GET /stream"):
        assert "404" in operations[name]["responses"], name


def _params(op: dict) -> dict[str, dict]:
    return {p["name"]: p["schema"] for p in op.get("parameters", [])}


def test_every_parameter_constraint_is_in_the_schema(client, operations):
    horizon = client.get("/openapi.json").json()["components"]["schemas"]["Horizon"]
    assert horizon == {"type": "integer", "enum": [15, 30, 60], "title": "Horizon",
                       "description": "A forecast horizon in minutes."}
    analytics = _params(operations["GET /predictions/analytics"])
    assert analytics["horizon"]["$ref"] == "#/components/schemas/Horizon"
    latest = _params(operations["GET /predictions/latest"])
    assert latest["limit"]["minimum"] == 1 and latest["limit"]["maximum"] == 5000
    assert latest["horizon"]["anyOf"][0] == {"type": "array", "items": {"$ref": "#/components/schemas/Horizon"}}
    assert latest["bbox"]["anyOf"][0] == {"type": "string", "pattern": BBOX_PATTERN}
    assert latest["sensors"]["anyOf"][0] == {"type": "string", "pattern": SENSORS_PATTERN}
    assert latest["min_congestion"]["anyOf"][0]["enum"] == ["FREE_FLOW", "MODERATE", "HEAVY", "SEVERE"]
    alerts = _params(operations["GET /alerts"])
    assert alerts["min_severity"]["anyOf"][0]["enum"] == ["INFO", "WARNING", "CRITICAL"]
    assert alerts["types"]["anyOf"][0]["items"]["enum"] == ["prediction", "alert", "reading", "incident"]
    since = _params(operations["GET /sensors/{sensor_id}/history"])["since_ms"]["anyOf"][0]
    assert since == {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
    assert _params(operations["GET /stream"])["last-event-id"]["anyOf"][0]["pattern"] == "^[0-9]*$"


_CORNER = st.tuples(st.floats(-90, 90), st.floats(-180, 180)).map(lambda c: f"{c[0]:.4f},{c[1]:.4f}")


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.one_of(st.builds(lambda a, b: f"{a},{b}", _CORNER, _CORNER), st.text(max_size=40)))
@example("34.05,-118.35,34.20,-118.20\n")
@example(" 34.05,-118.35,34.20,-118.20")
@example("90.0,180.0,-90.00,-180")
@example("90.5,0,0,0")
def test_the_server_accepts_exactly_the_bboxes_the_pattern_allows(client, bbox):
    """What the schema calls valid is answered 200, everything else 422: one regex decides both."""
    response = client.get("/sensors", params={"bbox": bbox})
    matches = re.fullmatch(BBOX_PATTERN.strip("^$"), bbox) is not None
    assert response.status_code == (200 if matches else 422), (bbox, response.text)


def test_guards_answer_with_the_documented_error_body(tmp_path):
    with _client(tmp_path, rate_limit_per_s=0.5, rate_limit_burst=1) as c:
        assert c.get("/model").status_code == 200
        limited = c.get("/model")
    with _client(tmp_path, rate_limit_per_s=0, max_request_bytes=10, admin_key="k") as c:
        too_big = c.post("/admin/model/reload", content=b"x" * 100, headers={"X-API-Key": "k"})
        bad_length = c.post("/admin/model/reload", headers={"X-API-Key": "k", "Content-Length": "ten"})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert too_big.status_code == 413 and bad_length.status_code == 400
    for response in (limited, too_big, bad_length):
        assert ErrorBody.model_validate(response.json()).detail and set(response.json()) == {"detail"}


def test_before_start_up_health_says_starting_and_routes_answer_503(tmp_path):
    client = _client(tmp_path)  # not entered: the lifespan has not built the runtime
    health = client.get("/health")
    assert health.status_code == 503 and health.json() == {"status": "starting", "checks": {}}
    sensors = client.get("/sensors")
    assert sensors.status_code == 503 and sensors.json() == {"detail": "the API is starting up; retry in a moment"}
