"""Admin client and the project's topics: create (idempotent), describe, delete.

Names, partitions, retention, compression and the largest accepted message come
from :class:`schemas.topics.TopicSettings`. ``create_topics`` is idempotent: a topic
that exists is brought to the configured settings (configs altered, partitions only
ever added) instead of failing. Every call has a short timeout, so a broker that is
down gives one line, not a hang.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from kafka_client.config import DEFAULT_TIMEOUT_S, client_config
from kafka_client.reachability import check_kafka
from schemas.exceptions import TrafficError
from schemas.topics import TopicSettings

__all__ = [
    "TopicError",
    "TopicState",
    "admin_client",
    "create_topics",
    "delete_topics",
    "describe_topics",
    "topic_configs",
]


def admin_client(bootstrap_servers: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> AdminClient:
    """An admin client whose broker has answered once (else :class:`KafkaUnavailableError`)."""
    admin = AdminClient(client_config(bootstrap_servers, timeout_s=timeout_s))
    check_kafka(admin, bootstrap_servers, timeout_s)
    return admin


class TopicError(TrafficError):
    """A topic could not be created, altered, described or deleted."""


@dataclass(frozen=True)
class TopicState:
    """One topic as the broker reports it, plus what the last call did to it."""

    name: str
    partitions: int
    configs: dict[str, str]
    status: str = ""


def topic_configs(settings: TopicSettings) -> dict[str, dict[str, str]]:
    """Topic name -> broker-side configs (retention, compression, max message bytes)."""
    configs = {}
    for name in settings.all_topics():
        retention = settings.dead_letter_retention_ms if name == settings.dead_letters else settings.retention_ms
        configs[name] = {
            "cleanup.policy": "delete",
            "retention.ms": str(retention),
            "retention.bytes": str(settings.retention_bytes),
            "message.timestamp.type": "CreateTime",
            "compression.type": settings.compression,
            "max.message.bytes": str(settings.max_message_bytes),
        }
    return configs


def _wait(futures: dict[str, Any], timeout_s: float) -> dict[str, BaseException | None]:
    outcome: dict[str, BaseException | None] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            outcome[name] = None
        except KafkaException as exc:
            outcome[name] = exc
        except Exception as exc:  # noqa: BLE001 - futures time out with concurrent.futures errors
            outcome[name] = exc
    return outcome


def _error_code(exc: BaseException | None) -> int | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].code()
    return None


def _fail(action: str, name: str, exc: BaseException) -> TopicError:
    reason = exc.args[0].str() if isinstance(exc, KafkaException) and exc.args else str(exc) or type(exc).__name__
    return TopicError(f"cannot {action} topic {name}: {reason}")


def describe_topics(
    admin: AdminClient, names: Sequence[str] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[TopicState]:
    """Partitions and (non-default and project-relevant) configs of ``names`` (all topics when None)."""
    metadata = admin.list_topics(timeout=timeout_s)
    available = {n: t for n, t in metadata.topics.items() if not n.startswith("__")}
    wanted = sorted(available) if names is None else [n for n in names if n in available]
    if not wanted:
        return []
    resources = [ConfigResource(ResourceType.TOPIC, n) for n in wanted]
    described = admin.describe_configs(resources, request_timeout=timeout_s)
    states = []
    for resource, future in described.items():
        try:
            entries = future.result(timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001
            raise _fail("describe", resource.name, exc) from None
        configs = {key: entry.value for key, entry in entries.items() if entry.value is not None}
        states.append(TopicState(resource.name, len(available[resource.name].partitions), configs))
    return sorted(states, key=lambda s: s.name)


def create_topics(
    admin: AdminClient, settings: TopicSettings, timeout_s: float = 15.0
) -> list[TopicState]:
    """Create every project topic, or bring an existing one to the configured settings."""
    wanted = topic_configs(settings)
    new = [
        NewTopic(name, num_partitions=settings.partitions, replication_factor=settings.replication_factor, config=cfg)
        for name, cfg in wanted.items()
    ]
    created = _wait(admin.create_topics(new, request_timeout=timeout_s), timeout_s)
    status: dict[str, str] = {}
    for name, exc in created.items():
        if exc is None:
            status[name] = "created"
        elif _error_code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
            status[name] = "exists"
        else:
            raise _fail("create", name, exc)

    existing = [name for name, s in status.items() if s == "exists"]
    if existing:
        current = {state.name: state for state in describe_topics(admin, existing, timeout_s)}
        to_alter = []
        grow = []
        for name in existing:
            state = current[name]
            drift = {k: v for k, v in wanted[name].items() if state.configs.get(k) != v}
            if drift:
                entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in drift.items()]
                to_alter.append(ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries))
            if state.partitions < settings.partitions:
                grow.append(NewPartitions(name, settings.partitions))
        if to_alter:
            for resource, exc in _wait(admin.incremental_alter_configs(to_alter, request_timeout=timeout_s),
                                       timeout_s).items():
                if exc is not None:
                    raise _fail("alter", getattr(resource, "name", str(resource)), exc)
                status[resource.name] = "updated"
        if grow:
            for name, exc in _wait(admin.create_partitions(grow, request_timeout=timeout_s), timeout_s).items():
                if exc is not None:
                    raise _fail("add partitions to", name, exc)
                status[name] = "updated"
    _await_partitions(admin, list(wanted), settings.partitions, timeout_s)
    states = describe_topics(admin, list(wanted), timeout_s)
    return [TopicState(s.name, s.partitions, s.configs, status.get(s.name, "")) for s in states]


def _await_partitions(admin: AdminClient, names: list[str], partitions: int, timeout_s: float) -> None:
    """Topic metadata reaches the broker shortly after a create: wait until every topic shows up complete."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = admin.list_topics(timeout=timeout_s).topics
        if all(n in topics and topics[n].error is None and len(topics[n].partitions) >= partitions for n in names):
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics {', '.join(names)} did not show {partitions} partitions within {timeout_s} s")
        time.sleep(0.1)


def delete_topics(admin: AdminClient, names: Sequence[str], timeout_s: float = 15.0) -> dict[str, str]:
    """Delete ``names``; a topic that does not exist is reported as ``absent``, not an error."""
    if not names:
        return {}
    outcome: dict[str, str] = {}
    for name, exc in _wait(admin.delete_topics(list(names), request_timeout=timeout_s), timeout_s).items():
        if exc is None:
            outcome[name] = "deleted"
        elif _error_code(exc) == KafkaError.UNKNOWN_TOPIC_OR_PART:
            outcome[name] = "absent"
        else:
            raise _fail("delete", name, exc)
    return outcome
