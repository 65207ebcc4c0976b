"""The streaming benchmark's Kafka topics (fresh, uniquely named, deleted at the end) and its waits."""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.stream_watch import WATCHED_FIELDS, WATCHED_TOPIC_CONFIG
from schemas.topics import TopicSettings

__all__ = ["TOPIC_FIELDS", "create_topics", "delete_topics", "wait_for"]

TOPIC_FIELDS = ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "incidents", "scores")


def create_topics(admin: AdminClient, run_id: str, partitions: int, prefix: str = "bench-stream") -> TopicSettings:
    names = {f: f"{prefix}-{f.replace('_', '-')}-{run_id}" for f in TOPIC_FIELDS}
    new = [NewTopic(n, num_partitions=partitions, replication_factor=1,
                    config={"retention.ms": "-1", **(WATCHED_TOPIC_CONFIG if f in WATCHED_FIELDS else {})})
           for f, n in names.items()]
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result(timeout=60)
    return TopicSettings(**names)


def delete_topics(admin: AdminClient, topics: TopicSettings) -> None:
    for future in admin.delete_topics([getattr(topics, f) for f in TOPIC_FIELDS], operation_timeout=30).values():
        try:
            future.result(timeout=60)
        except Exception:  # noqa: BLE001, S110 - best effort at the end
            pass


def wait_for(predicate, timeout_s: float, what: str, failure: list) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if failure:
            raise RuntimeError(f"the streaming job failed: {failure[0]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)
