"""AvroCodec: round trips, the Confluent wire format byte by byte, decode errors, file and registry ids."""

from __future__ import annotations

import io
import json
import math
import struct

import fastavro
import httpx
import pytest

from schemas.codec import (
    SCHEMA_IDS_FILE,
    SCHEMA_NAMES,
    AvroCodec,
    FileSchemaIds,
    RegistrySchemaIds,
    codec_for,
    load_schema,
)
from schemas.exceptions import DecodeError, SchemaError

T0 = 1_330_560_000_000  # 2012-03-01T00:00Z

SAMPLES: dict[str, dict] = {
    "raw_reading": {"sensor_id": "773869", "event_time": T0, "speed_mph": 64.375},
    "traffic_event": {"sensor_id": "773869", "event_time": T0, "speed_mph": None, "validated_at": T0 + 1234},
    "window_aggregate": {
        "sensor_id": "717490", "window_start": T0, "window_end": T0 + 300_000, "mean_speed_mph": 61.5,
        "min_speed_mph": 58.0, "max_speed_mph": 65.0, "stddev_speed_mph": 2.5, "count": 3, "missing_count": 1,
        "pane_timing": "ON_TIME",
    },
    "prediction": {
        "sensor_id": "773869", "event_time": T0, "target_time": T0 + 900_000, "horizon_min": 15,
        "predicted_speed_mph": 55.25, "lower_mph": 50.0, "upper_mph": 60.5, "coverage": 0.9, "congestion": "MODERATE",
        "model_version": "v3", "processing_time": T0 + 5,
    },
    "alert": {
        "alert_id": "773869-1330560000000-15-severe", "sensor_id": "773869", "event_time": T0,
        "target_time": T0 + 900_000, "horizon_min": 15, "rule": "severe_congestion", "severity": "CRITICAL",
        "message": "speed below 20 mph", "predicted_speed_mph": 18.0, "current_speed_mph": None,
        "model_version": "v3", "processing_time": T0 + 5,
    },
    "dead_letter": {
        "payload": b"\x00\x01\x02\xff", "key": b"773869", "error": "not a valid raw_reading record",
        "reason": "undecodable", "step": "ValidateEvents", "source_topic": "traffic-raw", "source_partition": 2,
        "source_offset": 41, "failed_at": T0 + 7,
    },
    "incident": {
        "incident_id": "773904@2012-03-30T07:05Z", "event": "UPDATED", "state": "OPEN", "severity": "HEAVY",
        "seed_sensor_id": "773904", "sensor_ids": ["773904", "761003"], "opened_at": T0, "updated_at": T0 + 300_000,
        "closed_at": None, "worst_sensor_id": "761003", "worst_speed_mph": 24.5, "observed_min_speed_mph": None,
        "worst_predicted": [{"horizon_min": 15, "target_time": T0 + 1_200_000, "speed_mph": 27.0,
                             "sensor_id": "773904"}],
        "expected_clearance_time": T0 + 3_900_000, "trend": "IMPROVING", "merged_into": None, "model_version": "v3",
    },
    "score": {
        "sensor_id": "773869", "event_time": T0, "target_time": T0 + 900_000, "horizon_min": 15,
        "model_version": "v3", "predicted_speed_mph": 55.25, "lower_mph": 50.0, "upper_mph": 60.5, "coverage": 0.9,
        "actual_speed_mph": 61.0, "error_mph": -5.75, "inside_interval": False, "status": "SCORED",
        "scored_time": T0 + 1_200_000,
    },
}


def test_samples_cover_every_schema() -> None:
    assert set(SAMPLES) == set(SCHEMA_NAMES)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_round_trip_gives_back_the_record(name: str) -> None:
    codec = AvroCodec(name)
    assert codec.decode(codec.encode(SAMPLES[name])) == SAMPLES[name]


def test_wire_format_bytes_of_a_raw_reading() -> None:
    codec = AvroCodec("raw_reading")
    data = codec.encode({"sensor_id": "773869", "event_time": T0, "speed_mph": 64.375})
    schema_id = FileSchemaIds().id_for("raw_reading")
    # magic byte, 4-byte big-endian id, then Avro: zigzag-varint string length 6 (= 0x0c) and the
    # utf-8 bytes, the zigzag varint of the long, the little-endian IEEE double.
    varint = bytearray()
    n = (T0 << 1) ^ (T0 >> 63)
    while n > 0x7F:
        varint.append((n & 0x7F) | 0x80)
        n >>= 7
    varint.append(n)
    expected = b"\x00" + struct.pack(">I", schema_id) + b"\x0c773869" + bytes(varint) + struct.pack("<d", 64.375)
    assert data == expected
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == schema_id == 1


def test_datetimes_are_encoded_and_decoded_as_epoch_millis() -> None:
    from datetime import UTC, datetime

    codec = AvroCodec("raw_reading")
    moment = datetime(2012, 3, 1, tzinfo=UTC)
    record = codec.decode(codec.encode({"sensor_id": "1", "event_time": moment, "speed_mph": 1.0}))
    assert record["event_time"] == T0 and isinstance(record["event_time"], int)


def test_non_finite_speeds_survive_the_round_trip() -> None:
    codec = AvroCodec("raw_reading")
    for speed in (math.inf, -math.inf):
        assert codec.decode(codec.encode({**SAMPLES["raw_reading"], "speed_mph": speed}))["speed_mph"] == speed
    assert math.isnan(codec.decode(codec.encode({**SAMPLES["raw_reading"], "speed_mph": math.nan}))["speed_mph"])


def test_encode_rejects_a_record_that_does_not_fit() -> None:
    codec = AvroCodec("raw_reading")
    with pytest.raises(SchemaError, match="does not fit schema raw_reading"):
        codec.encode({"sensor_id": "1", "event_time": "yesterday", "speed_mph": 1.0})
    with pytest.raises(SchemaError):
        codec.encode({"sensor_id": "1", "speed_mph": 1.0})


@pytest.mark.parametrize("cut", [0, 1, 4, 5, 6, 10, 15])
def test_truncated_values_raise_decode_error(cut: int) -> None:
    codec = AvroCodec("raw_reading")
    data = codec.encode(SAMPLES["raw_reading"])
    assert cut < len(data)
    with pytest.raises(DecodeError):
        codec.decode(data[:cut])


def test_every_strict_prefix_of_every_sample_fails_to_decode() -> None:
    for name in SCHEMA_NAMES:
        codec = AvroCodec(name)
        data = codec.encode(SAMPLES[name])
        for cut in range(len(data)):
            with pytest.raises(DecodeError):
                codec.decode(data[:cut])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\x07\x00\x00\x00\x01abc", "magic byte is 7"),
        (b"hello world, not avro", "magic byte"),
        (b"\x00\x00\x00", "shorter than the 5-byte"),
        (None, "expected bytes"),
        ("a string", "expected bytes"),
    ],
)
def test_garbage_raises_decode_error(value: object, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        AvroCodec("raw_reading").decode(value)  # type: ignore[arg-type]


def test_trailing_bytes_are_rejected() -> None:
    codec = AvroCodec("raw_reading")
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(codec.encode(SAMPLES["raw_reading"]) + b"\x00")


def test_unknown_schema_id_is_a_decode_error() -> None:
    codec = AvroCodec("raw_reading")
    body = codec.encode(SAMPLES["raw_reading"])[5:]
    with pytest.raises(DecodeError, match="unknown schema id 999"):
        codec.decode(b"\x00" + struct.pack(">I", 999) + body)


def test_another_schema_under_its_own_id_does_not_decode_as_a_reading() -> None:
    event = AvroCodec("traffic_event").encode({**SAMPLES["traffic_event"], "speed_mph": 50.0})
    with pytest.raises(DecodeError, match="not a valid raw_reading"):
        AvroCodec("raw_reading").decode(event)


def test_codec_is_picklable() -> None:
    import pickle

    codec = pickle.loads(pickle.dumps(AvroCodec("prediction")))
    assert codec.decode(codec.encode(SAMPLES["prediction"])) == SAMPLES["prediction"]


def test_unknown_schema_name() -> None:
    with pytest.raises(SchemaError, match="unknown schema"):
        AvroCodec("no_such_record")


# --- schema ids ---------------------------------------------------------------------------------


def test_file_ids_are_unique_and_name_every_schema() -> None:
    table = json.loads(SCHEMA_IDS_FILE.read_text())
    assert set(table) == set(SCHEMA_NAMES)
    ids = [schema_id for versions in table.values() for schema_id in versions.values()]
    assert len(ids) == len(set(ids))


def test_file_ids_map_back_to_their_schema() -> None:
    ids = FileSchemaIds()
    for name in SCHEMA_NAMES:
        assert ids.schema_for(ids.id_for(name))["name"] == load_schema(name)["name"]
    with pytest.raises(DecodeError):
        ids.schema_for(10_000)


def test_file_ids_from_another_map(tmp_path) -> None:
    path = tmp_path / "ids.json"
    path.write_text(json.dumps({"raw_reading": {"v1": 41}}))
    ids = FileSchemaIds(path)
    codec = AvroCodec("raw_reading", ids)
    data = codec.encode(SAMPLES["raw_reading"])
    assert int.from_bytes(data[1:5], "big") == 41
    assert codec.decode(data) == SAMPLES["raw_reading"]
    with pytest.raises(SchemaError, match="no schema id"):
        AvroCodec("prediction", ids)


class _Registry:
    """An in-memory Confluent registry behind httpx.MockTransport (isolates RegistrySchemaIds)."""

    def __init__(self) -> None:
        self.subjects: dict[str, int] = {}
        self.schemas: dict[int, str] = {}
        self.requests: list[tuple[str, str]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        parts = request.url.path.strip("/").split("/")
        if request.method == "POST" and parts[0] == "subjects":
            body = json.loads(request.content)
            assert body["schemaType"] == "AVRO"
            schema_id = self.subjects.setdefault(parts[1], 100 + len(self.subjects))
            self.schemas[schema_id] = body["schema"]
            return httpx.Response(200, json={"id": schema_id})
        if request.method == "GET" and parts[:2] == ["schemas", "ids"]:
            schema_id = int(parts[2])
            if schema_id not in self.schemas:
                return httpx.Response(404, json={"error_code": 40403, "message": "Schema not found"})
            return httpx.Response(200, json={"schema": self.schemas[schema_id]})
        return httpx.Response(405)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> _Registry:
    fake = _Registry()
    client = httpx.Client(transport=httpx.MockTransport(fake.handler))

    def request(method: str, url: str, **kwargs):
        kwargs.pop("timeout", None)
        return client.request(method, url, **kwargs)

    monkeypatch.setattr(httpx, "request", request)
    return fake


def test_registry_ids_register_under_the_record_subject(registry: _Registry) -> None:
    codec = codec_for("raw_reading", "http://registry.test:8081/")
    assert codec.schema_id == 100
    assert ("POST", "/subjects/traffic.metrla.RawReading-value/versions") in registry.requests
    data = codec.encode(SAMPLES["raw_reading"])
    assert data[:5] == b"\x00" + struct.pack(">I", 100)
    fresh = AvroCodec("raw_reading", RegistrySchemaIds("http://registry.test:8081"))
    assert fresh.decode(data) == SAMPLES["raw_reading"]
    assert ("GET", "/schemas/ids/100") in registry.requests


def test_registry_ids_are_cached(registry: _Registry) -> None:
    ids = RegistrySchemaIds("http://registry.test:8081")
    assert ids.id_for("alert") == ids.id_for("alert")
    assert len([r for r in registry.requests if r[0] == "POST"]) == 1


def test_registry_and_file_ids_differ_but_both_decode_their_own_bytes(registry: _Registry) -> None:
    file_codec = codec_for("prediction")
    registry_codec = codec_for("prediction", "http://registry.test:8081")
    assert file_codec.schema_id != registry_codec.schema_id
    for codec in (file_codec, registry_codec):
        assert codec.decode(codec.encode(SAMPLES["prediction"])) == SAMPLES["prediction"]


def test_registry_unknown_id_is_an_error(registry: _Registry) -> None:
    codec = AvroCodec("raw_reading", RegistrySchemaIds("http://registry.test:8081"))
    with pytest.raises(SchemaError, match="404"):
        codec.decode(b"\x00" + struct.pack(">I", 7) + b"\x02x\x00" + struct.pack("<d", 1.0))


def test_registry_down_is_a_one_line_error() -> None:
    ids = RegistrySchemaIds("http://127.0.0.1:9", timeout_s=1.0)
    with pytest.raises(SchemaError, match="not reachable") as info:
        ids.id_for("raw_reading")
    assert "\n" not in str(info.value)


def test_wire_format_is_readable_by_plain_fastavro() -> None:
    data = AvroCodec("window_aggregate").encode(SAMPLES["window_aggregate"])
    record = fastavro.schemaless_reader(io.BytesIO(data[5:]), load_schema("window_aggregate"))
    assert record["sensor_id"] == "717490" and record["count"] == 3
