"""``/health`` (real checks of Kafka, the consumer, the model registry and the streaming job's progress) and
``/metrics``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.broker import check_kafka
from api.deps import RuntimeDep
from api.errors import error_responses
from api.models import Health
from ml.exceptions import ModelRegistryError

__all__ = ["router"]

router = APIRouter(tags=["ops"])  # both routes are exempt from the rate limit: monitoring is never throttled


@router.get("/health", response_model=Health,
            summary="Kafka, consumer, model registry and streaming-job checks; 503 when degraded",
            responses={503: {"model": Health, "description": "degraded (a check failed) or still starting"}})
async def health(request: Request) -> JSONResponse:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:  # before the lifespan has built it, or after shutdown
        return JSONResponse({"status": "starting", "checks": {}}, status_code=503)
    settings = runtime.settings
    checks: dict[str, dict] = {}
    try:
        info = await run_in_threadpool(check_kafka, settings.bootstrap_servers, settings.kafka_timeout_s)
        wanted = [runtime.topics.predictions, runtime.topics.alerts]
        missing = [t for t in wanted if t not in info["topics"]]
        checks["kafka"] = {"ok": True, "bootstrap": settings.bootstrap_servers, "brokers": info["brokers"],
                           "missing_topics": missing}
    except Exception as exc:  # noqa: BLE001 - any failure of the round trip is "down"
        checks["kafka"] = {"ok": False, "bootstrap": settings.bootstrap_servers, "error": str(exc)}
    feed = runtime.feed
    checks["consumer"] = {
        "ok": feed is not None and feed.alive and feed.last_error is None,
        "partitions": len(feed.assigned) if feed else 0,
        "records": feed.consumed if feed else 0,
        "decode_errors": feed.decode_errors if feed else 0,
        "last_poll_age_s": round(time.time() - feed.last_poll_s, 3) if feed and feed.last_poll_s else None,
        "error": feed.last_error if feed else "not started",
        "error_for_s": round(time.time() - feed.error_since, 1) if feed and feed.error_since else None,
    }
    try:
        version = await run_in_threadpool(runtime.model.check)
        checks["model_registry"] = {"ok": True, "root": str(runtime.model.root), "latest_version": version,
                                    "served_version": runtime.model.version}
    except ModelRegistryError as exc:
        checks["model_registry"] = {"ok": False, "root": str(runtime.model.root), "error": str(exc)}
    checks["stream"] = {"ok": True, "clients": len(runtime.hub.subscribers), "last_event_id": runtime.hub.last_id}
    if runtime.watch is not None:  # behind with no new output for stall_after_s = stalled (api/stream_watch.py)
        checks["streaming_job"] = await run_in_threadpool(runtime.watch.check)
    ok = all(check["ok"] for check in checks.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"description": "the Prometheus text format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}},
                       **error_responses(503)})
def metrics(runtime: RuntimeDep) -> Response:
    feed = runtime.feed
    if feed is not None:
        runtime.metrics.decode_errors.set(feed.decode_errors)
        runtime.metrics.assigned_partitions.set(len(feed.assigned))
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
