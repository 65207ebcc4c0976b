"""The dashboard: ``/`` redirects to ``/dashboard/``; ``/dashboard/config.json`` tells it the map settings."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from api.deps import RuntimeDep
from api.state import HORIZONS_MIN

__all__ = ["router"]

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard/")


@router.get("/dashboard/config.json", summary="Settings the dashboard needs (tiles, horizons)")
def dashboard_config(runtime: RuntimeDep) -> dict:
    settings = runtime.settings
    return {
        "tile_url": settings.tile_url,
        "tile_attribution": settings.tile_attribution if settings.tile_url else None,
        "horizons_min": list(HORIZONS_MIN),
        "sensors": len(runtime.catalog.ids),
    }
