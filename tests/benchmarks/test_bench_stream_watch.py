"""benchmarks/stream_watch.py (named apart from tests/api/test_stream_watch.py): the watcher reads a prediction's
key from its leading fields, the same as decoding it whole."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.codec import AvroCodec, wire_header

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.stream_watch import PredictionKeys  # noqa: E402


def _prediction(sensor: str, at: datetime, horizon: int) -> dict:
    return {"sensor_id": sensor, "event_time": at, "target_time": at + timedelta(minutes=horizon),
            "horizon_min": horizon, "predicted_speed_mph": 61.5, "lower_mph": 50.0, "upper_mph": 70.0,
            "coverage": 0.9, "congestion": "FREE_FLOW", "model_version": "v7", "processing_time": at}


@pytest.mark.parametrize(("sensor", "at", "horizon"), [
    ("773869", datetime(2012, 6, 1, 0, 5, tzinfo=UTC), 15),
    ("s" * 300, datetime(2012, 3, 1, tzinfo=UTC), 60),  # a length past one varint byte
    ("é-sensor", datetime(1969, 12, 31, 23, 55, tzinfo=UTC), 30),  # a negative timestamp, a multi-byte name
])
def test_the_leading_fields_give_what_a_whole_decode_gives(sensor, at, horizon) -> None:
    codec = AvroCodec("prediction")
    value = codec.encode(_prediction(sensor, at, horizon))
    record = codec.decode(value)
    expected = (record["sensor_id"], record["event_time"], record["horizon_min"])  # the codec decodes millis
    assert PredictionKeys(codec)(value) == expected == (sensor, int(at.timestamp() * 1000), horizon)


def test_a_record_of_another_schema_id_is_decoded_whole(monkeypatch) -> None:
    codec = AvroCodec("prediction")
    value = codec.encode(_prediction("717447", datetime(2012, 6, 2, tzinfo=UTC), 30))
    keys = PredictionKeys(codec)
    keys.header = wire_header(codec.schema_id + 1000)  # as if the record came from an older writer
    decoded = []
    monkeypatch.setattr(codec, "decode", lambda data: decoded.append(data) or AvroCodec("prediction").decode(data))
    assert keys(value) == ("717447", int(datetime(2012, 6, 2, tzinfo=UTC).timestamp() * 1000), 30)
    assert decoded == [value]
