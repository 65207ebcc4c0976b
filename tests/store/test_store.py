"""The store on the real PostgreSQL: migrations, idempotent upserts (a replay leaves the same rows),
pane and status precedence, retention, and the history / accuracy reads.

Records are two hours of real METR-LA readings (6 sensors) as window aggregates, last-value forecasts
of them and their scores (transforms.scoring.score_record).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from store.db import StoreError, connect, migrate, migrations, schema_version
from store.queries import accuracy, history
from store.writer import prune, upsert
from transforms.scoring import score_record

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data" / "metr-la" / "speed.npz"
FIRST_ROW, STEPS, N_SENSORS, STEP_MS = 1000, 24, 6, 300_000


def _block() -> tuple[list[str], np.ndarray, int]:
    with np.load(DATA) as data:
        speeds = data["speed"][FIRST_ROW : FIRST_ROW + STEPS, :N_SENSORS].astype(np.float64)
        sensors = [str(s) for s in data["sensor_ids"][:N_SENSORS]]
        t0 = int(data["timestamps"][FIRST_ROW].astype("datetime64[ms]").astype(np.int64))
    return sensors, speeds, t0


SENSORS, SPEEDS, T0 = _block()


def aggregates(timing: str = "ON_TIME") -> list[dict]:
    out = []
    for step in range(STEPS):
        for j, sensor in enumerate(SENSORS):
            v = float(SPEEDS[step, j])
            start = T0 + step * STEP_MS
            out.append({"sensor_id": sensor, "window_start": start, "window_end": start + STEP_MS,
                        "mean_speed_mph": v if v > 0 else None, "min_speed_mph": v if v > 0 else None,
                        "max_speed_mph": v if v > 0 else None, "stddev_speed_mph": 0.0 if v > 0 else None,
                        "count": 1, "missing_count": 0 if v > 0 else 1, "pane_timing": timing})
    return out


def predictions(processing_time: int = 1) -> list[dict]:
    out = []
    for step in range(STEPS):
        for j, sensor in enumerate(SENSORS):
            last = float(SPEEDS[step, j]) or 50.0
            for h in (15, 30, 60):
                t = T0 + step * STEP_MS
                out.append({"sensor_id": sensor, "event_time": t, "target_time": t + h * 60_000, "horizon_min": h,
                            "predicted_speed_mph": last, "lower_mph": last - 5, "upper_mph": last + 5,
                            "coverage": 0.9, "congestion": "FREE_FLOW", "model_version": "v1",
                            "processing_time": processing_time})
    return out


def scores(scored_time: int = 2) -> list[dict]:
    out = []
    for p in predictions():
        step = (p["target_time"] - T0) // STEP_MS
        j = SENSORS.index(p["sensor_id"])
        actual = float(SPEEDS[step, j]) if step < STEPS else None
        out.append(score_record(p, actual, scored_time))
    return out


def _write_all(dsn: str, seed: int, processing_time: int) -> None:
    rng = random.Random(seed)
    with connect(dsn) as conn:
        for table, records in (("actuals", aggregates("EARLY") + aggregates()), ("predictions",
                               predictions(processing_time)), ("scores", scores(processing_time + 1))):
            records = list(records)
            if table != "actuals":
                rng.shuffle(records)
            size = rng.randint(7, 200)
            for i in range(0, len(records), size):
                upsert(conn, table, records[i : i + size])


def _snapshot(dsn: str) -> dict[str, list[tuple]]:
    with connect(dsn) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()  # noqa: S608
                for table in ("actuals", "predictions", "scores")}


def test_replaying_the_same_hours_twice_leaves_the_same_rows(store_dsn: str) -> None:
    _write_all(store_dsn, seed=1, processing_time=1_000)
    first = _snapshot(store_dsn)
    assert len(first["actuals"]) == STEPS * N_SENSORS
    assert len(first["predictions"]) == len(first["scores"]) == STEPS * N_SENSORS * 3
    _write_all(store_dsn, seed=2, processing_time=9_000)  # other batches, other order, later processing
    assert _snapshot(store_dsn) == first
    # Each actual holds its final (ON_TIME) pane even though EARLY panes were written again after it.
    assert {row[9] for row in first["actuals"]} == {"ON_TIME"}


def test_lower_panes_and_missing_settlements_do_not_overwrite(store_dsn: str) -> None:
    with connect(store_dsn) as conn:
        final = aggregates()[:3]
        upsert(conn, "actuals", final)
        early = [dict(a, mean_speed_mph=1.0, pane_timing="EARLY") for a in final]
        upsert(conn, "actuals", early)
        assert [r[0] for r in conn.execute("SELECT mean_speed_mph FROM actuals ORDER BY 1")] == sorted(
            a["mean_speed_mph"] for a in final)
        late = [dict(final[0], mean_speed_mph=77.0, pane_timing="LATE")]
        upsert(conn, "actuals", late)
        assert conn.execute("SELECT max(mean_speed_mph) FROM actuals").fetchone()[0] == 77.0
        scored = [s for s in scores() if s["status"] == "SCORED"][:5]
        upsert(conn, "scores", scored)
        missing = [score_record(s, None, 5) for s in scored]
        upsert(conn, "scores", missing)
        assert {r[0] for r in conn.execute("SELECT status FROM scores")} == {"SCORED"}


def test_an_upsert_chosen_as_a_deadlock_victim_is_sent_again(store_dsn: str) -> None:
    """Two writers locking the same actuals in opposite orders deadlock; PostgreSQL aborts one (here the upsert,
    which waited first). The upsert is retried (idempotent), so the bundle does not fail (a streaming run failed
    on this: two bundles upserting a step's panes)."""
    # The upsert writes in key order: `first` (the lower key), then `second`, which the holder has.
    first, second = sorted(aggregates()[:2], key=lambda a: (a["sensor_id"], a["window_start"]))
    with connect(store_dsn) as setup:
        upsert(setup, "actuals", [first, second])
    holder, writer, watcher = connect(store_dsn), connect(store_dsn), connect(store_dsn, autocommit=True)
    try:
        lock = "UPDATE actuals SET count = count WHERE sensor_id = %s AND window_start_ms = %s"
        holder.execute(lock, (second["sensor_id"], second["window_start"]))  # a transaction holding `second`
        outcome: dict[str, object] = {}

        def write() -> None:  # locks `first`, then waits for `second`
            try:
                outcome["rows"] = upsert(writer, "actuals", [dict(first, count=7), dict(second, count=7)])
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcome["error"] = exc

        thread = threading.Thread(target=write)
        thread.start()
        waiting = ("SELECT count(*) FROM pg_stat_activity "
                   "WHERE wait_event_type = 'Lock' AND datname = current_database()")
        deadline = time.monotonic() + 30
        while watcher.execute(waiting).fetchone()[0] < 1:
            assert time.monotonic() < deadline, "the upsert never waited for the held row"
            time.sleep(0.05)
        try:  # now the holder wants `first`, which the upsert holds: a deadlock
            holder.execute(lock, (first["sensor_id"], first["window_start"]))
            holder.commit()
        except psycopg.errors.DeadlockDetected:
            holder.rollback()  # the holder was the victim: the upsert went through at once
        thread.join(60)
        assert not thread.is_alive()
        assert outcome == {"rows": 2}, outcome
        counts = watcher.execute("SELECT count FROM actuals WHERE window_start_ms = %s AND sensor_id IN (%s, %s)",
                                 (first["window_start"], first["sensor_id"], second["sensor_id"])).fetchall()
        assert sorted(c for (c,) in counts) == [7, 7]
    finally:
        for conn in (holder, writer, watcher):
            conn.close()


def test_history_and_accuracy_read_what_was_written(store_dsn: str) -> None:
    _write_all(store_dsn, seed=3, processing_time=1)
    sensor = SENSORS[2]
    with connect(store_dsn) as conn:
        got = history(conn, sensor, T0, T0 + STEPS * STEP_MS)
        assert [a["window_start_ms"] for a in got["actuals"]] == [T0 + s * STEP_MS for s in range(STEPS)]
        assert sorted(got["predictions"]) == [15, 30, 60]
        want_scores = [s for s in scores() if s["sensor_id"] == sensor and s["target_time"] < T0 + STEPS * STEP_MS]
        assert len(got["scores"]) == len(want_scores)
        rows = accuracy(conn, window_ms=STEPS * STEP_MS, group="network", now_ms=T0 + (STEPS - 1) * STEP_MS)
    by_h = {r["horizon_min"]: r for r in rows}
    for h in (15, 30, 60):
        mine = [s for s in scores() if s["horizon_min"] == h and T0 - STEP_MS < s["target_time"]
                <= T0 + (STEPS - 1) * STEP_MS]
        observed = [s for s in mine if s["status"] == "SCORED"]
        assert by_h[h]["scored"] == len(observed) and by_h[h]["missing"] == len(mine) - len(observed)
        assert by_h[h]["mae"] == pytest.approx(np.mean([abs(s["error_mph"]) for s in observed]), abs=1e-9)
        assert by_h[h]["coverage"] == pytest.approx(np.mean([s["inside_interval"] for s in observed]), abs=1e-12)


def test_retention_prunes_rows_older_than_the_newest_event_minus_the_retention(store_dsn: str) -> None:
    _write_all(store_dsn, seed=4, processing_time=1)
    keep_ms = 6 * STEP_MS
    with connect(store_dsn) as conn:
        deleted = prune(conn, keep_ms)
        cutoff = T0 + (STEPS - 1) * STEP_MS - keep_ms
        assert deleted["actuals"] == (STEPS - 7) * N_SENSORS
        assert conn.execute("SELECT min(window_start_ms) FROM actuals").fetchone()[0] == cutoff
        assert conn.execute("SELECT min(event_time_ms) FROM scores").fetchone()[0] == cutoff


def test_migrations_are_recorded_and_idempotent(store_dsn: str) -> None:
    with connect(store_dsn) as conn:
        assert migrate(conn) == []
        assert schema_version(conn) == migrations()[-1][0]
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert {"predictions_sensor_target", "scores_sensor_target", "scores_target"} <= indexes


def test_an_unreachable_store_is_a_one_line_error() -> None:
    with pytest.raises(StoreError) as info:
        connect("host=127.0.0.1 port=1 dbname=traffic user=x password=y connect_timeout=2")
    assert "\n" not in str(info.value) and "port=1" in str(info.value)
    assert psycopg.__version__.startswith("3.")
