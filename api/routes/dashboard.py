"""The dashboard: ``/`` redirects to ``/dashboard/``; ``/dashboard/config.json`` tells it the map settings.

``/docs`` is Swagger UI for ``/openapi.json``, served from the vendored npm files.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse

from api.deps import RuntimeDep
from api.errors import error_responses
from api.state import HORIZONS_MIN

__all__ = ["router"]

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard/")


@router.get("/docs", include_in_schema=False)
def docs() -> HTMLResponse:
    """Swagger UI for /openapi.json, from the vendored npm files (no CDN: works offline)."""
    vendor = "/dashboard/vendor/swagger-ui"
    return get_swagger_ui_html(openapi_url="/openapi.json", title="Traffic forecasting API",
                               swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
                               swagger_css_url=f"{vendor}/swagger-ui.css",
                               swagger_favicon_url=f"{vendor}/favicon-32x32.png")


@router.get("/dashboard/config.json", summary="Settings the dashboard needs (network, title, tiles, horizons)",
            responses=error_responses(429, 503))
def dashboard_config(runtime: RuntimeDep) -> dict:
    settings = runtime.settings
    return {
        "network": runtime.network.name,
        "title": runtime.network.title,
        "tile_url": settings.tile_url,
        "tile_attribution": settings.tile_attribution if settings.tile_url else None,
        "horizons_min": list(HORIZONS_MIN),
        "sensors": len(runtime.catalog.ids),
    }
