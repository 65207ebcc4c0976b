"""``traffic batch backfill --to-store`` on the real PostgreSQL: a day of one sensor's history read back from
the store is what the run's Parquet files (and the readings) hold, and replaying part of the day changes nothing.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from small_models import register_ridge_bundle

from config.settings import get_settings
from ml.dataset import TRAIN_END_MS, load_metrla
from pipelines.batch_cli import run
from store.db import connect
from store.queries import history

pytestmark = pytest.mark.integration

SENSORS = 3
DAY_MS = 24 * 3600 * 1000
START_MS = TRAIN_END_MS + 3 * DAY_MS


def iso(ms: int) -> str:
    return str(np.datetime64(ms, "ms"))


def _snapshot(dsn: str) -> dict[str, list[tuple]]:
    with connect(dsn) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4").fetchall()  # noqa: S608
                for t in ("actuals", "predictions", "scores")}


def test_a_day_in_the_store_equals_the_parquet_files_and_a_replay_changes_nothing(
    store_dsn: str, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("TRAFFIC_POSTGRES_DB", store_dsn.split("dbname=")[1].split()[0])
    get_settings.cache_clear()
    try:
        root = str(tmp_path / "registry")
        bundle = register_ridge_bundle(root, SENSORS)
        out = tmp_path / "day"
        assert run(["backfill", "--registry", root, "--start", iso(START_MS), "--end", iso(START_MS + DAY_MS),
                    "--output", str(out), "--to-store"]) == 0
        first = _snapshot(store_dsn)
        assert run(["backfill", "--registry", root, "--start", iso(START_MS), "--end",
                    iso(START_MS + DAY_MS // 4), "--output", str(tmp_path / "replay"), "--to-store"]) == 0
        assert _snapshot(store_dsn) == first
    finally:
        get_settings.cache_clear()

    sensor = bundle.context.sensor_ids[1]
    with connect(store_dsn) as conn:
        got = history(conn, sensor, START_MS, START_MS + DAY_MS)
    predictions = [r for r in pq.read_table(out / "predictions").to_pylist() if r["sensor_id"] == sensor
                   and START_MS <= r["target_time"] < START_MS + DAY_MS]
    scores = [r for r in pq.read_table(out / "scores").to_pylist() if r["sensor_id"] == sensor
              and START_MS <= r["target_time"] < START_MS + DAY_MS]
    assert len(predictions) > 200 * 3
    stored = sorted((r["event_time_ms"], r["horizon_min"], r["predicted_speed_mph"], r["lower_mph"], r["upper_mph"])
                    for rows in got["predictions"].values() for r in rows)
    assert stored == sorted((r["event_time"], r["horizon_min"], r["predicted_speed_mph"], r["lower_mph"],
                             r["upper_mph"]) for r in predictions)
    stored_scores = sorted((r["event_time_ms"], r["horizon_min"], r["status"], r["actual_speed_mph"], r["error_mph"])
                           for r in got["scores"])
    assert stored_scores == sorted((r["event_time"], r["horizon_min"], r["status"], r["actual_speed_mph"],
                                    r["error_mph"]) for r in scores)
    data = load_metrla().only([sensor]).between(START_MS, START_MS + DAY_MS)
    readings = [None if v == 0 else float(v) for v in data.speed[:, 0]]
    assert [a["window_start_ms"] for a in got["actuals"]] == [int(t) for t in data.times_ms]
    assert [a["mean_speed_mph"] for a in got["actuals"]] == readings
