"""The dashboard in headless Chromium (Debian's, driven by Playwright) against the real API and Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = REPO_ROOT / "artifacts" / "dashboard.png"


@pytest.fixture
def page():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `traffic setup --with-test-tools`", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 850})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        browser.close()
        assert errors == [], f"JavaScript errors on the dashboard: {errors}"


def _marker(page, sensor_id: str) -> str:
    return page.get_attribute(f'path[data-sensor-id="{sensor_id}"]', "data-congestion")


def _changing_sensor(timeline, current: int) -> tuple[str, int]:
    """A sensor whose 15-minute congestion differs in a later, unproduced step, and that step."""
    now = {p["sensor_id"]: p["congestion"] for p in timeline.step_records(current, "prediction")
           if p["horizon_min"] == 15}
    for later in range(current + 1, len(timeline.steps)):
        for p in timeline.step_records(later, "prediction"):
            if p["horizon_min"] == 15 and p["congestion"] != now[p["sensor_id"]]:
                return p["sensor_id"], later
    raise AssertionError("no sensor changes congestion in the remaining hours")


def test_dashboard_colours_markers_live_and_charts_a_sensor(served_api, timeline, page):
    if timeline.produced == 0:
        timeline.produce_next()
    current = timeline.produced - 1
    step = timeline.steps[current]
    state = served_api.runtime.state
    from api_harness import wait_until

    wait_until(lambda: sum(1 for p in state.latest.values() if p["event_time"] >= step) == 207 * 3,
               message="the API to have the current step")
    page.goto(served_api.base_url + "/dashboard/")
    page.wait_for_selector("#status.live", timeout=30_000)
    assert page.locator("path[data-sensor-id]").count() == 207

    sensor_id, later = _changing_sensor(timeline, current)
    before = timeline.prediction(current, sensor_id, 15)["congestion"]
    page.wait_for_function(f'document.querySelector(\'path[data-sensor-id="{sensor_id}"]\')'
                           f'.getAttribute("data-congestion") === "{before}"', timeout=30_000)
    initial = {sid: _marker(page, sid) for sid in state.catalog.ids}
    assert set(initial.values()) <= {"FREE_FLOW", "MODERATE", "HEAVY", "SEVERE", "UNKNOWN"}

    while timeline.produced <= later:  # predictions arrive over SSE while the page is open
        timeline.produce_next()
    after = timeline.prediction(later, sensor_id, 15)["congestion"]
    final = timeline.produced - 1
    expected_final = {p["sensor_id"]: p["congestion"] for p in timeline.step_records(final, "prediction")
                      if p["horizon_min"] == 15}
    page.wait_for_function(
        "expected => Object.entries(expected).every(([sid, cat]) => "
        "document.querySelector(`path[data-sensor-id=\"${sid}\"]`).getAttribute('data-congestion') === cat)",
        arg=expected_final, timeout=30_000)
    assert _marker(page, sensor_id) == after != before
    assert int(page.inner_text("#a-events").replace(",", "")) > 0

    page.select_option("#horizon", "60")  # the horizon selector recolours from the 60-minute forecasts
    expected_60 = {p["sensor_id"]: p["congestion"] for p in timeline.step_records(final, "prediction")
                   if p["horizon_min"] == 60}
    page.wait_for_function(
        "expected => Object.entries(expected).every(([sid, cat]) => "
        "document.querySelector(`path[data-sensor-id=\"${sid}\"]`).getAttribute('data-congestion') === cat)",
        arg=expected_60, timeout=30_000)
    breakdown = {el.get_attribute("data-congestion"): int(el.get_attribute("data-count"))
                 for el in page.query_selector_all("#breakdown div")}
    counts: dict[str, int] = {}
    for cat in expected_60.values():
        counts[cat] = counts.get(cat, 0) + 1
    assert breakdown == counts

    page.select_option("#horizon", "15")
    page.dispatch_event(f'path[data-sensor-id="{sensor_id}"]', "click")  # markers overlap: target this one
    page.wait_for_selector("#chart svg polyline.predicted", timeout=30_000)
    chart = page.locator("#chart svg")
    assert int(chart.get_attribute("data-points-predicted")) == timeline.produced
    assert int(chart.get_attribute("data-points-actual")) >= 12
    assert page.locator("#chart svg polygon.interval").count() == 1
    assert sensor_id in page.inner_text("#d-id")
    if timeline.records.alerts:
        page.wait_for_selector("#alerts li", timeout=30_000)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
