"""``/model`` (the current model and its metrics) and ``/admin/model/reload`` (API key)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.deps import AdminDep, RuntimeDep
from api.models import Model
from ml.exceptions import ModelRegistryError

__all__ = ["admin_router", "router"]

router = APIRouter(prefix="/model", tags=["model"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("", response_model=Model, summary="The registry's current model and its validation metrics")
def current_model(runtime: RuntimeDep) -> dict:
    return runtime.model.describe()


@admin_router.post("/model/reload", response_model=Model, summary="Re-read the model registry (needs X-API-Key)")
def reload_model(runtime: RuntimeDep, _: AdminDep) -> dict:
    try:
        return runtime.model.reload()
    except ModelRegistryError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
