"""The FastAPI app factory: ``create_app(settings)``.

The lifespan builds one :class:`~api.runtime.Runtime` per app: the sensor
catalog, live state, fan-out hub, metrics, model info, and the single Kafka
consumer thread. Routes live in :mod:`api.routes`; guards in :mod:`api.security`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.accuracy import AccuracyMonitor
from api.broker import KafkaFeed
from api.errors import install_error_handlers
from api.hub import Hub
from api.incidents import IncidentBook
from api.journal import EventJournal
from api.metrics import ApiMetrics
from api.model_info import ModelInfo
from api.routes import accuracy, alerts, dashboard, history, incidents, model, ops, predictions, roads, sensors, stream
from api.runtime import Runtime
from api.security import BodySizeLimit, RateLimit
from api.settings import ApiSettings, get_settings
from api.state import LiveState, SensorCatalog
from api.stream_watch import StreamWatch
from api.vendor import ensure_vendor
from config.settings import get_settings as get_platform_settings
from config.stream_watch import StreamWatchSettings
from ml.exceptions import ModelRegistryError
from ml.network import Network, load_network
from schemas.topics import TopicSettings, get_topic_settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


class _RequestMetrics:
    """Counts requests by route template and status; times the non-streaming ones."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("/dashboard" if scope["path"].startswith("/dashboard") else "other")
            self.metrics.requests.labels(path, str(status)).inc()
            if path != "/stream":
                self.metrics.request_seconds.labels(path).observe(time.perf_counter() - started)


class _GcTimer:
    """Records every cyclic-GC pause (a long gen-2 pass stalls every stream at once)."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.metrics = metrics
        self.started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.metrics.gc_seconds.labels(str(info["generation"])).observe(time.perf_counter() - self.started)


async def _watch_loop_lag(metrics: ApiMetrics, interval_s: float = 0.25) -> None:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        metrics.loop_lag_seconds.observe(max(0.0, loop.time() - started - interval_s))


async def _tend_streams(hub: Hub, send_timeout_s: float, ping_s: float) -> None:
    """Drop clients whose write has been blocked for ``send_timeout_s``; wake streams idle for ``ping_s`` for a
    keep-alive (api/hub.py)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(min(1.0, send_timeout_s / 4, ping_s / 4))
        now = loop.time()
        hub.expire_sends(now, send_timeout_s)
        hub.due_pings(now, ping_s)


def create_app(settings: ApiSettings | None = None, topics: TopicSettings | None = None,
               *, start_feed: bool = True, network: Network | None = None) -> FastAPI:
    """Build the app; ``start_feed=False`` leaves Kafka out (unit tests feed ``runtime.ingest`` directly).

    ``network`` (default: the TRAFFIC_NETWORK setting, METR-LA) gives the sensors, road links and title.
    """
    settings = settings or get_settings()
    network = network or load_network()
    topics = topics or get_topic_settings()
    if settings.require_vendor:
        ensure_vendor(settings.static_dir)
    metrics = ApiMetrics()
    store_dsn = get_platform_settings().postgres_dsn if settings.use_store else None
    monitor = None if store_dsn is None else AccuracyMonitor(store_dsn, settings, metrics.registry,
                                                            settings.model_registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        catalog = SensorCatalog.from_network(network)
        journal = EventJournal(settings.event_journal, settings.ring_buffer_size) if settings.event_journal else None
        runtime = Runtime(
            settings=settings, topics=topics, catalog=catalog,
            state=LiveState(catalog, settings.history_steps, settings.alerts_kept),
            hub=Hub(settings.ring_buffer_size, settings.client_queue_size, journal),
            metrics=metrics, model=ModelInfo(settings.model_registry), incidents=IncidentBook(settings.incidents_kept),
            store_dsn=store_dsn, accuracy=monitor, network=network,
            watch=StreamWatch(settings.bootstrap_servers, topics, StreamWatchSettings(),  # read now: tests set it
                              settings.kafka_timeout_s),
        )
        try:
            runtime.model.reload()
        except ModelRegistryError as exc:
            log.warning("no model yet: %s", exc)
        if start_feed:
            meta = runtime.model.metadata or {}  # a model step: its sensors x its horizons (0: learned from the feed)
            step_records = len(meta.get("sensor_ids") or network.sensor_ids) * len(meta.get("horizons_min") or ())
            runtime.feed = KafkaFeed(
                settings.bootstrap_servers, topics, runtime.ingest, asyncio.get_running_loop(),
                consume_actuals=settings.consume_actuals, backfill_per_partition=settings.backfill_per_partition,
                metadata_refresh_s=settings.metadata_refresh_s, timeout_s=settings.kafka_timeout_s,
                start_at=journal.oldest if journal is not None else None,
                batch_size=settings.consume_batch_size, linger_ms=settings.consume_linger_ms,
                step_gather_ms=settings.step_gather_ms,
                step_records=step_records,
            )
            runtime.feed.start()
        app.state.runtime = runtime
        lag_monitor = asyncio.create_task(_watch_loop_lag(metrics))
        send_deadline = asyncio.create_task(_tend_streams(runtime.hub, settings.send_timeout_s, settings.ping_s))
        accuracy_refresh = asyncio.create_task(monitor.run()) if monitor is not None else None
        gc_timer = _GcTimer(metrics)
        gc.callbacks.append(gc_timer)
        gc_before = gc.get_threshold()
        gc.set_threshold(settings.gc_threshold0, *gc_before[1:])
        if settings.gc_freeze:
            gc.freeze()  # what start-up built lives forever: later full collections need not walk it
        try:
            yield
        finally:
            lag_monitor.cancel()
            send_deadline.cancel()
            if accuracy_refresh is not None:
                accuracy_refresh.cancel()
            gc.callbacks.remove(gc_timer)
            gc.set_threshold(*gc_before)
            if settings.gc_freeze:
                gc.unfreeze()
            runtime.hub.close()
            if runtime.feed is not None:
                await asyncio.to_thread(runtime.feed.stop)
            if journal is not None:
                journal.close()

    app = FastAPI(
        title="Traffic forecasting API",
        version="0.1.0",
        summary="METR-LA speed forecasts: live SSE stream, REST, health, metrics and a live map dashboard.",
        lifespan=lifespan,
        docs_url=None,  # /docs is served from vendored files (routes/dashboard.py), not a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    for module in (stream, predictions, sensors, roads, alerts, incidents, ops, dashboard, history, accuracy):
        app.include_router(module.router)
    app.include_router(model.router)
    app.include_router(model.admin_router)
    app.mount("/dashboard", StaticFiles(directory=settings.static_dir, html=True), name="dashboard")

    # Middlewares run outermost-last-added: metrics see everything, then the guards.
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                       allow_headers=["X-API-Key", "Last-Event-ID", "Content-Type"], max_age=600)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RateLimit, per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst,
                       on_limited=metrics.rate_limited.inc)
    app.add_middleware(_RequestMetrics, metrics=metrics)
    return app
