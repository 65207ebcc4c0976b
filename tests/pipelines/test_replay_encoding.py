"""RawReadingEncoder: the replay's fast path is byte-identical to AvroCodec.encode."""

from __future__ import annotations

import json
import math

import numpy as np

from ml.dataset import load_metrla
from pipelines.replay_encoding import RawReadingEncoder
from schemas.codec import AvroCodec, FileSchemaIds

T0 = 1_330_560_000_000


def test_a_whole_day_is_byte_identical_to_the_codec() -> None:
    data = load_metrla().between(T0, T0 + 24 * 3600 * 1000)
    codec = AvroCodec("raw_reading")
    encoder = RawReadingEncoder.for_codec(codec, data.sensor_ids)
    assert encoder is not None
    for i in range(data.n_steps):
        event_ms = int(data.times_ms[i])
        expected = [
            codec.encode({"sensor_id": sid, "event_time": event_ms, "speed_mph": float(speed)})
            for sid, speed in zip(data.sensor_ids, data.speed[i], strict=True)
        ]
        assert encoder.step(event_ms, data.speed[i]) == expected


def test_special_values_and_times() -> None:
    codec = AvroCodec("raw_reading")
    sensors = ("1", "773869", "a-much-longer-sensor-identifier-" * 5, "ü")
    encoder = RawReadingEncoder.for_codec(codec, sensors)
    assert encoder is not None
    speeds = np.array([math.nan, math.inf, -0.0, 1e300])
    for event_ms in (0, -5, 63, 64, 2**40, -(2**40)):
        values = encoder.step(event_ms, speeds)
        for value, sid, speed in zip(values, sensors, speeds, strict=True):
            decoded = codec.decode(value)
            assert decoded["sensor_id"] == sid and decoded["event_time"] == event_ms
            assert (math.isnan(speed) and math.isnan(decoded["speed_mph"])) or decoded["speed_mph"] == speed
            if not math.isnan(speed):
                assert value == codec.encode({"sensor_id": sid, "event_time": event_ms, "speed_mph": float(speed)})


def test_uses_the_codecs_schema_id(tmp_path) -> None:
    path = tmp_path / "ids.json"
    path.write_text(json.dumps({"raw_reading": {"v1": 77}}))
    encoder = RawReadingEncoder.for_codec(AvroCodec("raw_reading", FileSchemaIds(path)), ("773869",))
    assert encoder is not None and encoder.step(T0, np.array([50.0]))[0][:5] == b"\x00\x00\x00\x00\x4d"


def test_another_layout_falls_back_to_the_codec() -> None:
    assert RawReadingEncoder.for_codec(AvroCodec("traffic_event"), ("773869",)) is None
