"""``/history/{sensor_id}``: one sensor's actuals, predictions (per horizon, with intervals) and scores from the
PostgreSQL store, for any time range.

A range longer than ``history_max_days`` is cut to the ``history_max_days`` that end at ``end_ms``; an empty
range (``end_ms <= start_ms``) holds nothing. Both are valid requests: the contract rejects only what its
schema rejects."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool

from api.deps import RuntimeDep, SensorIdDep
from api.errors import error_responses
from api.history_models import StoredHistory

__all__ = ["router"]

router = APIRouter(prefix="/history", tags=["history"], responses=error_responses(404, 422, 429, 503))

_MS_MAX = 32_503_680_000_000  # year 3000: bounds the epoch-ms parameters


def _read(dsn: str, sensor_id: str, start_ms: int, end_ms: int) -> dict[str, Any]:
    from store.db import connect
    from store.queries import history

    with connect(dsn) as conn:
        got = history(conn, sensor_id, start_ms, end_ms)
    got["predictions"] = {str(h): rows for h, rows in got["predictions"].items()}
    return got


@router.get("/{sensor_id}", response_model=StoredHistory,
            summary="Actuals, predictions per horizon (with intervals) and scores of one sensor in [start_ms, end_ms)",
            description="A range longer than the API's `history_max_days` (31 by default) is cut to the days that "
                        "end at `end_ms`; `end_ms <= start_ms` is an empty range.")
async def sensor_history(
    runtime: RuntimeDep,
    sensor_id: SensorIdDep,
    start_ms: Annotated[int, Query(ge=0, le=_MS_MAX, description="range start, epoch ms (inclusive)")],
    end_ms: Annotated[int, Query(ge=1, le=_MS_MAX, description="range end, epoch ms (exclusive)")],
) -> dict[str, Any]:
    from store.db import StoreError

    start_ms = max(start_ms, end_ms - runtime.settings.history_max_days * 86_400_000)
    if runtime.store_dsn is None:
        raise HTTPException(503, "the store is off (TRAFFIC_API_USE_STORE=false)")
    try:
        return await run_in_threadpool(_read, runtime.store_dsn, sensor_id, start_ms, end_ms)
    except StoreError as exc:
        raise HTTPException(503, str(exc)) from None
