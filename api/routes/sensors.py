"""``/sensors``: the 207 sensors with location, latest reading and latest predictions; one sensor's history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import FilterDep, HorizonDep, RuntimeDep, SensorIdDep
from api.errors import error_responses
from api.models import History, Sensor
from api.runtime import Runtime
from api.state import HORIZONS_MIN

__all__ = ["router"]

router = APIRouter(prefix="/sensors", tags=["sensors"], responses=error_responses(404, 422, 429, 503))


def _sensor(runtime: Runtime, sensor_id: str) -> dict[str, Any]:
    state = runtime.state
    return {
        "sensor_id": sensor_id,
        "latitude": runtime.catalog.lat[sensor_id],
        "longitude": runtime.catalog.lon[sensor_id],
        "latest_reading": state.readings.get(sensor_id),
        "latest_predictions": {str(h): state.latest[(sensor_id, h)] for h in HORIZONS_MIN
                               if (sensor_id, h) in state.latest},
    }


@router.get("", response_model=list[Sensor], summary="Every sensor (filter with sensors= or bbox=)")
def sensors(runtime: RuntimeDep, event_filter: FilterDep) -> list[dict]:
    chosen = runtime.catalog.ids if event_filter.sensors is None else \
        [sid for sid in runtime.catalog.ids if sid in event_filter.sensors]
    return [_sensor(runtime, sid) for sid in chosen]


@router.get("/{sensor_id}", response_model=Sensor, summary="One sensor")
def sensor(runtime: RuntimeDep, sensor_id: SensorIdDep) -> dict:
    return _sensor(runtime, sensor_id)


@router.get("/{sensor_id}/history", response_model=History,
            summary="Recent actual speeds and predictions (with intervals) for one horizon")
def history(runtime: RuntimeDep, sensor_id: SensorIdDep, horizon: HorizonDep,
            since_ms: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="only points at or after this time "
                                                                          "(epoch ms)")] = None,
            ) -> dict:
    return runtime.state.sensor_history(sensor_id, horizon, since_ms)
