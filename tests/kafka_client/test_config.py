"""kafka_client's config dicts and its one reachability check (unit: no broker needed)."""

from __future__ import annotations

import pickle

import pytest
from confluent_kafka import KafkaError, KafkaException

from config.settings import get_settings
from kafka_client import (
    KafkaUnavailableError,
    check_kafka,
    client_config,
    consumer_config,
    default_bootstrap_servers,
    producer_config,
)


def test_client_config_is_quiet_by_default_and_can_keep_librdkafka_logs() -> None:
    quiet = client_config("h:1", timeout_s=2)
    assert quiet["bootstrap.servers"] == "h:1" and quiet["socket.connection.setup.timeout.ms"] == 2000
    assert quiet["log_level"] == 0 and callable(quiet["error_cb"])
    loud = client_config("h:1", quiet=False, **{"client.id": "x"})
    assert "log_level" not in loud and "error_cb" not in loud and loud["client.id"] == "x"


def test_producer_config_is_idempotent_and_maps_producer_compression_to_none() -> None:
    config = producer_config("h:1", linger_ms=0, compression="producer", **{"message.max.bytes": 10})
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["linger.ms"] == 0 and config["compression.type"] == "none" and config["message.max.bytes"] == 10
    assert producer_config("h:1")["compression.type"] == "zstd"


def test_consumer_config_assigns_without_committing_and_pickles() -> None:
    config = consumer_config("h:1", None, {"fetch.min.bytes": 5})
    assert config["group.id"] and config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False and config["fetch.min.bytes"] == 5
    assert consumer_config("h:1", "g")["group.id"] == "g"
    assert pickle.loads(pickle.dumps(config)) == config  # Beam pickles it into its readers


def test_the_default_bootstrap_servers_come_from_config() -> None:
    assert default_bootstrap_servers() == get_settings().bootstrap_servers


class _Client:
    """A test double answering ``list_topics`` as a down or an empty cluster would."""

    def __init__(self, error: Exception | None = None, brokers: dict | None = None) -> None:
        self.error, self.brokers = error, brokers

    def list_topics(self, timeout: float):  # noqa: ANN201
        if self.error is not None:
            raise self.error
        return type("Metadata", (), {"brokers": self.brokers, "topics": {}})()


@pytest.mark.parametrize("client", [
    _Client(KafkaException(KafkaError(KafkaError._TRANSPORT, "connect refused"))),
    _Client(brokers={}),
])
def test_an_unreachable_broker_is_one_line(client: _Client) -> None:
    with pytest.raises(KafkaUnavailableError) as info:
        check_kafka(client, "h:1", timeout_s=0.1)
    message = str(info.value)
    assert "\n" not in message and message.startswith("Kafka at h:1 is not reachable")
    assert message.endswith("(is `traffic platform up kafka` running?)")


def test_a_reachable_broker_returns_its_metadata() -> None:
    metadata = check_kafka(_Client(brokers={1: "b"}), "h:1")
    assert metadata.brokers == {1: "b"}
