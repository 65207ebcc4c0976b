"""``/roads``: the road links between sensors that the dashboard draws and incidents follow (docs/incidents.md)."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import RuntimeDep
from api.models import Problem
from ml.road_graph import bundled_road_links

__all__ = ["router"]

router = APIRouter(prefix="/roads", tags=["roads"])


class RoadLinks(BaseModel):
    links: list[tuple[str, str]] = Field(description="undirected sensor-to-sensor links along the freeways")


@lru_cache(maxsize=4)
def _links(sensor_ids: tuple[str, ...]) -> list[tuple[str, str]]:
    return list(bundled_road_links(sensor_ids))


@router.get("", response_model=RoadLinks, summary="Road links between the sensors (each sensor's nearest sensor "
            "up- and downstream on the road graph)",
            responses={429: {"model": Problem, "description": "rate limited"},
                       503: {"model": Problem, "description": "the API is starting up"}})
def roads(runtime: RuntimeDep) -> dict:
    return {"links": _links(tuple(runtime.catalog.ids))}
