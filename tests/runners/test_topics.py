"""``traffic topics``: configs from TopicSettings, idempotent create, list, delete, one-line errors."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from cli.main import main
from kafka_client import (
    KafkaUnavailableError,
    admin_client,
    create_topics,
    delete_topics,
    describe_topics,
    topic_configs,
)
from schemas.topics import TopicSettings, get_topic_settings

DOWN = "127.0.0.1:1"  # nothing listens on port 1


def _settings(**overrides) -> TopicSettings:
    tag = uuid.uuid4().hex[:10]
    names = {
        field: f"t{tag}-{field}"
        for field in ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "incidents", "scores")
    }
    return TopicSettings(**{**names, "partitions": 3, "retention_ms": 3_600_000, **overrides})


def test_topic_configs_follow_the_settings() -> None:
    settings = _settings(compression="lz4", dead_letter_retention_ms=86_400_000, max_message_bytes=2_000_000)
    configs = topic_configs(settings)
    assert set(configs) == set(settings.all_topics())
    assert configs[settings.raw] == {
        "cleanup.policy": "delete",
        "retention.ms": "3600000",
        "retention.bytes": str(settings.retention_bytes),
        "message.timestamp.type": "CreateTime",
        "compression.type": "lz4",
        "max.message.bytes": "2000000",
    }
    assert configs[settings.dead_letters]["retention.ms"] == "86400000"


def _broker_view(bootstrap: str, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """Partitions and configs straight from the broker (describe_configs), not through kafka_client."""
    with AdminClient({"bootstrap.servers": bootstrap}) as admin:
        metadata = admin.list_topics(timeout=10)
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names])
        return {
            resource.name: (
                len(metadata.topics[resource.name].partitions),
                {k: e.value for k, e in future.result(timeout=30).items()},
            )
            for resource, future in futures.items()
        }


@pytest.mark.integration
def test_create_is_idempotent_and_applies_the_settings(kafka_bootstrap: str) -> None:
    settings = _settings(compression="zstd")
    with admin_client(kafka_bootstrap) as admin:
        try:
            first = create_topics(admin, settings)
            assert {s.name: s.status for s in first} == {name: "created" for name in settings.all_topics()}
            view = _broker_view(kafka_bootstrap, settings.all_topics())
            for name, (partitions, configs) in view.items():
                assert partitions == 3
                assert configs["compression.type"] == "zstd"
                assert configs["max.message.bytes"] == str(settings.max_message_bytes)
                expected = settings.dead_letter_retention_ms if name == settings.dead_letters else 3_600_000
                assert configs["retention.ms"] == str(expected)

            again = create_topics(admin, settings)
            assert {s.status for s in again} == {"exists"}
            assert _broker_view(kafka_bootstrap, settings.all_topics()) == view

            changed = settings.model_copy(update={"partitions": 4, "retention_ms": 7_200_000, "compression": "lz4"})
            updated = create_topics(admin, changed)
            assert {s.status for s in updated} == {"updated"}
            for name, (partitions, configs) in _broker_view(kafka_bootstrap, settings.all_topics()).items():
                assert partitions == 4 and configs["compression.type"] == "lz4"
                unchanged = view[name][1]["retention.ms"]
                assert configs["retention.ms"] == ("7200000" if name != settings.dead_letters else unchanged)
        finally:
            outcome = delete_topics(admin, settings.all_topics())
        assert set(outcome.values()) == {"deleted"}
        assert set(delete_topics(admin, [settings.raw]).values()) == {"absent"}


@pytest.mark.integration
def test_describe_reports_partitions_and_configs(kafka_bootstrap: str, fresh_topic) -> None:
    name = fresh_topic("describe", partitions=2)
    with admin_client(kafka_bootstrap) as admin:
        for _ in range(100):  # a new topic's metadata reaches the broker a moment after the create returns
            if name in admin.list_topics(timeout=10).topics:
                break
            time.sleep(0.1)
        (state,) = describe_topics(admin, [name, "no-such-topic-" + uuid.uuid4().hex])
        assert state.name == name and state.partitions == 2 and "retention.ms" in state.configs


@pytest.mark.integration
def test_cli_create_list_delete(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    settings = _settings()
    for field in ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "incidents", "scores"):
        monkeypatch.setenv(f"TRAFFIC_TOPICS_{field.upper()}", getattr(settings, field))
    get_topic_settings.cache_clear()
    try:
        assert main(["topics", "create", "--bootstrap-servers", kafka_bootstrap, "--partitions", "2"]) == 0
        out = capsys.readouterr().out
        assert settings.raw in out and "created" in out
        assert main(["topics", "create", "--bootstrap-servers", kafka_bootstrap, "--partitions", "2"]) == 0
        count = len(settings.all_topics())
        assert out.count("created") == count and capsys.readouterr().out.count("exists") == count

        assert main(["topics", "list", "--bootstrap-servers", kafka_bootstrap]) == 0
        listing = capsys.readouterr().out.splitlines()
        assert listing[0].split()[:2] == ["topic", "partitions"]
        rows = {line.split()[0]: line.split() for line in listing[1:]}
        assert set(rows) == set(settings.all_topics()) and rows[settings.raw][1] == "2"

        assert main(["topics", "delete", "--bootstrap-servers", kafka_bootstrap]) == 2
        assert "without --yes" in capsys.readouterr().err
        assert main(["topics", "delete", "--yes", "--bootstrap-servers", kafka_bootstrap]) == 0
        assert capsys.readouterr().out.count("deleted") == count
    finally:
        get_topic_settings.cache_clear()
        with admin_client(kafka_bootstrap) as admin:
            delete_topics(admin, settings.all_topics())


def test_kafka_down_is_one_line(capfd) -> None:
    for action in (["create"], ["list"], ["delete", "--yes"]):
        assert main(["topics", *action, "--bootstrap-servers", DOWN, "--timeout-s", "1"]) == 2
        captured = capfd.readouterr()
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("traffic: error: Kafka at 127.0.0.1:1 is not reachable")


def test_admin_client_raises_kafka_unavailable() -> None:
    with pytest.raises(KafkaUnavailableError, match="traffic platform up kafka"):
        admin_client(DOWN, timeout_s=1)


def test_invalid_override_is_one_line(capfd) -> None:
    assert main(["topics", "create", "--bootstrap-servers", DOWN, "--partitions", "0"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "partitions" in err[0]
