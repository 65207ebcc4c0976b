"""The columnar Avro encoder writes the bytes fastavro writes, row for row, or hands the batch back."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.avro_columns import columnar_encoder, encode_keys
from schemas.batches import Columns
from schemas.codec import SCHEMA_NAMES, AvroCodec

N = 300
SYMBOLS = {"congestion": ["FREE_FLOW", "MODERATE", "HEAVY", "SEVERE", "UNKNOWN"],
           "pane_timing": ["EARLY", "ON_TIME", "LATE", "UNKNOWN"], "status": ["SCORED", "MISSING"]}


def _column(rng: np.random.Generator, name: str, avro_type, nullable: set[str]) -> np.ndarray:
    union = isinstance(avro_type, list)
    base = avro_type[1] if union else avro_type
    kind = base.get("type") if isinstance(base, dict) else base
    if kind == "string":
        words = np.array(["717490", "", "a", "sensor-ü", "x" * 40, "20261204T214427Z-942a5e"])
        return rng.choice(words, N)
    if kind == "long":
        return rng.choice(np.array([0, 1, -1, 63, 64, -65, 1_338_000_000_000, -(2**62), 2**63 - 1, -(2**63)]), N)
    if kind == "int":
        return rng.integers(-(2**31), 2**31, N)
    if kind == "double":
        values = rng.normal(40, 30, N)
        values[rng.random(N) < 0.1] = np.nan
        if union:
            nullable.add(name)
        return values
    if kind == "boolean":
        return np.array([None, True, False], object)[rng.integers(0, 3, N)]
    if kind == "enum":
        return np.array(SYMBOLS[name], object)[rng.integers(0, len(SYMBOLS[name]), N)]
    raise AssertionError(f"a type the test does not make: {avro_type}")


def _batch(name: str, seed: int) -> tuple[AvroCodec, Columns]:
    codec = AvroCodec(name)
    rng = np.random.default_rng(seed)
    nullable: set[str] = set()
    data = {f["name"]: _column(rng, f["name"], f["type"], nullable) for f in codec.schema["fields"]}
    return codec, Columns(name, data, frozenset(nullable))


@pytest.mark.parametrize("name", ["traffic_event", "window_aggregate", "prediction", "score"])
@pytest.mark.parametrize("seed", [1, 2])
def test_every_row_is_the_bytes_fastavro_writes(name: str, seed: int) -> None:
    codec, batch = _batch(name, seed)
    encoder = columnar_encoder(codec)
    assert encoder is not None
    assert encoder.encode(batch) == [codec.encode(record) for record in batch.records()]


@pytest.mark.parametrize("name", ["window_aggregate", "score"])
def test_a_batch_whose_nullable_fields_are_all_null_is_encoded_too(name: str) -> None:
    """A step's MISSING scores (no actual, no error, no inside flag) were handed back to the record path."""
    codec, batch = _batch(name, 5)
    data = dict(batch.data)
    unions = [f["name"] for f in codec.schema["fields"] if isinstance(f["type"], list)]
    assert unions, name
    for field in unions:
        data[field] = np.full(N, None, object) if data[field].dtype.kind == "O" else np.full(N, np.nan)
    nulls = Columns(batch.kind, data, frozenset(unions))
    encoded = columnar_encoder(codec).encode(nulls)
    assert encoded is not None
    assert encoded == [codec.encode(record) for record in nulls.records()]


def test_a_nan_outside_the_nullable_set_is_written_as_a_double_as_the_record_path_does() -> None:
    codec, batch = _batch("traffic_event", 3)
    plain = Columns(batch.kind, batch.data, frozenset())
    assert np.isnan(plain["speed_mph"]).any()
    assert columnar_encoder(codec).encode(plain) == [codec.encode(r) for r in plain.records()]


@pytest.mark.parametrize("spoil", ["int out of range", "unknown symbol", "missing field", "number as string"])
def test_a_batch_it_cannot_vouch_for_is_handed_back(spoil: str) -> None:
    codec, batch = _batch("window_aggregate" if spoil != "unknown symbol" else "prediction", 4)
    data = dict(batch.data)
    if spoil == "int out of range":
        data["count"] = data["count"].astype(np.int64) + 2**40
    elif spoil == "unknown symbol":
        data["congestion"] = np.array(["GRIDLOCK"] * N, object)
    elif spoil == "missing field":
        del data["window_end"]
    else:
        data["sensor_id"] = np.arange(N)
    assert columnar_encoder(codec).encode(Columns(batch.kind, data, batch.nullable)) is None


def test_schemas_with_other_types_get_no_columnar_encoder() -> None:
    handled = {name for name in SCHEMA_NAMES if columnar_encoder(AvroCodec(name)) is not None}
    assert {"traffic_event", "window_aggregate", "prediction", "score", "raw_reading"} <= handled
    assert columnar_encoder(AvroCodec("incident")) is None  # arrays and maps


def test_keys_are_utf8_text() -> None:
    assert encode_keys(np.array(["717490", "ü"])) == [b"717490", "ü".encode()]
    assert encode_keys(np.array([7, None, b"k"], object)) == [b"7", None, b"k"]
    assert columnar_encoder(AvroCodec("prediction")).encode(Columns("prediction", {})) == []


@pytest.mark.parametrize("name", ["traffic_event", "window_aggregate", "prediction", "score"])
def test_records_encode_as_one_batch_to_the_codecs_bytes(name: str) -> None:
    """Dicts as the reference loop makes them (None for a null field) go through the columns: same bytes."""
    codec, batch = _batch(name, 6)
    records = batch.records()
    if any(isinstance(f["type"], list) for f in codec.schema["fields"]):  # prediction has no null field
        assert any(v is None for r in records for v in r.values())
    assert columnar_encoder(codec).encode_records(records) == [codec.encode(r) for r in records]


def test_records_it_cannot_turn_into_columns_are_handed_back() -> None:
    codec, batch = _batch("window_aggregate", 7)
    records = batch.records()
    records[3] = {**records[3], "count": "many"}
    assert columnar_encoder(codec).encode_records(records) is None
