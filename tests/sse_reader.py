"""A small Server-Sent Events reader over httpx, shared by the API tests and the fault tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["SseEvent", "read_events"]


@dataclass
class SseEvent:
    event: str
    data: Any
    id: int | None


def read_events(response: httpx.Response) -> Iterator[SseEvent]:
    """Parse the stream of an open ``httpx`` streaming response (comments are skipped)."""
    event, data, event_id = "message", [], None
    for line in response.iter_lines():
        if line == "":
            if data:
                yield SseEvent(event, json.loads("\n".join(data)), event_id)
            event, data, event_id = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = int(value)
