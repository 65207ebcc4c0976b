"""The Kafka topics, their record schemas and their configuration.

Names, partitions, retention and compression come from the environment with the
``TRAFFIC_TOPICS_`` prefix (e.g. ``TRAFFIC_TOPICS_PARTITIONS=8``,
``TRAFFIC_TOPICS_RAW=my-raw``). docker-compose.yml uses the same names.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["TopicSettings", "get_topic_settings"]


class TopicSettings(BaseSettings):
    """Topic names and their broker-side configuration."""

    model_config = SettingsConfigDict(env_prefix="TRAFFIC_TOPICS_", extra="ignore")

    raw: str = "traffic-raw"
    events: str = "traffic-events"
    dead_letters: str = "traffic-dlq"
    aggregates: str = "traffic-aggregates"
    predictions: str = "traffic-predictions"
    alerts: str = "traffic-alerts"
    incidents: str = "traffic-incidents"
    scores: str = "traffic-scores"

    partitions: int = Field(default=4, ge=1, description="partitions per topic; keys are sensor ids")
    replication_factor: int = Field(default=1, ge=1)
    # Record timestamps are event times (replayed history is years old), so topics keep records
    # by size; an age limit (retention_ms) would drop replayed data at once.
    retention_ms: int = Field(default=-1, ge=-1, description="age limit in ms by record timestamp; -1 = none")
    dead_letter_retention_ms: int = Field(default=-1, ge=-1, description="age limit of the dead-letter topic")
    retention_bytes: int = Field(default=1 << 30, ge=-1, description="size limit per partition; -1 = none")
    compression: str = Field(default="zstd", pattern="^(none|gzip|snappy|lz4|zstd|producer)$")
    max_message_bytes: int = Field(default=1_048_588, description="the broker rejects larger records")
    registry_url: str | None = Field(default=None, description="Confluent schema registry; file ids when unset")

    def schema_of(self) -> dict[str, str]:
        """Topic name -> the Avro schema name of its values."""
        return {
            self.raw: "raw_reading",
            self.events: "traffic_event",
            self.dead_letters: "dead_letter",
            self.aggregates: "window_aggregate",
            self.predictions: "prediction",
            self.alerts: "alert",
            self.incidents: "incident",
            self.scores: "score",
        }

    def all_topics(self) -> list[str]:
        return list(self.schema_of())


@lru_cache(maxsize=1)
def get_topic_settings() -> TopicSettings:
    return TopicSettings()
