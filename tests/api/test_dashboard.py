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
    assert page.locator("#alerts li").count() == 0  # alerts stay on /alerts; the dashboard lists incidents
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


ARTIFACTS = REPO_ROOT / ".work" / "artifacts"


def _roads_match(page, expected: dict[str, str]) -> None:
    """Wait until every road half ending at a sensor has that sensor's expected congestion colour."""
    page.wait_for_function(
        "expected => [...document.querySelectorAll('path[data-road]')].every(p => "
        "p.getAttribute('data-congestion') === (expected[p.getAttribute('data-sensor')] || 'NONE'))",
        arg=expected, timeout=30_000)


def _open_ids(incidents: list[dict], upto_ms: int) -> list[str]:
    latest: dict[str, dict] = {}
    for r in incidents:
        if r["updated_at"] <= upto_ms:
            latest[r["incident_id"]] = r
    return sorted(k for k, r in latest.items() if r["state"] != "CLOSED")


def test_dashboard_draws_roads_and_lists_incidents_live(served_api, timeline, real_incidents, page):
    from api_harness import wait_until

    from ml.road_graph import bundled_road_links

    if timeline.produced == 0:
        timeline.produce_next()
    links = bundled_road_links(served_api.runtime.catalog.ids)
    book = served_api.runtime.incidents
    wait_until(lambda: _open_ids(list(book.latest.values()), 10**15)
               == _open_ids(real_incidents, timeline.steps[timeline.produced - 1]), message="the API's incidents")
    page.goto(served_api.base_url + "/dashboard/")
    page.wait_for_selector("#status.live", timeout=30_000)
    assert page.locator("path[data-road]").count() == 2 * len(links)  # each link in two halves
    current = timeline.produced - 1
    _roads_match(page, {p["sensor_id"]: p["congestion"] for p in timeline.step_records(current, "prediction")
                        if p["horizon_min"] == 15})

    def listed() -> list[tuple[str, str]]:
        return [(li.get_attribute("data-incident-id"), li.get_attribute("data-state"))
                for li in page.query_selector_all("#incidents li")]

    def wait_open(ids: list[str]) -> None:
        page.wait_for_function(
            "ids => JSON.stringify([...document.querySelectorAll('#incidents li')]"
            ".filter(li => li.dataset.state !== 'CLOSED').map(li => li.dataset.incidentId).sort())"
            " === JSON.stringify(ids)", arg=ids, timeout=30_000)

    wait_open(_open_ids(real_incidents, timeline.steps[current]))
    before = listed()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-roads-before.png"))

    # produce steps until the open incidents change, while the page is open
    start_open = _open_ids(real_incidents, timeline.steps[current])
    while timeline.produced < len(timeline.steps):
        timeline.produce_next()
        if _open_ids(real_incidents, timeline.steps[timeline.produced - 1]) != start_open:
            break
    final = timeline.produced - 1
    want_open = _open_ids(real_incidents, timeline.steps[final])
    assert want_open != start_open, "the remaining hours change the open incidents"
    wait_open(want_open)
    _roads_match(page, {p["sensor_id"]: p["congestion"] for p in timeline.step_records(final, "prediction")
                        if p["horizon_min"] == 15})
    after = listed()
    assert after != before
    states = [state for _, state in after]
    assert states == sorted(states, key=["OPEN", "CLEARING", "CLOSED"].index)  # open first
    page.select_option("#horizon", "60")  # the roads recolour from the 60-minute forecasts
    _roads_match(page, {p["sensor_id"]: p["congestion"] for p in timeline.step_records(final, "prediction")
                        if p["horizon_min"] == 60})

    if want_open:  # a click zooms the map to the incident's sensors: the smallest open one, a few sensors wide
        latest = {i: book.latest[i] for i in want_open}
        incident_id = min(want_open, key=lambda i: (len(latest[i]["sensor_ids"]), i))
        sensors = len(latest[incident_id]["sensor_ids"])
        zoom_before = float(page.get_attribute("#map", "data-zoom"))
        page.click(f'#incidents li[data-incident-id="{incident_id}"]')
        page.wait_for_function("id => document.getElementById('map').dataset.zoomedIncident === id",
                               arg=incident_id, timeout=30_000)
        assert "selected" in page.get_attribute(f'#incidents li[data-incident-id="{incident_id}"]', "class")
        if sensors <= 3:
            page.wait_for_function("z => Number(document.getElementById('map').dataset.zoom) > z",
                                   arg=zoom_before, timeout=30_000)
        assert page.locator("path.incident-ring").count() == sensors
        page.wait_for_timeout(500)  # the zoom animation
        in_view = page.evaluate(
            "() => { const m = document.getElementById('map').getBoundingClientRect();"
            " return [...document.querySelectorAll('path.incident-ring')].every(p => {"
            " const r = p.getBoundingClientRect(); return r.left >= m.left && r.right <= m.right"
            " && r.top >= m.top && r.bottom <= m.bottom; }); }")
        assert in_view, "every ringed sensor is in view after the zoom"
        text = page.inner_text(f'#incidents li[data-incident-id="{incident_id}"]')
        assert "since" in text and ("worsening" in text or "stable" in text or "improving" in text)
    page.wait_for_timeout(500)
    shot = ARTIFACTS / "dashboard-incidents.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
