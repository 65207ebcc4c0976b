"""FastAPI dependencies as ``Annotated`` aliases: the runtime, filters, and the admin guard."""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Query, Request, Security, status
from fastapi.security import APIKeyHeader

from api.errors import pattern
from api.hub import CONGESTION_RANK, EVENT_KINDS, SEVERITY_RANK, EventFilter
from api.runtime import Runtime
from api.security import check_api_key
from api.state import HORIZONS_MIN

__all__ = [
    "BBOX_PATTERN",
    "SENSORS_PATTERN",
    "AdminDep",
    "FilterDep",
    "Horizon",
    "HorizonDep",
    "LimitDep",
    "RuntimeDep",
    "SensorIdDep",
    "parse_filter",
]

Congestion = Literal["FREE_FLOW", "MODERATE", "HEAVY", "SEVERE"]
Severity = Literal["INFO", "WARNING", "CRITICAL"]
Kind = Literal["prediction", "alert", "reading", "incident"]


Horizon = IntEnum("Horizon", {f"MIN_{h}": h for h in HORIZONS_MIN})  # the OpenAPI enum 15, 30, 60
Horizon.__doc__ = "A forecast horizon in minutes."

_LAT = r"-?(90(\.0+)?|[1-8]?[0-9](\.[0-9]+)?)"
_LON = r"-?(180(\.0+)?|(1[0-7][0-9]|[1-9]?[0-9])(\.[0-9]+)?)"
BBOX_PATTERN = pattern(
    rf"^{_LAT},{_LON},{_LAT},{_LON}$",
    "expected four numbers lat,lon,lat,lon (two opposite corners, latitudes within [-90, 90], longitudes "
    "within [-180, 180], plain decimals such as 34.05,-118.35,34.20,-118.20)")
SENSORS_PATTERN = pattern(r"^[^,]+(,[^,]+)*$", "give one or more sensor ids separated by commas (no empty ids)")


def get_runtime(request: Request) -> Runtime:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the API is starting up; retry in a moment")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _parse_sensors(runtime: Runtime, sensors: str | None) -> frozenset[str] | None:
    if sensors is None:
        return None
    ids = frozenset(sensors.split(","))
    unknown = sorted(ids - set(runtime.catalog.ids))
    if unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown sensor ids: {', '.join(map(repr, unknown[:10]))}")
    return ids


def _parse_bbox(runtime: Runtime, bbox: str | None) -> frozenset[str] | None:
    """The sensors inside the box spanned by two opposite corners (the pattern has checked the numbers)."""
    if bbox is None:
        return None
    lat_a, lon_a, lat_b, lon_b = (float(p) for p in bbox.split(","))
    return runtime.catalog.in_bbox(min(lat_a, lat_b), min(lon_a, lon_b), max(lat_a, lat_b), max(lon_a, lon_b))


def parse_filter(
    runtime: RuntimeDep,
    sensors: Annotated[str | None, Query(description="comma-separated sensor ids; unknown ids are 404",
                                         pattern=SENSORS_PATTERN, examples=["773869,767541"])] = None,
    bbox: Annotated[str | None, Query(description="the sensors inside a box given by two opposite corners "
                                      "lat,lon,lat,lon (usually min_lat,min_lon,max_lat,max_lon)",
                                      pattern=BBOX_PATTERN, examples=["34.05,-118.35,34.20,-118.20"])] = None,
    horizon: Annotated[list[Horizon] | None, Query(description="forecast horizons in minutes (repeatable)")] = None,
    min_congestion: Annotated[Congestion | None, Query(description="predictions at least this congested")] = None,
    min_severity: Annotated[Severity | None, Query(description="alerts at least this severe")] = None,
    types: Annotated[list[Kind] | None, Query(description="event kinds to receive (repeatable); default all")] = None,
) -> EventFilter:
    """Filters shared by the stream and the REST lists: malformed values are 422, unknown sensors 404."""
    chosen = _parse_sensors(runtime, sensors)
    boxed = _parse_bbox(runtime, bbox)
    if boxed is not None:
        chosen = boxed if chosen is None else chosen & boxed
    return EventFilter(
        sensors=chosen,
        horizons=frozenset(int(h) for h in horizon) if horizon else None,
        kinds=frozenset(types) if types else frozenset(EVENT_KINDS),
        min_congestion=CONGESTION_RANK[min_congestion] if min_congestion else 0,
        min_severity=SEVERITY_RANK[min_severity] if min_severity else 0,
    )


FilterDep = Annotated[EventFilter, Depends(parse_filter)]
def horizon_param(horizon: Annotated[Horizon, Query(description="forecast horizon in minutes")] = Horizon.MIN_15,
                  ) -> int:
    return int(horizon)


HorizonDep = Annotated[int, Depends(horizon_param)]
LimitDep = Annotated[int, Query(ge=1, le=5000, description="at most this many rows")]


def known_sensor(runtime: RuntimeDep, sensor_id: str) -> str:
    if sensor_id not in runtime.catalog:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown sensor id {sensor_id!r}")
    return sensor_id


SensorIdDep = Annotated[str, Depends(known_sensor)]


admin_key_header = APIKeyHeader(name="X-API-Key", scheme_name="AdminKey", auto_error=False,
                                description="the admin key (TRAFFIC_API_ADMIN_KEY); admin routes only")


def require_admin(runtime: RuntimeDep, x_api_key: Annotated[str | None, Security(admin_key_header)]) -> None:
    key = runtime.settings.admin_key
    check_api_key(key.get_secret_value() if key is not None else None, x_api_key)


AdminDep = Annotated[None, Depends(require_admin)]
