"""Incidents of a real backfill on the real Kafka: a replay of the same hours gives the same incident ids."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest
from small_models import register_ridge_bundle
from topic_contents import read_all

from ml.dataset import load_metrla
from pipelines.batch_cli import run
from schemas.codec import AvroCodec

SENSORS = 30
START = "2012-03-07T05:00"
END = "2012-03-07T10:00"  # a weekday morning after the model's two training days


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("registry"))
    register_ridge_bundle(root, SENSORS)
    return root


def _canonical(record: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in record.items()))


@pytest.mark.integration
def test_backfill_twice_to_kafka_gives_the_same_incidents(registry, tmp_path, kafka_bootstrap, fresh_topic) -> None:
    topic = fresh_topic("batch-incidents")
    runs = []
    for attempt in ("first", "replay"):
        out = tmp_path / attempt
        assert run(["backfill", "--registry", registry, "--start", START, "--end", END, "--output", str(out),
                    "--to-kafka", "--bootstrap", kafka_bootstrap, "--predictions-topic", fresh_topic("p"),
                    "--alerts-topic", fresh_topic("a"), "--incidents-topic", topic]) == 0
        runs.append(pq.read_table(out / "incidents").to_pylist())
    first, replay = runs
    assert first, "a weekday morning on 30 freeway sensors has congestion"
    assert sorted(map(_canonical, first)) == sorted(map(_canonical, replay))
    opened = Counter(r["incident_id"] for r in first if r["event"] == "OPENED")
    assert opened and set(opened.values()) == {1}  # one OPENED per id
    sensors = set(load_metrla().sensor_ids[:SENSORS])
    for r in first:
        assert set(r["sensor_ids"]) <= sensors and r["incident_id"].split("@")[0] == r["seed_sensor_id"]
        assert r["opened_at"] <= r["updated_at"]
    closed = [r for r in first if r["event"] == "CLOSED"]
    assert closed and all(r["closed_at"] == r["updated_at"] for r in closed)

    codec = AvroCodec("incident")
    messages = read_all(kafka_bootstrap, topic)
    assert len(messages) == 2 * len(first)
    received = [codec.decode(m.value()) for m in messages]
    assert all(m.key() == r["incident_id"].encode() for m, r in zip(messages, received, strict=True))
    by_id = Counter(r["incident_id"] for r in received)
    assert set(by_id) == {r["incident_id"] for r in first}  # the replay re-sent the same ids, no new ones
    assert sorted(map(_canonical, received)) == sorted(map(_canonical, first + replay))
