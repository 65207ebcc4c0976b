"""The live API holds its OpenAPI contract under an outside fuzzer (schemathesis, every check, stateful phase too).

A real ``traffic serve`` process consumes this session's Kafka topics, holds
real predictions from the project's own model and runs with its rate limit on
(low enough that the fuzzer hits it). schemathesis loads ``/openapi.json``
from it and runs its examples, coverage, fuzzing and stateful phases with
every check; the run must end with 0 failures. ``/stream`` is left out: an
SSE response never ends, so a fuzzer cannot read it (its 4xx answers share
the filter code and the error bodies checked in ``test_errors.py``).

``TRAFFIC_CONTRACT_SEED`` picks the seed (default fixed, so a run is
reproducible; ``random`` for a fresh one) and ``TRAFFIC_CONTRACT_EXAMPLES``
the examples per operation. See docs/api-contract.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_harness import Timeline, wait_until

from api.errors import ErrorBody

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = "20261204"
EXAMPLES = "20"  # per operation and phase: ~1,000 requests, 2-4 minutes on a loaded 2-core machine
RATE_PER_S, BURST = 10, 20  # below the fuzzer's pace, so the limiter answers 429 during the run


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(client: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response:
    """A request that waits out the rate limit the way a polite client does (Retry-After)."""
    for _ in range(30):
        response = client.request(method, path, **kwargs)
        if response.status_code != 429:
            return response
        time.sleep(int(response.headers["retry-after"]))
    raise AssertionError(f"{method} {path} stayed rate limited")


class LiveApi:
    def __init__(self, base_url: str, admin_key: str, proc: subprocess.Popen, log: Path) -> None:
        self.base_url, self.admin_key, self.proc, self.log = base_url, admin_key, proc, log


@pytest.fixture(scope="module")
def live_api(kafka_bootstrap, api_topics, model_registry, timeline: Timeline, tmp_path_factory) -> Iterator[LiveApi]:
    """``traffic serve`` on a free port with the rate limit on, holding a few steps of real predictions."""
    port, key = _port(), uuid.uuid4().hex
    log = tmp_path_factory.mktemp("contract") / "serve.log"
    env = dict(os.environ, TRAFFIC_API_PORT=str(port), TRAFFIC_API_BOOTSTRAP_SERVERS=kafka_bootstrap,
               TRAFFIC_API_MODEL_REGISTRY=str(model_registry[0]), TRAFFIC_API_ADMIN_KEY=key,
               TRAFFIC_API_METADATA_REFRESH_S="1", TRAFFIC_API_RATE_LIMIT_PER_S=str(RATE_PER_S),
               TRAFFIC_API_RATE_LIMIT_BURST=str(BURST), TRAFFIC_TOPICS_RAW=api_topics.raw,
               TRAFFIC_TOPICS_PREDICTIONS=api_topics.predictions,
               TRAFFIC_TOPICS_ALERTS=api_topics.alerts, TRAFFIC_TOPICS_AGGREGATES=api_topics.aggregates)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--log-level", "warning"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        if timeline.produced == 0:
            timeline.produce_next()
        with httpx.Client(base_url=base, timeout=30) as client:
            def healthy() -> bool:
                assert proc.poll() is None, f"traffic serve exited: {log.read_text()[-2000:]}"
                try:
                    return client.get("/health").status_code == 200  # Kafka, consumer and registry all ok
                except httpx.TransportError:
                    return False

            wait_until(healthy, timeout_s=240, message="traffic serve to be healthy")  # imports Beam: slow start
            wait_until(lambda: len(_get(client, "GET", "/predictions/latest", params={"limit": 5000}).json())
                       == 207 * 3, timeout_s=120, message="the API to hold the produced predictions")
        yield LiveApi(base, key, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run_schemathesis(live_api: LiveApi, workdir: Path) -> subprocess.CompletedProcess:
    seed = os.environ.get("TRAFFIC_CONTRACT_SEED", SEED)
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{live_api.base_url}/openapi.json",
           "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
           "--exclude-path", "/stream",
           "--max-examples", os.environ.get("TRAFFIC_CONTRACT_EXAMPLES", EXAMPLES),
           "--header", f"X-API-Key: {live_api.admin_key}",
           "--rate-limit", "auto",  # honour Retry-After; every 429 is still checked against the schema
           "--request-timeout", "60", "--workers", "1", "--generation-database", "none", "--no-color"]
    if seed != "random":
        cmd += ["--seed", seed]
    # in a scratch directory: schemathesis keeps a cache of crashes in ./.schemathesis
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, cwd=workdir)


def test_schemathesis_finds_no_contract_failure_on_the_live_api(live_api, tmp_path):
    with httpx.Client(base_url=live_api.base_url, timeout=30) as client:
        spec = client.get("/openapi.json").json()
        limited_before = _rate_limited(client)
    operations = sum(len(item) for path, item in spec["paths"].items() if path != "/stream")

    run = _run_schemathesis(live_api, tmp_path)
    out = run.stdout + run.stderr
    print(out[out.find("SUMMARY"):])  # operations, phases, cases generated, seed and time (shown with -s or -rP)
    assert run.returncode == 0, f"schemathesis found contract failures:\n{out[-12000:]}"
    assert re.search(rf"Tested: {operations}\b", out), out[-4000:]
    assert re.search(r"✅\s+Stateful", out) and "Scenarios:" in out, out[-4000:]
    generated = int(re.search(r"(\d+) generated", out).group(1))
    assert generated >= 10 * operations, out[-4000:]

    with httpx.Client(base_url=live_api.base_url, timeout=30) as client:
        # the limiter protected the API during the run (and schemathesis checked those 429s against the contract)
        assert _rate_limited(client) > limited_before
        assert _get(client, "GET", "/health").status_code == 200  # still healthy after the fuzz
    assert live_api.proc.poll() is None
    log = live_api.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-4000:]


def _rate_limited(client: httpx.Client) -> float:
    text = client.get("/metrics").text  # exempt from the limit
    return float(re.search(r"^traffic_api_rate_limited_total (\S+)$", text, re.M).group(1))


def test_admin_reload_on_the_live_api_without_a_key_with_a_wrong_key_and_with_the_key(live_api, model_registry):
    with httpx.Client(base_url=live_api.base_url, timeout=30) as client:
        missing = _get(client, "POST", "/admin/model/reload")
        wrong = _get(client, "POST", "/admin/model/reload", headers={"X-API-Key": live_api.admin_key[::-1]})
        empty = _get(client, "POST", "/admin/model/reload", headers={"X-API-Key": ""})
        right = _get(client, "POST", "/admin/model/reload", headers={"X-API-Key": live_api.admin_key})
    for refused, detail in ((missing, "missing X-API-Key header"), (wrong, "invalid API key"),
                            (empty, "missing X-API-Key header")):
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "APIKey"
        assert ErrorBody.model_validate(refused.json()).detail == detail
    assert right.status_code == 200 and right.json()["version"] == model_registry[1]
