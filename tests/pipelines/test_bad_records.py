"""The bad-record catalogue: each kind is what the catalogue says, deterministic for a seed."""

from __future__ import annotations

import io
import math
import time

import fastavro
import pytest

from ml.dataset import load_metrla
from pipelines.bad_records import (
    ABSURD_SPEED_MPH,
    ANCIENT_BEFORE_MS,
    BAD_KINDS,
    FAR_FUTURE_S,
    GENERATORS,
    VALIDATOR_MAX_BYTES,
    VALIDATOR_REASON,
    WRONG_FIELD_TYPES_SCHEMA,
    BadRecordInjector,
    Reading,
)
from pipelines.replay import known_sensor_ids
from schemas.codec import AvroCodec, FileSchemaIds
from schemas.exceptions import DecodeError

T0 = 1_330_560_000_000
RAW = AvroCodec("raw_reading")


@pytest.fixture(scope="module")
def known() -> frozenset[str]:
    return known_sensor_ids(load_metrla())


def _records(kind: str, known: frozenset[str], n: int = 200, seed: int = 3):
    injector = BadRecordInjector(1.0, RAW, known, seed=seed, kinds=(kind,), max_message_bytes=1_048_588)
    out = []
    for i in range(n):
        reading = Reading("773869", T0 + i * 300_000, [0.0, 64.5, 12.25][i % 3])
        encoded = RAW.encode({"sensor_id": reading.sensor_id, "event_time": reading.event_time_ms,
                              "speed_mph": reading.speed_mph})
        out.append((reading, encoded, injector.make(reading, encoded)))
    assert injector.counts[kind] == n
    return out


def test_catalogue_has_one_generator_per_kind() -> None:
    assert set(BAD_KINDS) == set(GENERATORS) == set(VALIDATOR_REASON)
    assert len(BAD_KINDS) == 12


def test_truncated_is_a_strict_nonempty_prefix_that_does_not_decode(known) -> None:
    for _reading, encoded, bad in _records("truncated", known):
        assert bad.key == b"773869" and 0 < len(bad.value) < len(encoded) and encoded.startswith(bad.value)
        with pytest.raises(DecodeError):
            RAW.decode(bad.value)


def test_garbage_has_no_magic_byte(known) -> None:
    for _, _, bad in _records("garbage", known):
        assert 1 <= len(bad.value) <= 64 and bad.value[0] != 0
        with pytest.raises(DecodeError, match="magic byte|shorter than"):
            RAW.decode(bad.value)


def test_wrong_schema_is_valid_avro_of_another_schema(known) -> None:
    ids = FileSchemaIds()
    seen = set()
    for _, _, bad in _records("wrong_schema", known):
        schema_id = int.from_bytes(bad.value[1:5], "big")
        name = {ids.id_for(n): n for n in ("traffic_event", "window_aggregate", "prediction", "alert")}[schema_id]
        seen.add(name)
        assert AvroCodec(name).decode(bad.value)["sensor_id"] == "773869"
        with pytest.raises(DecodeError):
            RAW.decode(bad.value)
    assert seen == {"traffic_event", "window_aggregate", "prediction", "alert"}


def test_wrong_field_types_claim_the_raw_schema_id(known) -> None:
    for _reading, _, bad in _records("wrong_field_types", known):
        assert bad.value[:5] == b"\x00" + RAW.schema_id.to_bytes(4, "big")
        record = fastavro.schemaless_reader(io.BytesIO(bad.value[5:]), WRONG_FIELD_TYPES_SCHEMA)
        assert record["sensor_id"] == 773869 and isinstance(record["speed_mph"], str)
        with pytest.raises(DecodeError):
            RAW.decode(bad.value)


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("non_finite_speed", lambda r, now: not math.isfinite(r["speed_mph"])),
        ("negative_speed", lambda r, now: -120 <= r["speed_mph"] < 0),
        ("absurd_speed", lambda r, now: r["speed_mph"] >= ABSURD_SPEED_MPH),
        ("future_timestamp", lambda r, now: r["event_time"] >= now + FAR_FUTURE_S * 1000),
        ("ancient_timestamp", lambda r, now: 0 <= r["event_time"] < ANCIENT_BEFORE_MS),
    ],
)
def test_hostile_values_are_valid_avro(kind: str, check, known) -> None:
    now = int(time.time() * 1000)
    for _reading, _, bad in _records(kind, known):
        record = RAW.decode(bad.value)
        assert bad.key == b"773869" and record["sensor_id"] == "773869"
        assert check(record, now), record


def test_non_finite_covers_nan_and_both_infinities(known) -> None:
    speeds = {repr(RAW.decode(bad.value)["speed_mph"]) for _, _, bad in _records("non_finite_speed", known)}
    assert speeds == {"nan", "inf", "-inf"}


def test_unknown_sensor_is_keyed_by_its_own_id(known) -> None:
    for _, _, bad in _records("unknown_sensor", known):
        record = RAW.decode(bad.value)
        assert record["sensor_id"] not in known and bad.key == record["sensor_id"].encode()


def test_oversized_exceeds_the_validator_limit_and_keeps_the_reading_in_front(known) -> None:
    for _, encoded, bad in _records("oversized", known):
        assert VALIDATOR_MAX_BYTES < len(bad.value) <= 64 * 1024 and bad.value.startswith(encoded)


def test_duplicate_is_exact(known) -> None:
    for _, encoded, bad in _records("duplicate", known):
        assert bad.key == b"773869" and bad.value == encoded


def test_same_seed_same_records_other_seed_other_records(known) -> None:
    def run(seed: int) -> list[tuple[str, bytes, bytes]]:
        injector = BadRecordInjector(0.3, RAW, known, seed=seed)
        out = []
        for step in range(20):
            for j in injector.plan(50).tolist():
                reading = Reading("773869", T0 + step * 300_000 + j, 50.0)
                encoded = RAW.encode({"sensor_id": "773869", "event_time": reading.event_time_ms, "speed_mph": 50.0})
                bad = injector.make(reading, encoded)
                if bad.kind != "future_timestamp":  # relative to the wall clock
                    out.append((bad.kind, bad.key, bad.value))
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_plan_follows_the_fraction(known) -> None:
    injector = BadRecordInjector(0.1, RAW, known, seed=1)
    chosen = sum(len(injector.plan(1000)) for _ in range(100))
    assert 9_000 < chosen < 11_000  # binomial(100k, 0.1): sd ~ 95
    assert len(BadRecordInjector(0.0, RAW, known).plan(1000)) == 0


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="fraction"):
        BadRecordInjector(1.5, RAW, ["1"])
    with pytest.raises(ValueError, match="unknown bad-record kinds"):
        BadRecordInjector(0.1, RAW, ["1"], kinds=("nope",))


def test_the_validator_gives_each_kind_its_documented_reason(known) -> None:
    """The catalogue against the real ValidateEvents checks (default limits)."""
    from apache_beam.pvalue import TaggedOutput

    from transforms.validate import ValidateEventsFn

    fn = ValidateEventsFn(known, 3600, 946_684_800_000, 1024, 120.0, None)
    fn.setup()
    for kind in BAD_KINDS:
        for _, _, bad in _records(kind, known, n=40):
            (out,) = list(fn.process(bad.value))
            if VALIDATOR_REASON[kind] is None:
                assert not isinstance(out, TaggedOutput), kind
            else:
                assert isinstance(out, TaggedOutput) and out.value["reason"] == VALIDATOR_REASON[kind], (kind, out)
