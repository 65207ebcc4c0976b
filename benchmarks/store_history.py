"""The PostgreSQL store: rows/s of a 24 h catch-up written the way the pipeline's sink writes them, and the
latency of a 24 h history query for one sensor (store read and the API route).

    .venv/bin/traffic platform up postgres
    .venv/bin/python benchmarks/store_history.py [--hours 24] [--queries 300]

A fresh database is created on the running server (and dropped at the end). The records are a day of real
METR-LA readings of all 207 sensors as window aggregates, last-value forecasts at 15/30/60 min with a
+-5 mph interval, and their scores (transforms.scoring.score_record): about 417,000 rows for 24 h. They are
upserted in the sink's batches (``WriteToStore``'s default 2,000 rows, one statement each), step by step as a
catch-up delivers them; then the same day is written again (a replay: every row already there). Queries ask
``/history/{sensor}`` for 24 h of a random sensor, directly from the store and through the API (TestClient,
in process). Prints the figures.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.dataset import TRAIN_END_MS, load_metrla  # noqa: E402
from transforms.scoring import score_record  # noqa: E402

STEP_MS = 300_000
BATCH = 2000


def records(hours: int) -> tuple[list[str], list[tuple[str, list[dict]]]]:
    """(sensor ids, [(table, records) per step in arrival order])."""
    data = load_metrla().between(TRAIN_END_MS, TRAIN_END_MS + (hours + 1) * 3600 * 1000)
    sensors = [str(s) for s in data.sensor_ids]
    steps = hours * 12
    out: list[tuple[str, list[dict]]] = []
    for i in range(steps):
        t = int(data.times_ms[i])
        aggs, preds, scores = [], [], []
        for j, sensor in enumerate(sensors):
            v = float(data.speed[i, j])
            aggs.append({"sensor_id": sensor, "window_start": t, "window_end": t + STEP_MS,
                         "mean_speed_mph": v or None, "min_speed_mph": v or None, "max_speed_mph": v or None,
                         "stddev_speed_mph": 0.0 if v else None, "count": 1, "missing_count": 0 if v else 1,
                         "pane_timing": "ON_TIME"})
            last = v or 50.0
            for h in (15, 30, 60):
                p = {"sensor_id": sensor, "event_time": t, "target_time": t + h * 60_000, "horizon_min": h,
                     "predicted_speed_mph": last, "lower_mph": last - 5, "upper_mph": last + 5, "coverage": 0.9,
                     "congestion": "FREE_FLOW", "model_version": "bench", "processing_time": t}
                preds.append(p)
                target = i + h // 5
                actual = float(data.speed[target, j]) if target < data.n_steps else None
                scores.append(score_record(p, actual, t))
        out += [("actuals", aggs), ("predictions", preds), ("scores", scores)]
    return sensors, out


def write(dsn: str, batches: list[tuple[str, list[dict]]]) -> tuple[int, float]:
    from store.db import connect
    from store.writer import upsert

    rows = 0
    started = time.perf_counter()
    with connect(dsn) as conn:
        for table, recs in batches:
            for k in range(0, len(recs), BATCH):
                rows += upsert(conn, table, recs[k : k + BATCH])
    return rows, time.perf_counter() - started


def percentiles(samples: list[float]) -> str:
    a = np.array(samples) * 1000
    return f"p50 {np.percentile(a, 50):.1f} ms, p99 {np.percentile(a, 99):.1f} ms, max {a.max():.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()

    import psycopg
    from psycopg import sql

    from config.settings import PlatformSettings
    from store.db import migrate

    settings = PlatformSettings()
    name = f"traffic_bench_{uuid.uuid4().hex[:8]}"
    admin = settings.postgres_dsn.replace(f"dbname={settings.postgres_db}", "dbname=postgres")
    dsn = settings.postgres_dsn.replace(f"dbname={settings.postgres_db}", f"dbname={name}")
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        print(f"store_history: PostgreSQL is not reachable ({str(exc).strip().splitlines()[0]}); "
              "run `traffic platform up postgres`", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(dsn) as conn:
            migrate(conn)
        print(f"building {args.hours} h of records (207 sensors) ...", flush=True)
        sensors, batches = records(args.hours)
        rows, wall = write(dsn, batches)
        print(f"catch-up: {rows:,} rows in {wall:.1f} s = {rows / wall:,.0f} rows/s "
              f"(batches of {BATCH}, one INSERT ... unnest ... ON CONFLICT each)")
        again, wall2 = write(dsn, batches)
        print(f"replay of the same {args.hours} h: {again:,} rows in {wall2:.1f} s = {again / wall2:,.0f} rows/s "
              "(every row already there: nothing rewritten)")

        from store.db import connect
        from store.queries import history

        t0 = int(batches[0][1][0]["window_start"])
        rng = random.Random(1)
        direct = []
        with connect(dsn) as conn:
            for _ in range(args.queries):
                sensor = rng.choice(sensors)
                started = time.perf_counter()
                got = history(conn, sensor, t0, t0 + 24 * 3600 * 1000)
                direct.append(time.perf_counter() - started)
        n = len(got["actuals"]) + sum(len(v) for v in got["predictions"].values()) + len(got["scores"])
        print(f"24 h history of one sensor from the store ({n} rows): {percentiles(direct)} over {args.queries}")

        import os

        from fastapi.testclient import TestClient

        from api.app import create_app
        from api.settings import ApiSettings
        from config.settings import get_settings

        os.environ["TRAFFIC_POSTGRES_DB"] = name
        get_settings.cache_clear()
        app = create_app(ApiSettings(require_vendor=False, rate_limit_per_s=0, accuracy_refresh_s=3600),
                         start_feed=False)
        api = []
        with TestClient(app) as client:
            for _ in range(args.queries):
                sensor = rng.choice(sensors)
                started = time.perf_counter()
                response = client.get(f"/history/{sensor}", params={"start_ms": t0, "end_ms": t0 + 86_400_000})
                api.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
        print(f"24 h history through GET /history (in-process client, JSON): {percentiles(api)}")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
