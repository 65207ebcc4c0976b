"""``/health``'s ``streaming_job`` check: is the streaming job stalled (behind, with no new output)?

The decision is :func:`kafka_client.stream_progress.judge` over the samples
this API process has taken (:func:`kafka_client.topic_ends.sample_stream`), the
same rule ``traffic platform status`` applies (docs/faults.md, "A stalled job is
reported"). A sample is read at most every ``sample_every_s``; calls in between
get the last verdict, so monitoring (or a fuzzer) polling ``/health`` often costs
the broker little. A broker that does not answer gives ``state: unknown`` here
(``ok``: the ``kafka`` check reports the outage).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException

from config.stream_watch import StreamWatchSettings
from kafka_client import KafkaUnavailableError
from kafka_client.stream_progress import StreamSample, judge, trim
from kafka_client.topic_ends import sample_stream
from schemas.topics import TopicSettings

__all__ = ["StreamWatch"]


class StreamWatch:
    """Samples the streaming job's topics when asked (throttled) and judges them; thread-safe."""

    def __init__(self, bootstrap_servers: str, topics: TopicSettings, settings: StreamWatchSettings,
                 timeout_s: float, clock: Callable[[], float] = time.time) -> None:
        self.bootstrap_servers, self.topics, self.settings = bootstrap_servers, topics, settings
        self.timeout_s, self.clock = timeout_s, clock
        self.samples: list[StreamSample] = []
        self._last: dict[str, Any] | None = None
        self._last_at = float("-inf")
        self._lock = threading.Lock()

    def check(self) -> dict[str, Any]:
        """The ``streaming_job`` check of ``/health`` (the schema is ``api.models.StreamJobCheck``)."""
        with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last_at < self.settings.sample_every_s:
                return self._last
            self._last_at = now
            try:
                sample = sample_stream(self.bootstrap_servers, self.topics, self.timeout_s, self.clock)
            except (KafkaUnavailableError, KafkaException) as exc:
                self._last = {"ok": True, "state": "unknown", "error": str(exc)}
                return self._last
            s = self.settings
            self.samples = trim([*self.samples, sample], s.behind_after_s, s.samples_kept)
            verdict = judge(self.samples, s.behind_after_s, s.stall_after_s)
            self._last = {**verdict.as_dict(), "input_topic": self.topics.raw, "error": None}
            return self._last
