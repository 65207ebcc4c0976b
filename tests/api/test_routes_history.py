"""``/history`` and ``/accuracy`` on the real PostgreSQL store, filled by ``traffic batch backfill --to-store``
over a day of real readings: a day of one sensor is what the run's Parquet files hold, the accuracy is what
those scores give, the gauges are on /metrics, and all of it is still there after the API restarts.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from small_models import register_ridge_bundle

from api.app import create_app
from api.settings import ApiSettings
from config.settings import get_settings
from ml.dataset import TRAIN_END_MS
from pipelines.batch_cli import run

pytestmark = pytest.mark.integration

DAY_MS = 24 * 3600 * 1000
START_MS = TRAIN_END_MS + 5 * DAY_MS
HOUR_MS = 3600 * 1000


def iso(ms: int) -> str:
    return str(np.datetime64(ms, "ms"))


def _expected_accuracy(scores: list[dict]) -> dict[int, dict]:
    now = max(s["target_time"] for s in scores if s["status"] == "SCORED")
    out = {}
    for h in (15, 30, 60):
        window = [s for s in scores if s["horizon_min"] == h and now - HOUR_MS < s["target_time"] <= now]
        scored = [s for s in window if s["status"] == "SCORED"]
        out[h] = {"scored": len(scored), "missing": len(window) - len(scored),
                  "mae": float(np.mean([abs(s["error_mph"]) for s in scored])),
                  "coverage": float(np.mean([s["inside_interval"] for s in scored]))}
    return out


def _check(client: TestClient, sensor: str, predictions: list[dict], scores: list[dict], expected: dict) -> None:
    got = client.get(f"/history/{sensor}", params={"start_ms": START_MS, "end_ms": START_MS + DAY_MS})
    assert got.status_code == 200, got.text
    body = got.json()
    assert len(body["actuals"]) == DAY_MS // 300_000
    stored = sorted((p["event_time_ms"], p["horizon_min"], p["predicted_speed_mph"], p["lower_mph"], p["upper_mph"])
                    for rows in body["predictions"].values() for p in rows)
    assert stored == sorted((p["event_time"], p["horizon_min"], p["predicted_speed_mph"], p["lower_mph"],
                             p["upper_mph"]) for p in predictions)
    assert sorted((s["event_time_ms"], s["horizon_min"], s["status"], s["error_mph"]) for s in body["scores"]) == \
        sorted((s["event_time"], s["horizon_min"], s["status"], s["error_mph"]) for s in scores)
    report = client.get("/accuracy", params={"window": "1h"})
    assert report.status_code == 200, report.text
    rows = {r["horizon_min"]: r for r in report.json()["network"]}
    for h, want in expected.items():
        assert (rows[h]["scored"], rows[h]["missing"]) == (want["scored"], want["missing"])
        assert rows[h]["mae"] == pytest.approx(want["mae"], abs=1e-9)
        assert rows[h]["coverage"] == pytest.approx(want["coverage"], abs=1e-12)
    one = client.get("/accuracy", params={"window": "1d", "sensor_id": sensor})
    assert one.status_code == 200 and {r["sensor_id"] for r in one.json()["network"]} == {sensor}
    deadline = time.monotonic() + 60
    while "traffic_forecast_mae_mph{" not in (text := client.get("/metrics").text):
        assert time.monotonic() < deadline, "the accuracy gauges never appeared on /metrics"
        time.sleep(0.5)
    assert 'window="1h"' in text and 'window="1d"' in text and f'sensor="{sensor}"' in text


def test_history_and_accuracy_from_the_store_survive_a_restart(store_dsn: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRAFFIC_POSTGRES_DB", store_dsn.split("dbname=")[1].split()[0])
    get_settings.cache_clear()
    root = str(tmp_path / "registry")
    bundle = register_ridge_bundle(root, 2)
    out = tmp_path / "day"
    try:
        assert run(["backfill", "--registry", root, "--start", iso(START_MS), "--end", iso(START_MS + DAY_MS),
                    "--output", str(out), "--to-store"]) == 0
        sensor = bundle.context.sensor_ids[0]
        in_day = lambda r: r["sensor_id"] == sensor and START_MS <= r["target_time"] < START_MS + DAY_MS  # noqa: E731
        predictions = [r for r in pq.read_table(out / "predictions").to_pylist() if in_day(r)]
        all_scores = pq.read_table(out / "scores").to_pylist()
        scores = [r for r in all_scores if in_day(r)]
        expected = _expected_accuracy(all_scores)
        settings = ApiSettings(model_registry=root, require_vendor=False, accuracy_refresh_s=0.5,
                               rate_limit_per_s=0)
        for _restart in range(2):
            with TestClient(create_app(settings, start_feed=False)) as client:
                _check(client, sensor, predictions, scores, expected)
                empty = client.get(f"/history/{sensor}", params={"start_ms": START_MS, "end_ms": START_MS})
                assert empty.status_code == 200 and not empty.json()["actuals"]  # an empty range holds nothing
                assert client.get("/history/999", params={"start_ms": 0, "end_ms": 1}).status_code == 404
                # a range over history_max_days is cut to the days that end at end_ms: the same day comes back
                long_range = client.get(f"/history/{sensor}", params={"start_ms": 0, "end_ms": START_MS + DAY_MS})
                day = client.get(f"/history/{sensor}", params={"start_ms": START_MS, "end_ms": START_MS + DAY_MS})
                assert long_range.status_code == 200 and day.json()["actuals"]
                assert all(a in long_range.json()["actuals"] for a in day.json()["actuals"])
    finally:
        get_settings.cache_clear()
