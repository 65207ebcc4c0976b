"""Step frames: many events of one kind sent as one SSE event in columns (``GET /stream?batch=true``).

A model step is 621 predictions. Sent as 621 ``prediction`` events of ~300
bytes each, a step is ~190 KB per client, and the field names are most of it.
A client that asks for ``batch=true`` gets each run of consecutive
``prediction`` (or ``reading``) events of a delivery as one ``predictions``
(``readings``) event instead::

    id: <id of the last event in it>
    event: predictions
    data: {"n": 621, "received_ms": ..., "first_id": ..., "const": {"event_time": ..., ...},
           "cols": {"sensor_id": [...], "predicted_speed_mph": [...], ...}}

``const`` holds the fields whose value is the same in every record, ``cols``
the others, one list per field in record order. Speeds and other non-integer
numbers are rounded to ``DECIMALS`` (0.001 mph) in frames; REST and unbatched
events carry them unrounded. The ids are the events' own: a frame's id is its
last event's, so ``Last-Event-ID`` resumes exactly after it (and a resumed
client gets the missed events as frames too). A frame is encoded once per
delivery and filter and shared by every client with that filter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["BATCHED_KINDS", "DECIMALS", "encode_columns", "encode_events"]

BATCHED_KINDS: dict[str, str] = {"prediction": "predictions", "reading": "readings"}
DECIMALS = 3


class _Event(Protocol):
    id: int
    kind: str
    frame: bytes
    data: dict[str, Any] | None


def _rounded(value: Any) -> Any:
    return round(value, DECIMALS) if isinstance(value, float) else value


def encode_columns(last_id: int, kind: str, records: Sequence[dict[str, Any]], first_id: int) -> bytes:
    """One SSE frame holding ``records`` (all with the same fields) in columns."""
    const: dict[str, Any] = {}
    cols: dict[str, list[Any]] = {}
    for name in records[0]:
        if name == "received_ms":
            continue
        values = [_rounded(r[name]) for r in records]
        first = values[0]
        if all(v == first for v in values):
            const[name] = first
        else:
            cols[name] = values
    body = {"n": len(records), "received_ms": records[0].get("received_ms", 0.0), "first_id": first_id,
            "const": const, "cols": cols}
    text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    return f"id: {last_id}\nevent: {BATCHED_KINDS[kind]}\ndata: {text}\n\n".encode()


def encode_events(events: Sequence[_Event]) -> bytes:
    """The events as frames: runs of consecutive batchable events of one kind as one column frame each."""
    out: list[bytes] = []
    i = 0
    while i < len(events):
        event = events[i]
        j = i + 1
        if event.kind in BATCHED_KINDS and event.data is not None:
            keys = event.data.keys()
            while (j < len(events) and events[j].kind == event.kind and events[j].data is not None
                   and events[j].data.keys() == keys):
                j += 1
        if j - i > 1:
            run = events[i:j]
            out.append(encode_columns(run[-1].id, event.kind, [e.data for e in run], run[0].id))
        else:
            out.append(event.frame)
        i = j
    return b"".join(out)
