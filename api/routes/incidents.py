"""``/incidents``: open and recent congestion incidents (docs/incidents.md), and one incident's states."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status

from api.deps import RuntimeDep
from api.errors import error_responses
from api.incidents import SEVERITY_RANK
from api.models import Incident, IncidentDetail

__all__ = ["router"]

router = APIRouter(prefix="/incidents", tags=["incidents"], responses=error_responses(404, 422, 429, 503))

State = Literal["OPEN", "CLEARING", "CLOSED"]
Severity = Literal["MODERATE", "HEAVY", "SEVERE"]
MAX_MS = 10**14  # epoch ms far beyond any step (year 5138): keeps the range in 64-bit integers


@router.get("", response_model=list[Incident],
            summary="Open and recent incidents: open first, then the most recently updated",
            description="An unknown `sensor` is a 404; `since_ms` after `until_ms` is an empty range.")
def incidents(
    runtime: RuntimeDep,
    state: Annotated[list[State] | None, Query(description="only these states (repeatable); "
                                                "OPEN and CLEARING are the open ones")] = None,
    min_severity: Annotated[Severity | None, Query(description="at least this severe")] = None,
    sensor: Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_-]+$",
                                        description="only incidents affecting this sensor")] = None,
    since_ms: Annotated[int | None, Query(ge=0, le=MAX_MS, description="alive at or after this time (epoch ms)")]
    = None,
    until_ms: Annotated[int | None, Query(ge=0, le=MAX_MS, description="opened at or before this time (epoch ms)")]
    = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many incidents")] = 100,
) -> list[dict]:
    if sensor is not None and sensor not in runtime.catalog:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"sensor: unknown sensor id {sensor!r}")
    if since_ms is not None and until_ms is not None and since_ms > until_ms:
        return []  # an empty range
    rows = runtime.incidents.query(frozenset(state) if state else None,
                                   SEVERITY_RANK[min_severity] if min_severity else 0, sensor, since_ms, until_ms)
    return rows[:limit]


@router.get("/{incident_id}", response_model=IncidentDetail,
            summary="One incident: its latest state and its recorded states")
def incident(
    runtime: RuntimeDep,
    incident_id: Annotated[str, Path(min_length=1, max_length=64, description="e.g. 773904@2012-03-30T07:05Z")],
) -> dict:
    states = runtime.incidents.states_of(incident_id)
    if states is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no incident {incident_id!r}")
    return {"incident": runtime.incidents.latest[incident_id], "states": states}
