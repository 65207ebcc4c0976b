"""``/model`` (the current model and its metrics) and ``/admin/model/reload`` (API key)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.deps import AdminDep, RuntimeDep
from api.errors import error_responses
from api.models import Model
from ml.exceptions import ModelRegistryError

__all__ = ["admin_router", "router"]

router = APIRouter(prefix="/model", tags=["model"], responses=error_responses(429, 503))
# POST routes: the body-size guard (400, 413) and the key (401 missing or wrong, 403 admin disabled) apply.
admin_router = APIRouter(prefix="/admin", tags=["admin"], responses=error_responses(400, 401, 403, 413, 429, 503))


@router.get("", response_model=Model, summary="The registry's current model and its validation metrics")
def current_model(runtime: RuntimeDep) -> dict:
    return runtime.model.describe()


@admin_router.post("/model/reload", response_model=Model, summary="Re-read the model registry (needs X-API-Key)",
                   responses=error_responses(409))
def reload_model(runtime: RuntimeDep, _: AdminDep) -> dict:
    try:
        return runtime.model.reload()
    except ModelRegistryError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
