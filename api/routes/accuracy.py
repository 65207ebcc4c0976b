"""``/accuracy``: rolling MAE and interval coverage per horizon (network-wide or one sensor's, and per model
version) over the last hour or day of scored forecasts, with the drift alarms firing now."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool

from api.accuracy import WINDOWS_S, drift_alarms
from api.deps import RuntimeDep
from api.errors import error_responses
from api.history_models import AccuracyReport

__all__ = ["router"]

router = APIRouter(prefix="/accuracy", tags=["accuracy"], responses=error_responses(404, 422, 429, 503))


def _report(runtime: Any, window: str, sensor_id: str | None) -> dict[str, Any]:
    monitor = runtime.accuracy
    seconds = WINDOWS_S[window]
    network = monitor.read(seconds, "network" if sensor_id is None else "sensor", sensor_id)
    models = monitor.read(seconds, "model", sensor_id)
    drift_rows = monitor.read(runtime.settings.drift_window_s, "model")
    alarms = drift_alarms(drift_rows, runtime.settings,
                          monitor.reference_mae({str(r["model_version"]) for r in drift_rows}))
    now = next((r["now_ms"] for r in network + models), None)
    return {"window": window, "now_ms": now, "sensor_id": sensor_id, "network": network, "models": models,
            "alarms": alarms}


@router.get("", response_model=AccuracyReport,
            summary="Rolling MAE and coverage per horizon, network-wide or of one sensor, and drift alarms")
async def accuracy(
    runtime: RuntimeDep,
    window: Annotated[Literal["1h", "1d"], Query(description="rolling window of target time")] = "1h",
    sensor_id: Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[0-9]+$",
                                           description="one sensor's accuracy (default: the whole network)")] = None,
) -> dict[str, Any]:
    from store.db import StoreError

    if sensor_id is not None and sensor_id not in runtime.catalog:
        raise HTTPException(404, f"unknown sensor {sensor_id}")
    if runtime.accuracy is None:
        raise HTTPException(503, "the store is off (TRAFFIC_API_USE_STORE=false)")
    try:
        return await run_in_threadpool(_report, runtime, window, sensor_id)
    except StoreError as exc:
        raise HTTPException(503, str(exc)) from None
