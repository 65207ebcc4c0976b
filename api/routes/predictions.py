"""``/predictions``: the latest forecast per sensor and horizon, and network analytics."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import FilterDep, HorizonDep, LimitDep, RuntimeDep
from api.errors import error_responses
from api.models import Analytics, Prediction

__all__ = ["router"]

router = APIRouter(prefix="/predictions", tags=["predictions"], responses=error_responses(422, 429, 503))


@router.get("/latest", response_model=list[Prediction], summary="Latest prediction per sensor and horizon",
            responses=error_responses(404))
def latest(runtime: RuntimeDep, event_filter: FilterDep, limit: LimitDep = 1000) -> list[dict]:
    rows = runtime.state.latest_predictions(event_filter.sensors, event_filter.horizons, event_filter.min_congestion)
    return rows[:limit]


@router.get("/analytics", response_model=Analytics, summary="Counts, average speeds and congestion breakdown")
def analytics(runtime: RuntimeDep, horizon: HorizonDep) -> dict:
    return runtime.state.analytics(horizon)
