"""FastAPI dependencies as ``Annotated`` aliases: the runtime, filters, and the admin guard."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Header, HTTPException, Query, Request, status

from api.hub import CONGESTION_RANK, EVENT_KINDS, SEVERITY_RANK, EventFilter
from api.runtime import Runtime
from api.security import check_api_key
from api.state import HORIZONS_MIN

__all__ = ["AdminDep", "FilterDep", "HorizonDep", "LimitDep", "RuntimeDep", "SensorIdDep", "parse_filter"]

Congestion = Literal["FREE_FLOW", "MODERATE", "HEAVY", "SEVERE"]
Severity = Literal["INFO", "WARNING", "CRITICAL"]
Kind = Literal["prediction", "alert", "reading", "incident"]


def get_runtime(request: Request) -> Runtime:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the API is starting up; retry in a moment")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, message)


def _parse_sensors(runtime: Runtime, sensors: str | None) -> frozenset[str] | None:
    if sensors is None:
        return None
    ids = frozenset(s.strip() for s in sensors.split(",") if s.strip())
    if not ids:
        raise _unprocessable("sensors: give one or more sensor ids separated by commas")
    unknown = sorted(ids - set(runtime.catalog.ids))
    if unknown:
        raise _unprocessable(f"sensors: unknown sensor ids: {', '.join(unknown[:10])}")
    return ids


def _parse_bbox(runtime: Runtime, bbox: str | None) -> frozenset[str] | None:
    if bbox is None:
        return None
    parts = bbox.split(",")
    try:
        min_lat, min_lon, max_lat, max_lon = (float(p) for p in parts)
    except ValueError:
        raise _unprocessable("bbox: expected four numbers min_lat,min_lon,max_lat,max_lon") from None
    if not all(-90 <= v <= 90 for v in (min_lat, max_lat)) or not all(-180 <= v <= 180 for v in (min_lon, max_lon)):
        raise _unprocessable("bbox: latitudes must be within [-90, 90] and longitudes within [-180, 180]")
    if min_lat > max_lat or min_lon > max_lon:
        raise _unprocessable("bbox: min_lat must be <= max_lat and min_lon <= max_lon")
    return runtime.catalog.in_bbox(min_lat, min_lon, max_lat, max_lon)


def parse_filter(
    runtime: RuntimeDep,
    sensors: Annotated[str | None, Query(description="comma-separated sensor ids", examples=["773869,767541"])] = None,
    bbox: Annotated[str | None, Query(description="min_lat,min_lon,max_lat,max_lon",
                                      examples=["34.05,-118.35,34.20,-118.20"])] = None,
    horizon: Annotated[list[int] | None, Query(description="forecast horizons in minutes: 15, 30, 60 (repeatable)")]
    = None,
    min_congestion: Annotated[Congestion | None, Query(description="predictions at least this congested")] = None,
    min_severity: Annotated[Severity | None, Query(description="alerts at least this severe")] = None,
    types: Annotated[list[Kind] | None, Query(description="event kinds to receive (repeatable); default all")] = None,
) -> EventFilter:
    """Filters shared by the stream and the REST lists; bad values are 422 with the reason."""
    bad = sorted(set(horizon or ()) - set(HORIZONS_MIN))
    if bad:
        raise _unprocessable(f"horizon: {', '.join(map(str, bad))} is not one of 15, 30 or 60")
    chosen = _parse_sensors(runtime, sensors)
    boxed = _parse_bbox(runtime, bbox)
    if boxed is not None:
        chosen = boxed if chosen is None else chosen & boxed
    return EventFilter(
        sensors=chosen,
        horizons=frozenset(horizon) if horizon else None,
        kinds=frozenset(types) if types else frozenset(EVENT_KINDS),
        min_congestion=CONGESTION_RANK[min_congestion] if min_congestion else 0,
        min_severity=SEVERITY_RANK[min_severity] if min_severity else 0,
    )


FilterDep = Annotated[EventFilter, Depends(parse_filter)]
def horizon_param(horizon: Annotated[int, Query(description="forecast horizon in minutes: 15, 30 or 60")] = 15) -> int:
    if horizon not in HORIZONS_MIN:
        raise _unprocessable(f"horizon: {horizon} is not one of 15, 30 or 60")
    return horizon


HorizonDep = Annotated[int, Depends(horizon_param)]
LimitDep = Annotated[int, Query(ge=1, le=5000, description="at most this many rows")]


def known_sensor(runtime: RuntimeDep, sensor_id: str) -> str:
    if sensor_id not in runtime.catalog:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown sensor id {sensor_id!r}")
    return sensor_id


SensorIdDep = Annotated[str, Depends(known_sensor)]


def require_admin(runtime: RuntimeDep,
                  x_api_key: Annotated[str | None, Header(description="the admin API key")] = None) -> None:
    key = runtime.settings.admin_key
    check_api_key(key.get_secret_value() if key is not None else None, x_api_key)


AdminDep = Annotated[None, Depends(require_admin)]
