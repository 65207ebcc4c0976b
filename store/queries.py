"""Reads of the store: one sensor's history over a time range, rolling accuracy over recent target times.

Rolling windows are measured on the event-time clock of the data: "the last
hour" is the hour before the newest scored target time in the store (replayed
history is years old, so wall-clock windows would be empty).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

__all__ = ["ACCURACY_GROUPS", "accuracy", "history", "newest_target_ms"]

ACCURACY_GROUPS: dict[str, tuple[str, ...]] = {
    "network": ("horizon_min",),
    "sensor": ("horizon_min", "sensor_id"),
    "model": ("horizon_min", "model_version"),
}


def history(conn: psycopg.Connection, sensor_id: str, start_ms: int, end_ms: int) -> dict[str, Any]:
    """Actuals (window start in range), predictions and scores (target time in range) of one sensor, in time order."""
    with conn.cursor(row_factory=dict_row) as cur:
        actuals = cur.execute(
            "SELECT window_start_ms, window_end_ms, mean_speed_mph, count, missing_count, pane_timing "
            "FROM actuals WHERE sensor_id = %s AND window_start_ms >= %s AND window_start_ms < %s "
            "ORDER BY window_start_ms", (sensor_id, start_ms, end_ms)).fetchall()
        predictions = cur.execute(
            "SELECT event_time_ms, target_time_ms, horizon_min, model_version, predicted_speed_mph, lower_mph, "
            "upper_mph, coverage, congestion FROM predictions "
            "WHERE sensor_id = %s AND target_time_ms >= %s AND target_time_ms < %s "
            "ORDER BY horizon_min, target_time_ms, model_version", (sensor_id, start_ms, end_ms)).fetchall()
        scores = cur.execute(
            "SELECT event_time_ms, target_time_ms, horizon_min, model_version, predicted_speed_mph, "
            "actual_speed_mph, error_mph, inside_interval, status FROM scores "
            "WHERE sensor_id = %s AND target_time_ms >= %s AND target_time_ms < %s "
            "ORDER BY horizon_min, target_time_ms, model_version", (sensor_id, start_ms, end_ms)).fetchall()
    by_horizon: dict[int, list[dict[str, Any]]] = {}
    for row in predictions:
        by_horizon.setdefault(int(row["horizon_min"]), []).append(row)
    conn.rollback()  # end the read transaction: a pooled or long-lived connection must not hold a snapshot
    return {"sensor_id": sensor_id, "start_ms": start_ms, "end_ms": end_ms, "actuals": actuals,
            "predictions": by_horizon, "scores": scores}


def newest_target_ms(conn: psycopg.Connection) -> int | None:
    """The newest SCORED target time, the reference 'now' of the rolling windows (None with no scores).

    SCORED only: forecasts past the end of a finished replay are settled MISSING and must not move the clock.
    """
    row = conn.execute("SELECT max(target_time_ms) FROM scores WHERE status = 'SCORED'").fetchone()
    conn.rollback()
    return None if row is None or row[0] is None else int(row[0])


def accuracy(conn: psycopg.Connection, window_ms: int, group: str = "network", sensor_id: str | None = None,
             now_ms: int | None = None) -> list[dict[str, Any]]:
    """MAE, interval coverage and counts per ``ACCURACY_GROUPS[group]`` over target times in
    ``(now - window_ms, now]`` (now: the newest scored target, unless given). MISSING scores are counted,
    never averaged."""
    columns = ACCURACY_GROUPS[group]
    now = newest_target_ms(conn) if now_ms is None else now_ms
    if now is None:
        return []
    keys = ", ".join(columns)
    where = "target_time_ms > %s AND target_time_ms <= %s"
    params: list[Any] = [now - window_ms, now]
    if sensor_id is not None:
        where += " AND sensor_id = %s"
        params.append(sensor_id)
    sql = (
        f"SELECT {keys}, avg(abs(error_mph)) FILTER (WHERE status = 'SCORED') AS mae, "
        "avg(inside_interval::int) FILTER (WHERE status = 'SCORED') AS coverage, "
        "avg(coverage) AS nominal_coverage, "
        "count(*) FILTER (WHERE status = 'SCORED') AS scored, count(*) FILTER (WHERE status = 'MISSING') AS missing "
        f"FROM scores WHERE {where} GROUP BY {keys} ORDER BY {keys}"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sql, params).fetchall()
    conn.rollback()
    for row in rows:
        for name in ("mae", "coverage", "nominal_coverage"):
            row[name] = None if row[name] is None else float(row[name])
        row["window_ms"], row["now_ms"] = window_ms, now
    return rows
