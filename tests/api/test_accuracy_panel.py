"""The dashboard's accuracy panel in headless Chromium against the real API and the real PostgreSQL store.

Scores of real METR-LA readings (last-value forecasts with a +-12 mph interval) are written into the store
in two steps while the page is open: the panel's numbers move when the second hour's scores arrive, and
a drift alarm stands out once the forecasts of the third hour go wrong (20 mph too high: no interval
covers its reading). The sensor chart's look-back then draws a day of actuals from the store.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from config.settings import REPO_ROOT, get_settings

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = REPO_ROOT / "artifacts" / "accuracy-panel.png"
DATA = REPO_ROOT / "data" / "metr-la" / "speed.npz"
FIRST_ROW, N_SENSORS, STEP_MS = 2000, 20, 300_000
HALF_WIDTH = 12.0  # wide enough that the honest forecasts cover well over 80 % of these hours


def _scores(first_step: int, steps: int, bias_mph: float = 0.0) -> list[dict]:
    from transforms.scoring import score_record

    with np.load(DATA) as data:
        speeds = data["speed"][FIRST_ROW : FIRST_ROW + first_step + steps + 12, :N_SENSORS].astype(np.float64)
        sensors = [str(s) for s in data["sensor_ids"][:N_SENSORS]]
        t0 = int(data["timestamps"][FIRST_ROW].astype("datetime64[ms]").astype(np.int64))
    out = []
    for step in range(first_step, first_step + steps):
        for j, sensor in enumerate(sensors):
            last = (float(speeds[step, j]) or 50.0) + bias_mph
            for h in (15, 30, 60):
                t = t0 + step * STEP_MS
                p = {"sensor_id": sensor, "event_time": t, "target_time": t + h * 60_000, "horizon_min": h,
                     "predicted_speed_mph": last, "lower_mph": last - HALF_WIDTH, "upper_mph": last + HALF_WIDTH,
                     "coverage": 0.9, "model_version": "v-panel"}
                out.append(score_record(p, float(speeds[step + h // 5, j]), 0))
    return out


SENSOR = "717447"  # the 4th sensor of the file, one of the scored ones


def _actuals(steps: int) -> list[dict]:
    with np.load(DATA) as data:
        j = [str(x) for x in data["sensor_ids"]].index(SENSOR)
        speeds = data["speed"][FIRST_ROW : FIRST_ROW + steps, j].astype(np.float64)
        t0 = int(data["timestamps"][FIRST_ROW].astype("datetime64[ms]").astype(np.int64))
    return [{"sensor_id": SENSOR, "window_start": t0 + i * STEP_MS, "window_end": t0 + (i + 1) * STEP_MS,
             "mean_speed_mph": float(v) if v > 0 else None, "min_speed_mph": None, "max_speed_mph": None,
             "stddev_speed_mph": None, "count": 1, "missing_count": 0 if v > 0 else 1, "pane_timing": "ON_TIME"}
            for i, v in enumerate(speeds)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rows(page) -> dict[str, list[str]]:
    return page.evaluate("Object.fromEntries([...document.querySelectorAll('#acc-rows tr')].map("
                         "tr => [tr.dataset.horizon, [...tr.children].map(td => td.textContent)]))")


def test_accuracy_panel_moves_as_scores_arrive_and_shows_drift(store_dsn: str, monkeypatch) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `traffic setup --with-test-tools`", pytrace=False)
    import uvicorn
    from playwright.sync_api import sync_playwright

    from api.app import create_app
    from api.settings import ApiSettings
    from store.db import connect
    from store.writer import upsert

    monkeypatch.setenv("TRAFFIC_POSTGRES_DB", store_dsn.split("dbname=")[1].split()[0])
    get_settings.cache_clear()
    with connect(store_dsn) as conn:
        upsert(conn, "scores", _scores(0, 12))
    port = _free_port()
    settings = ApiSettings(port=port, rate_limit_per_s=0, accuracy_refresh_s=1, drift_min_scores=10)
    app = create_app(settings, start_feed=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"http://127.0.0.1:{port}/dashboard/")
            page.wait_for_function("document.querySelectorAll('#acc-rows tr').length === 3", timeout=30_000)
            first = _rows(page)
            assert set(first) == {"15", "30", "60"}
            assert all(row[1].endswith(" mph") and row[2].endswith(" %") for row in first.values()), first
            assert page.locator("#acc-alarms li").count() == 0

            with connect(store_dsn) as conn:  # the next hour's scores reach the store
                upsert(conn, "scores", _scores(12, 12))
            page.wait_for_function(
                "before => [...document.querySelectorAll('#acc-rows tr')].some(tr => "
                "tr.children[1].textContent !== before[tr.dataset.horizon][1])", arg=first, timeout=30_000)
            second = _rows(page)
            assert second != first
            assert page.locator("#acc-alarms li").count() == 0
            assert all(float(row[2].rstrip(" %")) >= 80 for row in second.values()), second

            with connect(store_dsn) as conn:  # an hour of forecasts 20 mph too high: coverage collapses
                upsert(conn, "scores", _scores(24, 12, bias_mph=20.0))
            page.wait_for_selector("#acc-alarms li.alarm", timeout=30_000)
            assert page.locator("#acc-rows tr.alarm").count() >= 1
            assert "DRIFT coverage" in page.inner_text("#acc-alarms")
            page.wait_for_function("[...document.querySelectorAll('#acc-rows tr')].some(tr => "
                                   "parseFloat(tr.children[2].textContent) < 50)", timeout=30_000)
            # The sensor chart looks back a day from the store (the live window is empty: no Kafka feed here).
            with connect(store_dsn) as conn:
                upsert(conn, "actuals", _actuals(48))
            page.dispatch_event(f'path[data-sensor-id="{SENSOR}"]', "click")  # markers overlap: no mouse click
            page.wait_for_selector("#chart svg", timeout=30_000)
            assert page.inner_text("#d-id") == SENSOR
            assert page.get_attribute("#chart svg", "data-points-actual") == "0"
            page.select_option("#lookback", "1")
            page.wait_for_function("Number(document.querySelector('#chart svg')"
                                   ".getAttribute('data-points-actual')) >= 40", timeout=30_000)
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            browser.close()
            assert errors == [], f"JavaScript errors on the dashboard: {errors}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        get_settings.cache_clear()
