"""Idempotent upserts of Avro-shaped records (dicts) into the store, many rows per statement.

Each table's key is its records' natural key (see ``migrations/0001_initial.sql``):
actuals ``(sensor_id, window_start)``; predictions and scores ``(sensor_id,
event_time, horizon_min, model_version)``. Writing the same records again
(a replay, a restarted job, a retried bundle) leaves the same rows. Rows go in
as one ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO UPDATE`` per
batch, and a row is rewritten only when its data changed (so a replay keeps the
first processing time); an actual's lower pane (EARLY) never overwrites a higher one (ON_TIME,
LATE), so a late replay of an early pane cannot undo a final value.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

__all__ = ["ATTEMPTS", "PANE_RANK", "TABLES", "prune", "upsert"]

ATTEMPTS = 5  # tries of an upsert that PostgreSQL aborted as a deadlock victim

PANE_RANK = {"EARLY": 0, "UNKNOWN": 1, "ON_TIME": 2, "LATE": 3}


def _pane_rank(record: dict[str, Any]) -> int:
    return PANE_RANK.get(str(record.get("pane_timing")), 1)


# table -> (columns with their SQL array types, key columns, how each column is read from a record,
#           an optional WHERE on the update)
_ACTUALS = (
    (("sensor_id", "text"), ("window_start_ms", "bigint"), ("window_end_ms", "bigint"),
     ("mean_speed_mph", "float8"), ("min_speed_mph", "float8"), ("max_speed_mph", "float8"),
     ("stddev_speed_mph", "float8"), ("count", "int4"), ("missing_count", "int4"), ("pane_timing", "text"),
     ("pane_rank", "int2")),
    ("sensor_id", "window_start_ms"),
    {"window_start_ms": lambda r: int(r["window_start"]), "window_end_ms": lambda r: int(r["window_end"]),
     "pane_timing": lambda r: str(r.get("pane_timing") or "UNKNOWN"), "pane_rank": _pane_rank},
    "actuals.pane_rank <= EXCLUDED.pane_rank",
)
_FORECAST_KEY = ("sensor_id", "event_time_ms", "horizon_min", "model_version")
_PREDICTIONS = (
    (("sensor_id", "text"), ("event_time_ms", "bigint"), ("horizon_min", "int2"), ("model_version", "text"),
     ("target_time_ms", "bigint"), ("predicted_speed_mph", "float8"), ("lower_mph", "float8"),
     ("upper_mph", "float8"), ("coverage", "float8"), ("congestion", "text"), ("processing_time_ms", "bigint")),
    _FORECAST_KEY,
    {"event_time_ms": lambda r: int(r["event_time"]), "target_time_ms": lambda r: int(r["target_time"]),
     "processing_time_ms": lambda r: int(r["processing_time"])},
    None,
)
_SCORES = (
    (("sensor_id", "text"), ("event_time_ms", "bigint"), ("horizon_min", "int2"), ("model_version", "text"),
     ("target_time_ms", "bigint"), ("predicted_speed_mph", "float8"), ("lower_mph", "float8"),
     ("upper_mph", "float8"), ("coverage", "float8"), ("actual_speed_mph", "float8"), ("error_mph", "float8"),
     ("inside_interval", "bool"), ("status", "text"), ("scored_time_ms", "bigint")),
    _FORECAST_KEY,
    {"event_time_ms": lambda r: int(r["event_time"]), "target_time_ms": lambda r: int(r["target_time"]),
     "scored_time_ms": lambda r: int(r["scored_time"])},
    # A MISSING settlement never replaces a SCORED one (e.g. a replay that stopped before the actual).
    "NOT (scores.status = 'SCORED' AND EXCLUDED.status = 'MISSING')",
)
_PROCESSING_TIMES = ("processing_time_ms", "scored_time_ms")
TABLES: dict[str, tuple] = {"actuals": _ACTUALS, "predictions": _PREDICTIONS, "scores": _SCORES}


def _statement(table: str) -> str:
    columns, key, _, where = TABLES[table]
    names = ", ".join(name for name, _ in columns)
    arrays = ", ".join(f"%s::{sql_type}[]" for _, sql_type in columns)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name, _ in columns if name not in key)
    # Only a change of data rewrites a row: the same record again (a replay) leaves it as it was,
    # processing time included, and makes no dead tuple.
    data = [name for name, _ in columns if name not in key and name not in _PROCESSING_TIMES]
    old, new = ", ".join(f"{table}.{n}" for n in data), ", ".join(f"EXCLUDED.{n}" for n in data)
    changed = f"({old}) IS DISTINCT FROM ({new})"
    text = (f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates} WHERE {changed}")
    return text + (f" AND {where}" if where else "")


_STATEMENTS = {table: _statement(table) for table in TABLES}


def _dedupe(table: str, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per key (the last one; for actuals the highest pane), in key order.

    ON CONFLICT cannot touch a row twice; and writers that lock their rows in one order (the key's)
    cannot deadlock each other (two bundles upserting the same actuals in different orders did).
    """
    _, key, readers, _ = TABLES[table]
    kept: dict[tuple, dict[str, Any]] = {}
    for record in records:
        k = tuple(readers[c](record) if c in readers else record[c] for c in key)
        if table == "actuals" and k in kept and _pane_rank(kept[k]) > _pane_rank(record):
            continue
        kept[k] = record
    return [kept[k] for k in sorted(kept)]


def upsert(conn: psycopg.Connection, table: str, records: Iterable[dict[str, Any]]) -> int:
    """Upsert ``records`` (Avro-shaped dicts) into ``table`` in one statement; returns the rows sent.

    A statement PostgreSQL aborts to break a deadlock (or a serialization failure) is rolled back
    whole and sent again, up to ``ATTEMPTS`` times: the upsert is idempotent.
    """
    columns, _, readers, _ = TABLES[table]
    rows = _dedupe(table, list(records))
    if not rows:
        return 0
    arrays = []
    for name, _ in columns:
        read = readers.get(name)
        arrays.append([read(r) for r in rows] if read else [r.get(name) for r in rows])
    attempt = 1
    while True:
        try:
            with conn.transaction():
                conn.execute(_STATEMENTS[table], arrays)
            return len(rows)
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            if attempt >= ATTEMPTS:
                raise
            attempt += 1
            time.sleep(0.05 * attempt)


def prune(conn: psycopg.Connection, retention_ms: int) -> dict[str, int]:
    """Delete rows older than ``retention_ms`` before the newest actual's window (event time, not wall time:
    replayed history is years old). Returns the rows deleted per table."""
    deleted: dict[str, int] = {}
    with conn.transaction():
        row = conn.execute("SELECT max(window_start_ms) FROM actuals").fetchone()
        if row is None or row[0] is None:
            return {"actuals": 0, "predictions": 0, "scores": 0}
        cutoff = int(row[0]) - int(retention_ms)
        for table, column in (("actuals", "window_start_ms"), ("predictions", "event_time_ms"),
                              ("scores", "event_time_ms")):
            deleted[table] = conn.execute(f"DELETE FROM {table} WHERE {column} < %s", (cutoff,)).rowcount
    return deleted
