"""``GET /stream``: predictions, alerts and readings as Server-Sent Events.

On connect a client gets a ``snapshot`` event (the latest state matching its
filters) unless it sends ``Last-Event-ID`` still covered by the ring buffer, in
which case it gets exactly the events it missed; with an event journal
(``TRAFFIC_API_EVENT_JOURNAL``, see :mod:`api.journal`) also after an API restart. Then live events follow:
``prediction``, ``alert``, ``reading``, ``incident`` (with ``batch=true``, runs of
predictions and readings come as one ``predictions`` / ``readings`` event in
columns: :mod:`api.frames`) (a state of an incident:
its ``event`` is OPENED, UPDATED or CLOSED; docs/incidents.md); a ``lagged`` event when it fell
``client_queue_size`` events behind (then the stream closes, see
:mod:`api.hub`), and ``bye`` on server shutdown. A keep-alive comment
(``: ping``) goes to a stream that wrote nothing for ``ping_s``, and a write
blocked for ``send_timeout_s`` drops the client: one task per app checks
every stream once a second (:meth:`api.hub.Hub.due_pings`,
:meth:`api.hub.Hub.expire_sends`), instead of sse-starlette's ping task and
timer per write for each client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse

from api.deps import FilterDep, RuntimeDep
from api.errors import error_responses, pattern
from api.frames import encode_events
from api.hub import EventFilter, Subscriber, encode_frame
from api.runtime import Runtime

__all__ = ["router", "snapshot_of"]

router = APIRouter(prefix="/stream", tags=["stream"], responses=error_responses(404, 422, 429, 503))
KEEP_ALIVE = b": ping\n\n"
EVENT_ID_PATTERN = pattern(r"^[0-9]*$", "must be an event id (a non-negative integer; empty = none)")


def snapshot_of(runtime: Runtime, event_filter: EventFilter) -> dict[str, Any]:
    """The latest state a new client starts from."""
    state = runtime.state
    kinds = event_filter.kinds
    predictions = [p for p in state.latest.values() if event_filter.matches_record("prediction", p)] \
        if "prediction" in kinds else []
    readings = [r for r in state.readings.values() if event_filter.matches_record("reading", r)] \
        if "reading" in kinds else []
    alerts = [a for a in state.alerts if event_filter.matches_record("alert", a)][-100:] if "alert" in kinds else []
    incidents = [i for i in runtime.incidents.query() if event_filter.matches_record("incident", i)][:200] \
        if "incident" in kinds else []
    return {"last_event_id": runtime.hub.last_id, "predictions": predictions, "readings": readings, "alerts": alerts,
            "incidents": incidents}


async def _events(runtime: Runtime, sub: Subscriber, first: bytes, shutdown: anyio.Event) -> AsyncIterator[bytes]:
    """The stream's chunks; around each ``yield`` (the server's write of it) ``sub.sending_since`` is set, so
    :meth:`~api.hub.Hub.expire_sends` can drop a client whose write stays blocked."""
    hub, metrics = runtime.hub, runtime.metrics
    coalesce_s = runtime.settings.coalesce_ms / 1000.0
    loop = asyncio.get_running_loop()
    clock = loop.time
    sub.task = asyncio.current_task()  # the response's sending task: cancelling it ends the stream
    hub.opened(sub)

    async def wake_on_shutdown() -> None:
        await shutdown.wait()
        sub.close()

    watcher = asyncio.create_task(wake_on_shutdown())
    metrics.sse_clients.inc()
    try:
        sub.sending_since = clock()
        yield first
        sub.sending_since = 0.0
        last_write = sub.last_write = clock()
        while True:
            await sub.wake.wait()
            wait_s = last_write + coalesce_s - clock()
            if wait_s > 0:  # at most one write per coalesce_ms: events arriving meanwhile share it
                await asyncio.sleep(wait_s)  # (only when events come that soon: no timer per write otherwise)
            if sub.lagged:
                metrics.sse_lagged.inc()
                sub.sending_since = clock()
                yield encode_frame(None, "lagged", {
                    "last_event_id": sub.last_sent_id, "queue_size": sub.limit,
                    "message": "this client fell too far behind and is disconnected; reconnect with "
                               "Last-Event-ID to resume (a snapshot is sent if the gap is too old)"})
                return
            if sub.closed:
                sub.sending_since = clock()
                yield encode_frame(None, "bye", {"last_event_id": sub.last_sent_id, "message": "server shutting down"})
                return
            batches = sub.take()
            if not batches:
                if sub.ping_due:
                    sub.sending_since = clock()
                    yield KEEP_ALIVE
                    sub.sending_since, sub.last_write, sub.ping_due = 0.0, clock(), False
                continue
            sub.last_sent_id = batches[-1].last_id
            metrics.sse_events_sent.inc(sum(batch.count for batch in batches))
            oldest_s = batches[0].received_ms / 1000.0
            metrics.sse_ready_seconds.observe(max(0.0, time.time() - oldest_s))
            last_write = sub.sending_since = clock()
            yield batches[0].payload if len(batches) == 1 else b"".join([batch.payload for batch in batches])
            sub.sending_since, sub.last_write, sub.ping_due = 0.0, clock(), False
            metrics.sse_sent_seconds.observe(max(0.0, time.time() - oldest_s))
    finally:
        watcher.cancel()
        hub.unsubscribe(sub)
        metrics.sse_clients.dec()
        if sub.timed_out:
            metrics.sse_send_timeouts.inc()


@router.get("", summary="Live predictions, alerts and readings (Server-Sent Events)",
            response_class=EventSourceResponse, response_description="an endless text/event-stream")
async def stream(
    runtime: RuntimeDep,
    event_filter: FilterDep,
    last_event_id: Annotated[str | None, Header(description="resume after this event id",
                                                pattern=EVENT_ID_PATTERN)] = None,
    batch: Annotated[bool, Query(description="step frames: each run of predictions (readings) as one "
                                 "`predictions` (`readings`) event in columns, speeds to 0.001 mph")] = False,
) -> EventSourceResponse:
    resume_from = int(last_event_id) if last_event_id else None
    hub, settings = runtime.hub, runtime.settings
    if resume_from is not None and not hub.restored.is_set():  # just restarted: the journaled events come back first
        try:
            await asyncio.wait_for(hub.restored.wait(), settings.restore_wait_s)
        except TimeoutError:
            hub.finish_restore()  # what could not be read back leaves a gap: such resumes get a snapshot
    if batch:
        event_filter = replace(event_filter, batched=True)
    sub = hub.subscribe(event_filter)  # subscribe first: nothing published between snapshot and live is lost
    runtime.metrics.sse_connections.inc()
    missed = hub.replay_after(resume_from, event_filter) if resume_from is not None else None
    if missed is not None:
        runtime.metrics.sse_resumed.inc()
        first = (encode_events(missed) if batch else b"".join(event.frame for event in missed)) or b": resumed\n\n"
        sub.last_sent_id = hub.last_id
    else:
        first = encode_frame(hub.last_id, "snapshot", snapshot_of(runtime, event_filter))
        sub.last_sent_id = hub.last_id
    shutdown = anyio.Event()
    return EventSourceResponse(
        _events(runtime, sub, first, shutdown),
        ping=0,  # keep-alives come from the stream itself, only when it was idle for ping_s (Hub.due_pings)
        send_timeout=None,  # one deadline per client instead (Hub.expire_sends): no timer per write
        shutdown_event=shutdown,
        shutdown_grace_period=settings.shutdown_grace_s,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
