"""Request guards from settings: body size limit, per-IP rate limit, and the admin API key.

* Bodies larger than ``max_request_bytes`` get ``413`` (checked on
  ``Content-Length`` and while streaming a chunked body).
* Each client IP has a token bucket of ``rate_limit_burst`` tokens refilled at
  ``rate_limit_per_s``; an empty bucket gets ``429`` with ``Retry-After``.
  ``/health`` and ``/metrics`` are exempt so monitoring never gets throttled.
* ``/admin/*`` needs the ``X-API-Key`` header equal to ``admin_key``
  (compared in constant time); with no key configured admin is disabled (403).
"""

from __future__ import annotations

import json
import math
import secrets
import time

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RATE_LIMIT_EXEMPT", "BodySizeLimit", "RateLimit", "check_api_key"]

RATE_LIMIT_EXEMPT: tuple[str, ...] = ("/health", "/metrics")


async def _send_json(send: Send, status_code: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuse request bodies above ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)  # no body is read on these routes; streams skip the wrappers
            return
        detail = f"request body larger than {self.max_bytes} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    await _send_json(send, 400, "invalid Content-Length header")
                    return
                if too_big:
                    await _send_json(send, 413, detail)
                    return
        if scope["method"] in ("POST", "PUT", "PATCH") and not any(n == b"content-length" for n, _ in scope["headers"]):
            # a chunked body: read it (at most max_bytes) before the app runs, then replay it
            buffered: list[Message] = []
            size = 0
            while True:
                message = await receive()
                buffered.append(message)
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    await _send_json(send, 413, detail)
                    return
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
            upstream = receive

            async def replay() -> Message:
                return buffered.pop(0) if buffered else await upstream()

            receive = replay
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, detail)


class RateLimit:
    """Token bucket per client IP; 429 when empty. ``per_s == 0`` turns it off."""

    def __init__(self, app: ASGIApp, per_s: float, burst: int, on_limited=None) -> None:
        self.app = app
        self.per_s = per_s
        self.burst = burst
        self.on_limited = on_limited
        self.buckets: dict[str, tuple[float, float]] = {}

    def _take(self, key: str, now: float) -> float:
        """0 when a token was taken, else the seconds until one is free."""
        tokens, last = self.buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_s)
        if tokens >= 1.0:
            self.buckets[key] = (tokens - 1.0, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.per_s

    def _prune(self, now: float) -> None:
        if len(self.buckets) > 10_000:
            full_after_s = self.burst / self.per_s
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < full_after_s}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.per_s <= 0 or scope["path"] in RATE_LIMIT_EXEMPT:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = client[0] if client else "unknown"
        now = time.monotonic()
        self._prune(now)
        wait_s = self._take(key, now)
        if wait_s > 0:
            if self.on_limited is not None:
                self.on_limited()
            retry = str(max(1, math.ceil(wait_s))).encode()
            await _send_json(send, 429, f"rate limit exceeded ({self.per_s:g} requests/s per client, "
                                        f"burst {self.burst}); retry later", [(b"retry-after", retry)])
            return
        await self.app(scope, receive, send)


def check_api_key(configured: str | None, given: str | None) -> None:
    """Raise 403/401 unless ``given`` equals the configured admin key."""
    if not configured:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin endpoints are disabled: set TRAFFIC_API_ADMIN_KEY")
    if not given:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing X-API-Key header",
                            headers={"WWW-Authenticate": "APIKey"})
    if not secrets.compare_digest(given.encode(), configured.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers={"WWW-Authenticate": "APIKey"})
