"""The catalogue of malformed and hostile records that ``traffic replay --inject-bad`` mixes in.

Each kind has one generator function ``(ctx, reading, encoded) -> (key, value)``
that derives a bad record from the good reading just sent (``encoded`` is its
wire-format value). Everything random comes from one seeded generator, so a
seed reproduces exactly the same records. The kinds, and how a consumer can
recognise each one by inspection:

================== =========================================================================
kind               record
================== =========================================================================
truncated          a strict, non-empty prefix of the reading's valid value
garbage            1..64 random bytes whose first byte is not the magic byte 0
wrong_schema       valid Avro of another project schema (event, aggregate, prediction,
                   alert) under that schema's own id
wrong_field_types  RawReading's schema id, but fields of the wrong types
                   (:data:`WRONG_FIELD_TYPES_SCHEMA`: id as long, time and speed as strings)
non_finite_speed   a valid RawReading whose speed is NaN, +inf or -inf
negative_speed     a valid RawReading with a speed in [-120, -0.1) mph
absurd_speed       a valid RawReading with a speed >= :data:`ABSURD_SPEED_MPH`
unknown_sensor     a valid RawReading (keyed by it) from a 6-digit id that is no METR-LA sensor
future_timestamp   a valid RawReading at least :data:`FAR_FUTURE_S` after the wall clock
ancient_timestamp  a valid RawReading before :data:`ANCIENT_BEFORE_MS` (1990-01-01)
oversized          the reading's valid value padded with random bytes to more than
                   :data:`VALIDATOR_MAX_BYTES` (1 KiB) and less than the broker's limit
duplicate          exactly the key and value of the reading just sent, again
================== =========================================================================

Except for ``unknown_sensor``, a bad record carries the key of the reading it
was derived from, so it lands in the same partition, right after it.
"""

from __future__ import annotations

import io
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import fastavro
import numpy as np

from schemas.codec import AvroCodec, wire_header

__all__ = [
    "ABSURD_SPEED_MPH",
    "ANCIENT_BEFORE_MS",
    "BAD_KINDS",
    "FAR_FUTURE_S",
    "GENERATORS",
    "VALIDATOR_MAX_BYTES",
    "VALIDATOR_REASON",
    "WRONG_FIELD_TYPES_SCHEMA",
    "BadRecord",
    "BadRecordInjector",
    "Reading",
]

VALIDATOR_MAX_BYTES = 1024
ABSURD_SPEED_MPH = 250.0
FAR_FUTURE_S = 10 * 365 * 24 * 3600
ANCIENT_BEFORE_MS = 631_152_000_000  # 1990-01-01T00:00Z
_YEAR_MS = 365 * 24 * 3600 * 1000
_OVERSIZE_CAP_BYTES = 64 * 1024

WRONG_FIELD_TYPES_SCHEMA: dict[str, Any] = fastavro.parse_schema(
    {
        "type": "record",
        "name": "RawReading",
        "namespace": "traffic.metrla",
        "fields": [
            {"name": "sensor_id", "type": "long"},
            {"name": "event_time", "type": "string"},
            {"name": "speed_mph", "type": "string"},
        ],
    }
)


class Reading(NamedTuple):
    """One good reading as replay sends it."""

    sensor_id: str
    event_time_ms: int
    speed_mph: float


@dataclass(frozen=True)
class BadRecord:
    kind: str
    key: bytes
    value: bytes


@dataclass
class _Context:
    rng: random.Random
    codec: AvroCodec
    other_codecs: dict[str, AvroCodec]
    known_sensors: frozenset[str]
    max_oversize_bytes: int


Generator = Callable[[_Context, Reading, bytes], tuple[bytes, bytes]]


def _valid(ctx: _Context, reading: Reading, **changes: Any) -> bytes:
    record = {"sensor_id": reading.sensor_id, "event_time": reading.event_time_ms, "speed_mph": reading.speed_mph}
    record.update(changes)
    return ctx.codec.encode(record)


def truncated(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    return reading.sensor_id.encode(), encoded[: ctx.rng.randrange(1, len(encoded))]


def garbage(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    size = ctx.rng.randint(1, 64)
    return reading.sensor_id.encode(), bytes([ctx.rng.randint(1, 255)]) + ctx.rng.randbytes(size - 1)


def wrong_schema(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    name = ctx.rng.choice(sorted(ctx.other_codecs))
    t, speed = reading.event_time_ms, reading.speed_mph
    records = {
        "traffic_event": {"sensor_id": reading.sensor_id, "event_time": t, "speed_mph": speed, "validated_at": t},
        "window_aggregate": {
            "sensor_id": reading.sensor_id, "window_start": t, "window_end": t + 300_000, "mean_speed_mph": speed,
            "min_speed_mph": speed, "max_speed_mph": speed, "stddev_speed_mph": 0.0, "count": 1, "missing_count": 0,
        },
        "prediction": {
            "sensor_id": reading.sensor_id, "event_time": t, "target_time": t + 900_000, "horizon_min": 15,
            "predicted_speed_mph": speed, "lower_mph": speed - 5, "upper_mph": speed + 5, "coverage": 0.9,
            "congestion": "UNKNOWN", "model_version": "injected", "processing_time": t,
        },
        "alert": {
            "alert_id": f"{reading.sensor_id}-{t}", "sensor_id": reading.sensor_id, "event_time": t,
            "target_time": t + 900_000, "horizon_min": 15, "rule": "injected", "severity": "INFO",
            "message": "not a reading", "predicted_speed_mph": speed, "model_version": "injected",
            "processing_time": t,
        },
    }
    return reading.sensor_id.encode(), ctx.other_codecs[name].encode(records[name])


def wrong_field_types(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    sensor_number = int(reading.sensor_id) if reading.sensor_id.isdigit() else abs(hash(reading.sensor_id))
    record = {
        "sensor_id": sensor_number,
        "event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reading.event_time_ms / 1000)),
        "speed_mph": f"{reading.speed_mph:.1f} mph",
    }
    buffer = io.BytesIO()
    buffer.write(wire_header(ctx.codec.schema_id))
    fastavro.schemaless_writer(buffer, WRONG_FIELD_TYPES_SCHEMA, record)
    return reading.sensor_id.encode(), buffer.getvalue()


def non_finite_speed(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    speed = ctx.rng.choice([math.nan, math.inf, -math.inf])
    return reading.sensor_id.encode(), _valid(ctx, reading, speed_mph=speed)


def negative_speed(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    return reading.sensor_id.encode(), _valid(ctx, reading, speed_mph=-ctx.rng.uniform(0.1, 120.0))


def absurd_speed(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    speed = 10 ** ctx.rng.uniform(math.log10(ABSURD_SPEED_MPH), 6.0)
    return reading.sensor_id.encode(), _valid(ctx, reading, speed_mph=speed)


def unknown_sensor(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    while True:
        sensor_id = str(ctx.rng.randint(100_000, 999_999))
        if sensor_id not in ctx.known_sensors:
            break
    return sensor_id.encode(), _valid(ctx, reading, sensor_id=sensor_id)


def future_timestamp(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    now_ms = int(time.time() * 1000)
    event_time = now_ms + FAR_FUTURE_S * 1000 + int(ctx.rng.uniform(0, 70) * _YEAR_MS)
    return reading.sensor_id.encode(), _valid(ctx, reading, event_time=event_time)


def ancient_timestamp(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    return reading.sensor_id.encode(), _valid(ctx, reading, event_time=ctx.rng.randrange(0, ANCIENT_BEFORE_MS))


def oversized(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    low, high = math.log(VALIDATOR_MAX_BYTES + 1), math.log(ctx.max_oversize_bytes)
    size = max(VALIDATOR_MAX_BYTES + 1, int(math.exp(ctx.rng.uniform(low, high))))
    return reading.sensor_id.encode(), encoded + ctx.rng.randbytes(size - len(encoded))


def duplicate(ctx: _Context, reading: Reading, encoded: bytes) -> tuple[bytes, bytes]:
    return reading.sensor_id.encode(), encoded


GENERATORS: dict[str, Generator] = {
    fn.__name__: fn
    for fn in (
        truncated,
        garbage,
        wrong_schema,
        wrong_field_types,
        non_finite_speed,
        negative_speed,
        absurd_speed,
        unknown_sensor,
        future_timestamp,
        ancient_timestamp,
        oversized,
        duplicate,
    )
}
BAD_KINDS: tuple[str, ...] = tuple(GENERATORS)

# The dead-letter reason ValidateEvents (transforms/validate.py, default limits) gives each kind;
# exact duplicates are valid readings there (de-duplication is a later step's job).
VALIDATOR_REASON: dict[str, str | None] = {
    "truncated": "undecodable",
    "garbage": "undecodable",
    "wrong_schema": "wrong_schema",
    "wrong_field_types": "undecodable",
    "non_finite_speed": "not_finite",
    "negative_speed": "negative_speed",
    "absurd_speed": "absurd_speed",
    "unknown_sensor": "unknown_sensor",
    "future_timestamp": "future_timestamp",
    "ancient_timestamp": "ancient_timestamp",
    "oversized": "oversized",
    "duplicate": None,
}


@dataclass
class BadRecordInjector:
    """Decides where bad records go and makes them, deterministically for a seed.

    ``fraction`` is the expected number of bad records per good reading: after
    each reading, a bad record of a uniformly drawn kind follows with that
    probability. ``counts`` holds how many of each kind were made.
    """

    fraction: float
    codec: AvroCodec
    known_sensors: Iterable[str]
    seed: int = 0
    kinds: tuple[str, ...] = BAD_KINDS
    max_message_bytes: int = 1_048_588
    counts: Counter = field(default_factory=Counter, init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"the bad-record fraction must be within [0, 1], not {self.fraction}")
        unknown = [k for k in self.kinds if k not in GENERATORS]
        if unknown or not self.kinds:
            raise ValueError(f"unknown bad-record kinds {unknown}; known: {', '.join(BAD_KINDS)}")
        self._plan_rng = np.random.default_rng(self.seed)
        others = ("traffic_event", "window_aggregate", "prediction", "alert")
        self._ctx = _Context(
            rng=random.Random(self.seed),
            codec=self.codec,
            other_codecs={name: AvroCodec(name, self.codec.ids) for name in others},
            known_sensors=frozenset(self.known_sensors),
            max_oversize_bytes=min(_OVERSIZE_CAP_BYTES, self.max_message_bytes - 1024),
        )

    def plan(self, n_readings: int) -> np.ndarray:
        """Indices (ascending) of the next ``n_readings`` readings that a bad record follows."""
        if self.fraction <= 0.0:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(self._plan_rng.random(n_readings) < self.fraction)

    def make(self, reading: Reading, encoded: bytes) -> BadRecord:
        kind = self._ctx.rng.choice(self.kinds)
        key, value = GENERATORS[kind](self._ctx, reading, encoded)
        self.counts[kind] += 1
        return BadRecord(kind, key, value)
