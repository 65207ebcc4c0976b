"""Fast RawReading values for the replay producer, byte-identical to :class:`schemas.codec.AvroCodec`."""

from __future__ import annotations

import math

import numpy as np

from schemas.codec import AvroCodec

__all__ = ["RawReadingEncoder"]


def _zigzag_varint(value: int) -> bytes:
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_RAW_FIELDS = [
    {"name": "sensor_id", "type": "string"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "speed_mph", "type": "double"},
]


class RawReadingEncoder:
    """Builds RawReading values a step at a time, byte-identical to ``codec.encode`` but ~10x faster.

    A reading is the codec's header plus the sensor id's Avro string, both fixed
    per sensor, then the time's zigzag varint (fixed per step) and the speed as a
    little-endian double. :meth:`for_codec` returns None unless the codec's
    schema has exactly that layout and probe records encode identically, so a
    schema change falls back to ``codec.encode``.
    """

    def __init__(self, codec: AvroCodec, sensor_ids: tuple[str, ...]) -> None:
        header = b"\x00" + codec.schema_id.to_bytes(4, "big")
        self._prefixes = [header + _zigzag_varint(len(b := sid.encode())) + b for sid in sensor_ids]

    def step(self, event_ms: int, speeds: np.ndarray) -> list[bytes]:
        time_bytes = _zigzag_varint(event_ms)
        raw = np.ascontiguousarray(speeds, dtype="<f8").tobytes()
        return [prefix + time_bytes + raw[8 * j : 8 * j + 8] for j, prefix in enumerate(self._prefixes)]

    @classmethod
    def for_codec(cls, codec: AvroCodec, sensor_ids: tuple[str, ...]) -> RawReadingEncoder | None:
        fields = [{"name": f["name"], "type": f["type"]} for f in codec.schema.get("fields", [])]
        if codec.schema.get("name") != "traffic.metrla.RawReading" or fields != _RAW_FIELDS:
            return None
        probe_ids = (*sensor_ids[:3], "ü-1")
        probe = cls(codec, probe_ids)
        for event_ms in (0, 1, -1, 1_330_560_000_000, 2**62):
            speeds = np.array([64.375, math.nan, -math.inf, 0.0][: len(probe_ids)], dtype=np.float64)
            expected = [codec.encode({"sensor_id": sid, "event_time": event_ms, "speed_mph": float(sp)})
                        for sid, sp in zip(probe_ids, speeds, strict=True)]
            if probe.step(event_ms, speeds) != expected:
                return None
        return cls(codec, sensor_ids)
