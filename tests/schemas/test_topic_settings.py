"""TopicSettings: names and broker configs from the environment, one schema per topic."""

from __future__ import annotations

import pydantic
import pytest

from schemas.codec import SCHEMA_NAMES
from schemas.topics import TopicSettings


def test_every_topic_has_a_known_schema_and_every_schema_a_topic() -> None:
    settings = TopicSettings()
    assert sorted(settings.schema_of().values()) == sorted(SCHEMA_NAMES)
    assert settings.all_topics()[0] == "traffic-raw" and len(set(settings.all_topics())) == len(SCHEMA_NAMES)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFIC_TOPICS_RAW", "my-raw")
    monkeypatch.setenv("TRAFFIC_TOPICS_PARTITIONS", "8")
    monkeypatch.setenv("TRAFFIC_TOPICS_COMPRESSION", "lz4")
    settings = TopicSettings()
    assert (settings.raw, settings.partitions, settings.compression) == ("my-raw", 8, "lz4")
    assert settings.schema_of()["my-raw"] == "raw_reading"


@pytest.mark.parametrize(("field", "value"), [("partitions", 0), ("compression", "brotli"), ("replication_factor", 0)])
def test_invalid_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(pydantic.ValidationError):
        TopicSettings(**{field: value})
