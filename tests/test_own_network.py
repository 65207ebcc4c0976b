"""A network that is not METR-LA as shipped, end to end on the real services (docs/networks.md).

60 METR-LA sensors, renamed (``x`` before each id) and moved 52 weeks on, are saved in the long CSV layout
with their locations and no road graph. The path a user takes: ``traffic network import`` (graph built from
the locations, split by fractions), ``traffic batch features``, ``traffic train``, ``traffic evaluate``,
``traffic replay`` and ``traffic stream`` on Prism with the real Kafka, then ``traffic serve``: ``/sensors``,
``/roads`` and the dashboard in Chromium show those 60 sensors and the network's title.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from topic_contents import read_all

from cli.main import main
from ml.dataset import load_metrla
from ml.features import FEATURE_NAMES, fit_context
from ml.network import load_network
from ml.registry import ModelRegistry
from ml.training_set import examples
from schemas.codec import AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.browser]

WEEK_MS = 7 * 86_400_000
SHIFT_MS = 52 * WEEK_MS  # a year on, weekdays kept
FIRST = "2012-04-01"
DAYS = 10
TITLE = "Sixty sensors"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def network_files(tmp_path_factory) -> dict[str, Path]:
    data = load_metrla()
    ids = list(data.sensor_ids[100:160])
    start = int(np.datetime64(FIRST, "ms").astype(np.int64))
    part = data.only(ids).between(start, start + DAYS * 86_400_000)
    root = tmp_path_factory.mktemp("own-network")
    frame = pd.DataFrame({
        "sensor_id": np.tile([f"x{s}" for s in ids], part.n_steps),
        "time": pd.to_datetime(np.repeat(part.times_ms + SHIFT_MS, len(ids)), unit="ms").strftime("%Y-%m-%dT%H:%M"),
        "speed": part.speed.ravel(),
    })
    frame[frame.speed > 0].to_csv(root / "readings.csv", index=False)
    locations = pd.read_csv(load_network().root / "sensors.csv", dtype={"sensor_id": str})
    locations = locations[locations.sensor_id.isin(ids)]
    locations["sensor_id"] = "x" + locations.sensor_id
    locations.to_csv(root / "sensors.csv", index=False)
    return {"root": root, "readings": root / "readings.csv", "locations": root / "sensors.csv",
            "network": root / "x60", "registry": root / "registry"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(condition, timeout_s: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited while waiting for {what}: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f": {log.read_text()[-3000:]}" if log else ""))
        time.sleep(1)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_network_of_ones_own_goes_from_files_to_the_dashboard(network_files, kafka_bootstrap, fresh_topic,
                                                                capsys, monkeypatch) -> None:
    files = network_files
    monkeypatch.setenv("TRAFFIC_FEATURE_TABLES", str(files["root"] / "tables"))  # `traffic train` builds them
    net = str(files["network"])
    assert main(["network", "import", "--name", "x60", "--title", TITLE, "--readings", str(files["readings"]),
                 "--locations", str(files["locations"]), "--split", "0.6,0.2,0.2", "--output", net]) == 0
    network = load_network(net)
    assert len(network.sensor_ids) == 60 and all(s.startswith("x") for s in network.sensor_ids)
    assert "built from locations" in network.graph_how and len(network.road_links()) >= 59

    # Batch features: the network's split labels the rows, and the features are the in-process oracle's
    # (the graph features use the graph built from the locations).
    out = files["root"] / "batch"
    assert main(["batch", "features", "--network", net, "--output", str(out)]) == 0
    table = pq.read_table(out / "features" / "val").to_pandas().sort_values(["step_ms", "sensor_id"])
    data = network.readings()
    x, _, meta = examples(data, fit_context(data, network.adjacency()), "val")
    oracle = pd.DataFrame(x, columns=FEATURE_NAMES).assign(sensor_id=meta.sensor_id, step_ms=meta.step_ms)
    oracle = oracle.sort_values(["step_ms", "sensor_id"])
    assert len(table) == len(oracle) > 0
    np.testing.assert_allclose(table[list(FEATURE_NAMES)].to_numpy(np.float64),
                               oracle[list(FEATURE_NAMES)].to_numpy(np.float64), rtol=1e-6, atol=1e-6)
    assert set(network.split.of(table["step_ms"].to_numpy())) == {"val"}

    registry = str(files["registry"])
    assert main(["train", "--network", net, "--registry", registry, "--candidates", "ridge",
                 "--max-rows", "20000"]) == 0
    bundle = ModelRegistry(registry).load()  # a --registry given is the root itself
    assert bundle.metadata["network"] == "x60" and tuple(bundle.context.sensor_ids) == network.sensor_ids
    assert bundle.metadata["feature_tables"] == str(files["root"] / "tables" / "networks" / "x60" / "full")
    capsys.readouterr()
    assert main(["evaluate", "--network", net, "--registry", registry, "--json",
                 "--out", str(files["root"] / "evaluation")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"val", "test"}
    for split in result.values():
        assert set(split) == {"15", "30", "60"}
        assert split["15"]["mae"] < split["15"]["baselines"]["historical_average"]["mae"]

    # Streaming on Prism: `traffic replay` and `traffic stream` with the network.
    env = {**os.environ, "TRAFFIC_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TRAFFIC_API_USE_STORE": "false"}
    topics = {f: fresh_topic(f"x60-{f}", partitions=2) for f in
              ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "incidents", "scores")}
    env.update({f"TRAFFIC_TOPICS_{field.upper()}": name for field, name in topics.items()})
    first = np.datetime64(network.split.val_end_ms, "ms").astype("datetime64[m]")
    assert main(["replay", "--network", net, "--bootstrap-servers", kafka_bootstrap, "--topic", topics["raw"],
                 "--speed", "max", "--start", str(first), "--end", str(first + np.timedelta64(4, "h")),
                 "--no-progress"]) == 0
    log = files["root"] / "stream.log"
    with open(log, "w") as sink:
        stream = subprocess.Popen([sys.executable, "-m", "cli.main", "stream", "--network", net, "--runner", "prism",
                                   "--registry", registry, "--output", "none", "--start",
                                   "earliest"], stdout=sink, stderr=subprocess.STDOUT, env=env)
    codec = AvroCodec("prediction")

    def a_complete_step() -> int | None:
        per_step = Counter(codec.decode(m.value())["event_time"] for m in read_all(kafka_bootstrap,
                                                                                   topics["predictions"]))
        complete = [step for step, n in per_step.items() if n == 60 * 3]
        return min(complete) if complete else None

    port = _free_port()
    serve_log = files["root"] / "serve.log"
    serve = None
    try:
        _wait(a_complete_step, 420, "a step predicted for all 60 sensors", stream, log)
        predicted = {codec.decode(m.value())["sensor_id"] for m in read_all(kafka_bootstrap, topics["predictions"])}
        assert predicted == set(network.sensor_ids)
        with open(serve_log, "w") as sink:
            serve = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--network", net, "--registry",
                                      registry, "--port", str(port)],
                                     stdout=sink, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"

        def sensors_with_predictions() -> list | None:
            try:
                sensors = httpx.get(f"{base}/sensors", timeout=5).json()
            except httpx.HTTPError:
                return None
            return sensors if all(s["latest_predictions"] for s in sensors) else None

        sensors = _wait(sensors_with_predictions, 180, "the API to serve every sensor's predictions", serve,
                        serve_log)
        assert [s["sensor_id"] for s in sensors] == list(network.sensor_ids)
        np.testing.assert_allclose([[s["latitude"], s["longitude"]] for s in sensors], network.locations())
        links = httpx.get(f"{base}/roads", timeout=5).json()["links"]
        assert sorted(map(tuple, links)) == sorted(network.road_links())
        config = httpx.get(f"{base}/dashboard/config.json", timeout=5).json()
        assert (config["network"], config["title"], config["sensors"]) == ("x60", TITLE, 60)
        _dashboard_shows(base, network.sensor_ids)
    finally:
        for process in (serve, stream):
            if process is not None:
                _stop(process)


def _dashboard_shows(base: str, sensor_ids: tuple[str, ...]) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `traffic setup --with-test-tools`", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox",
                                                                            "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/dashboard/")
            page.wait_for_selector("#status.live", timeout=60_000)
            shown = page.eval_on_selector_all("path[data-sensor-id]", "els => els.map(e => e.dataset.sensorId)")
            assert sorted(shown) == sorted(sensor_ids)
            assert page.inner_text("#title") == TITLE and page.title().startswith(TITLE)
            assert errors == [], f"JavaScript errors on the dashboard: {errors}"
        finally:
            browser.close()
