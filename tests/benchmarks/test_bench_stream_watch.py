"""benchmarks/stream_watch.py (named apart from tests/api/test_stream_watch.py): the watcher reads a prediction's
key from its leading fields, the same as decoding it whole, and times the first event as the earliest append."""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

from schemas.codec import AvroCodec, wire_header
from schemas.topics import TopicSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import stream_watch  # noqa: E402
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


class _Message:
    def __init__(self, topic: str, partition: int, append_s: float) -> None:
        self._topic, self._partition, self._append_ms = topic, partition, int(append_s * 1000)

    def error(self):
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_LOG_APPEND_TIME, self._append_ms


class _Consumer:
    """Two events partitions whose first records are read in the opposite order to their appends."""

    batches: list = []

    def __init__(self, _config) -> None:
        self.assigned: list = []

    def list_topics(self, topic: str, timeout: float):
        class _Topic:
            partitions = {0: None, 1: None}

        class _Metadata:
            topics = {topic: _Topic()}

        return _Metadata()

    def assign(self, parts) -> None:
        self.assigned = list(parts)

    def consume(self, n: int, timeout: float) -> list:
        if n == 1:
            return []
        return _Consumer.batches.pop(0) if _Consumer.batches else []

    def close(self) -> None:
        pass


def test_the_first_event_is_the_earliest_append_of_any_partition_not_the_first_read(monkeypatch) -> None:
    topics = TopicSettings()
    _Consumer.batches = [[_Message(topics.events, 1, 10.5)], [_Message(topics.events, 0, 10.2),
                                                              _Message(topics.events, 1, 10.6)]]
    monkeypatch.setattr(stream_watch, "Consumer", _Consumer)
    arrivals = stream_watch.Arrivals(expected_per_step=3)
    stop = threading.Event()
    thread = threading.Thread(target=stream_watch.watch, args=("unused:9092", topics, arrivals, stop))
    thread.start()
    for _ in range(200):
        if arrivals.first_event_s is not None:
            break
        time.sleep(0.01)
    stop.set()
    thread.join(5)
    assert arrivals.first_event_s == 10.2
