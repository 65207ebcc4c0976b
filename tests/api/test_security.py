"""api/security.py: body size limit, per-IP rate limit and the admin key, on a tiny ASGI app (no Kafka)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from api.security import RATE_LIMIT_EXEMPT, BodySizeLimit, RateLimit, check_api_key


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"size": len(await request.body())}

    @app.get("/ping")
    def ping() -> dict:
        return {"ok": True}

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    return app


def test_a_body_over_the_limit_gets_413_by_content_length_and_one_within_passes() -> None:
    client = TestClient(BodySizeLimit(_echo_app(), max_bytes=10))
    assert client.post("/echo", content=b"x" * 10).json() == {"size": 10}
    refused = client.post("/echo", content=b"x" * 11)
    assert refused.status_code == 413 and refused.json() == {"detail": "request body larger than 10 bytes"}


def test_a_chunked_body_over_the_limit_gets_413_and_a_small_one_reaches_the_app_whole() -> None:
    client = TestClient(BodySizeLimit(_echo_app(), max_bytes=10))

    def chunks(n: int):
        for _ in range(n):
            yield b"abc"

    assert client.post("/echo", content=chunks(3)).json() == {"size": 9}  # no Content-Length: chunked
    assert client.post("/echo", content=chunks(4)).status_code == 413


def test_a_bad_content_length_is_400() -> None:
    client = TestClient(BodySizeLimit(_echo_app(), max_bytes=10))
    response = client.post("/echo", content=b"x", headers={"content-length": "ten"})
    assert response.status_code == 400 and response.json()["detail"] == "invalid Content-Length header"


def test_get_requests_skip_the_body_check() -> None:
    assert TestClient(BodySizeLimit(_echo_app(), max_bytes=0)).get("/ping").json() == {"ok": True}


def test_the_rate_limit_allows_the_burst_then_429_with_retry_after_and_counts_it() -> None:
    limited: list[int] = []
    client = TestClient(RateLimit(_echo_app(), per_s=0.01, burst=3, on_limited=lambda: limited.append(1)))
    assert [client.get("/ping").status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get("/ping")
    assert refused.status_code == 429 and "rate limit exceeded" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) >= 1 and limited == [1]


def test_monitoring_paths_are_never_throttled() -> None:
    assert "/health" in RATE_LIMIT_EXEMPT
    client = TestClient(RateLimit(_echo_app(), per_s=0.01, burst=1))
    assert [client.get("/health").status_code for _ in range(5)] == [200] * 5


def test_rate_zero_turns_the_limit_off() -> None:
    client = TestClient(RateLimit(_echo_app(), per_s=0, burst=1))
    assert [client.get("/ping").status_code for _ in range(5)] == [200] * 5


def test_the_token_bucket_refills_with_time_per_client() -> None:
    limit = RateLimit(_echo_app(), per_s=2.0, burst=2)
    assert limit._take("a", 0.0) == 0.0 and limit._take("a", 0.0) == 0.0
    assert limit._take("a", 0.0) == pytest.approx(0.5)  # empty: one token in half a second
    assert limit._take("b", 0.0) == 0.0  # another client has its own bucket
    assert limit._take("a", 0.5) == 0.0  # refilled


def test_the_admin_key_is_compared_and_admin_is_off_without_one() -> None:
    check_api_key("secret", "secret")
    cases = [(None, "x", 403), ("secret", None, 401), ("secret", "wrong", 401), ("secret", "secre", 401)]
    for configured, given, code in cases:
        with pytest.raises(HTTPException) as info:
            check_api_key(configured, given)
        assert info.value.status_code == code
