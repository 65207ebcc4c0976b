"""``/roads``: the road links between sensors that the dashboard draws and incidents follow (docs/incidents.md)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import RuntimeDep
from api.errors import error_responses
from ml.network import Network

__all__ = ["router"]

router = APIRouter(prefix="/roads", tags=["roads"])


Link = Annotated[list[str], Field(min_length=2, max_length=2, description="two sensor ids")]


class RoadLinks(BaseModel):
    links: list[Link] = Field(description="undirected sensor-to-sensor links along the freeways")


@lru_cache(maxsize=4)
def _links(network: Network, sensor_ids: tuple[str, ...]) -> list[list[str]]:
    return [list(link) for link in network.road_links(sensor_ids)]


@router.get("", response_model=RoadLinks, summary="Road links between the sensors (each sensor's nearest sensor "
            "up- and downstream on the road graph)",
            responses=error_responses(429, 503))
def roads(runtime: RuntimeDep) -> dict:
    return {"links": _links(runtime.network, tuple(runtime.catalog.ids))}
