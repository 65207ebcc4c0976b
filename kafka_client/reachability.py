"""The one reachability check: a metadata round trip, or a one-line :class:`KafkaUnavailableError`."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException

from kafka_client.config import DEFAULT_TIMEOUT_S
from schemas.exceptions import TrafficError

__all__ = ["KafkaUnavailableError", "check_kafka", "unreachable"]


class KafkaUnavailableError(TrafficError):
    """No broker answered at the bootstrap address."""


def unreachable(bootstrap_servers: str, exc: object = None) -> KafkaUnavailableError:
    """The one-line error for a broker that does not answer (``exc``: librdkafka's reason, if any)."""
    detail = f" ({exc})" if exc is not None and str(exc) else ""
    return KafkaUnavailableError(
        f"Kafka at {bootstrap_servers} is not reachable{detail} (is `traffic platform up kafka` running?)"
    )


def check_kafka(client: Any, bootstrap_servers: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """Cluster metadata of every topic from ``client`` (admin client, producer or consumer), or a one-line error.

    All topics, never one by name: asking for one topic's metadata can auto-create it.
    """
    try:
        metadata = client.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        detail = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else exc
        raise unreachable(bootstrap_servers, detail) from None
    if not metadata.brokers:
        raise unreachable(bootstrap_servers)
    return metadata
