"""``/alerts``: the most recent alerts, newest first."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import FilterDep, LimitDep, RuntimeDep
from api.errors import error_responses
from api.models import Alert

__all__ = ["router"]

router = APIRouter(prefix="/alerts", tags=["alerts"], responses=error_responses(404, 422, 429, 503))


@router.get("", response_model=list[Alert], summary="Recent alerts (filters: sensors, bbox, horizon, min_severity)")
def alerts(runtime: RuntimeDep, event_filter: FilterDep, limit: LimitDep = 100) -> list[dict]:
    rows = [a for a in reversed(runtime.state.alerts) if event_filter.matches_record("alert", a)]
    return rows[:limit]
