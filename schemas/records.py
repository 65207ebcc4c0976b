"""Plain record types passed between transforms (not Avro: in-pipeline only)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["KafkaMessage"]


class KafkaMessage(NamedTuple):
    """One consumed Kafka record, as the Kafka source emits it.

    ``value`` is kept as raw bytes so a record that fails validation can go to
    the dead-letter topic exactly as it arrived, with its coordinates.
    """

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
