"""``traffic platform status``'s streaming-job line: is the job stalled (behind, with no new output)?

A status call is one moment, so the samples of earlier calls are kept in
``<work_dir>/run/stream-watch.json`` (trimmed to the current run) and the newest
is judged with them by :func:`kafka_client.stream_progress.judge`, the rule
``/health`` applies too. End offsets only grow, so two calls minutes apart that
find the job behind with the same output ends prove it produced nothing in
between; the first call after a change can only say "behind".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from config.settings import PlatformSettings
from config.stream_watch import StreamWatchSettings
from kafka_client.stream_progress import StreamSample, StreamVerdict, judge, trim
from kafka_client.topic_ends import sample_stream
from schemas.topics import TopicSettings

__all__ = ["SAMPLES_FILE", "observe_stream"]

SAMPLES_FILE = "stream-watch.json"


def _load(path: Path, topics: TopicSettings) -> list[StreamSample]:
    """The kept samples of the same topics (none when the file is missing, unreadable or of other topics)."""
    try:
        data = json.loads(path.read_text())
        if data.get("topics") != topics.all_topics():
            return []
        return [StreamSample.from_dict(item) for item in data["samples"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _save(path: Path, topics: TopicSettings, samples: list[StreamSample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(json.dumps({"topics": topics.all_topics(), "samples": [s.to_dict() for s in samples]}))
    scratch.replace(path)  # atomic: two status calls at once never leave half a file


def observe_stream(settings: PlatformSettings, topics: TopicSettings | None = None,
                   watch: StreamWatchSettings | None = None) -> StreamVerdict:
    """Sample the streaming job's topics now, judge the sample with the kept ones, keep it.

    Raises :class:`~kafka_client.KafkaUnavailableError` (one line) when the broker does not answer.
    """
    topics = topics or TopicSettings()
    watch = watch or StreamWatchSettings()
    path = Path(settings.run_dir) / SAMPLES_FILE
    sample = sample_stream(settings.bootstrap_servers, topics, settings.kafka_client_timeout_s)
    samples = trim([*_load(path, topics), sample], watch.behind_after_s, watch.samples_kept)
    _save(path, topics, samples)
    return judge(samples, watch.behind_after_s, watch.stall_after_s)
