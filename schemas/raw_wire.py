"""RawReading values decoded a batch at a time with numpy, byte for byte as :class:`~schemas.codec.AvroCodec`.

A RawReading value (Confluent wire format) is::

    0x00 | schema id (4 bytes, big-endian) | sensor id (zigzag varint length + UTF-8) |
    event_time (zigzag varint) | speed_mph (8-byte little-endian double)

Values of one length with a one-byte sensor-id length share one layout, so a
batch is decoded as a few 2-D byte arrays: one slice per field. Whatever does
not fit that layout (another schema id, a long id, a truncated or padded
value, a non-UTF-8 id, a value that is not bytes) is left to the caller's
per-record path, which gives the exact reason. :func:`raw_wire_decoder` only
returns a decoder when the codec's schema has exactly this layout and probe
records round-trip, so a schema change falls back to the codec.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from schemas.codec import AvroCodec

__all__ = ["DecodedReadings", "RawWireDecoder", "raw_wire_decoder"]

_RAW_FIELDS = [
    {"name": "sensor_id", "type": "string"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "speed_mph", "type": "double"},
]
_MIN_LEN = 5 + 1 + 1 + 8  # header, empty id, one varint byte, double
_MAX_TIME_BYTES = 9  # 63 bits: every epoch-ms time of years 1-9999 fits


@dataclass(frozen=True)
class DecodedReadings:
    """Per input value: whether the fast path decoded it, and its fields (undefined where ``ok`` is False)."""

    ok: np.ndarray
    sensor_id: np.ndarray
    event_time: np.ndarray
    speed_mph: np.ndarray


class RawWireDecoder:
    """Decodes RawReading values of one schema id with numpy (see the module doc)."""

    def __init__(self, schema_id: int) -> None:
        self.header = np.frombuffer(b"\x00" + int(schema_id).to_bytes(4, "big"), dtype=np.uint8)

    def decode(self, values: Sequence[object], max_len: int | None = None) -> DecodedReadings:
        n = len(values)
        ok = np.zeros(n, dtype=bool)
        sensor = np.full(n, "", dtype=object)
        event_time = np.zeros(n, dtype=np.int64)
        speed = np.full(n, math.nan)
        lengths = np.fromiter((len(v) if type(v) is bytes else -1 for v in values), np.int64, n)
        for length in np.unique(lengths):
            length = int(length)
            if length < _MIN_LEN or (max_len is not None and length > max_len):
                continue
            rows = np.flatnonzero(lengths == length)
            buf = np.frombuffer(b"".join([values[i] for i in rows]), dtype=np.uint8).reshape(len(rows), length)
            fits = (buf[:, :5] == self.header).all(axis=1) & (buf[:, 5] < 0x80) & (buf[:, 5] % 2 == 0)
            id_lengths = buf[:, 5] >> 1
            for id_len in np.unique(id_lengths[fits]):
                id_len = int(id_len)
                width = length - 8 - 6 - id_len
                if not 1 <= width <= _MAX_TIME_BYTES:
                    continue
                sub = np.flatnonzero(fits & (id_lengths == id_len))
                part = buf[sub]
                times = part[:, 6 + id_len : 6 + id_len + width].astype(np.uint64)
                varint_ok = ((times[:, :-1] & 0x80) != 0).all(axis=1) & ((times[:, -1] & 0x80) == 0)
                shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
                zigzag = ((times & np.uint64(0x7F)) << shifts).sum(axis=1, dtype=np.uint64)
                decoded_time = (zigzag >> np.uint64(1)).astype(np.int64) ^ -(zigzag & np.uint64(1)).astype(np.int64)
                ids = np.ascontiguousarray(part[:, 6 : 6 + id_len]).view(f"S{id_len}").ravel() if id_len else None
                names = np.full(len(sub), "", dtype=object)
                id_ok = np.ones(len(sub), dtype=bool)
                if ids is not None:
                    unique, inverse = np.unique(ids, return_inverse=True)
                    decoded = []
                    for raw in unique.tolist():
                        try:
                            decoded.append(raw.decode("utf-8"))
                        except UnicodeDecodeError:
                            decoded.append(None)
                    lookup = np.array(decoded, dtype=object)
                    names = lookup[inverse]
                    id_ok = names != None  # noqa: E711 - elementwise
                    # numpy's S dtype drops trailing NUL bytes: such ids take the per-record path.
                    id_ok &= np.fromiter((len(r) == id_len for r in unique.tolist()), bool, len(unique))[inverse]
                good = varint_ok & id_ok
                target = rows[sub[good]]
                ok[target] = True
                sensor[target] = names[good]
                event_time[target] = decoded_time[good]
                speed[target] = np.ascontiguousarray(part[good, length - 8 :]).view("<f8").ravel()
        return DecodedReadings(ok, sensor, event_time, speed)


def raw_wire_decoder(codec: AvroCodec) -> RawWireDecoder | None:
    """A decoder for ``codec``'s RawReading values, or None when its schema has another layout."""
    fields = [{"name": f["name"], "type": f["type"]} for f in codec.schema.get("fields", [])]
    if codec.schema.get("name") != "RawReading" and codec.schema.get("name") != "traffic.metrla.RawReading":
        return None
    if fields != _RAW_FIELDS:
        return None
    decoder = RawWireDecoder(codec.schema_id)
    probes = [("773869", 1_330_560_000_000, 64.375), ("ü-1", 0, 0.0), ("x", -1, -math.inf),
              ("7" * 60, 2**60, math.nan)]
    values = [codec.encode({"sensor_id": s, "event_time": t, "speed_mph": v}) for s, t, v in probes]
    got = decoder.decode(values)
    for i, (s, t, v) in enumerate(probes):
        same_speed = (math.isnan(v) and math.isnan(got.speed_mph[i])) or got.speed_mph[i] == v
        if not (got.ok[i] and got.sensor_id[i] == s and int(got.event_time[i]) == t and same_speed):
            return None
    return decoder
