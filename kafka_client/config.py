"""librdkafka configuration dictionaries, built in this one place.

``bootstrap_servers`` is the one spelling of where clients connect; its default is the
platform's (``config.settings.PlatformSettings.bootstrap_servers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from config.settings import get_settings

__all__ = ["DEFAULT_TIMEOUT_S", "client_config", "consumer_config", "default_bootstrap_servers", "producer_config"]

DEFAULT_TIMEOUT_S = 5.0
# librdkafka needs a group id even for assign(); readers that only assign never commit to it.
ASSIGN_ONLY_GROUP = "traffic-beam-reader"


def default_bootstrap_servers() -> str:
    """The platform's bootstrap list (``TRAFFIC_KAFKA_BOOTSTRAP_SERVERS``, else the local broker)."""
    return get_settings().bootstrap_servers


def _silent_log(*_args: Any) -> None:
    """librdkafka's own connection chatter would break the one-line error rule."""


def client_config(
    bootstrap_servers: str, *, quiet: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S, **extra: Any
) -> dict[str, Any]:
    """Settings every client shares; ``quiet`` silences librdkafka's log and error callbacks (command lines)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
    }
    if quiet:
        config.update({"log_level": 0, "error_cb": _silent_log})
    config.update(extra)
    return config


def producer_config(
    bootstrap_servers: str,
    linger_ms: float = 20.0,
    batch_size: int = 1_000_000,
    compression: str = "zstd",
    *,
    quiet: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """An idempotent (``acks=all``), batching, compressing producer; ``compression='producer'`` means none.

    A record is retried for up to five minutes, so a broker restart is waited out rather than a record lost
    (tests/chaos: a 30 s outage mid-replay loses nothing); the local queue is deep enough for a bulk replay.
    """
    return client_config(
        bootstrap_servers,
        quiet=quiet,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "batch.size": batch_size,
            "compression.type": "none" if compression == "producer" else compression,
            "message.timeout.ms": 300_000,
            "queue.buffering.max.messages": 500_000,
            **extra,
        },
    )


def consumer_config(
    bootstrap_servers: str, group_id: str | None = None, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A consumer that is assigned partitions and commits only by hand (no auto commit or offset store).

    Plain values only (no callbacks): Beam pickles this dict into its readers.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id or ASSIGN_ONLY_GROUP,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }
    config.update(extra or {})
    return config
