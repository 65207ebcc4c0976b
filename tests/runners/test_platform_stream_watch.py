"""runners/platform/stream_watch.py and `traffic platform status` on the real local Kafka: a stall is reported
while raw records wait with no output, and cleared when output comes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stream_topics import SENSORS, STEP_MS, T0_MS, events_of, make_stream_topics, predictions_at, produce, raw_steps

from config.settings import PlatformSettings
from config.stream_watch import StreamWatchSettings
from runners.platform.cli import stream_line
from runners.platform.stream_watch import SAMPLES_FILE, observe_stream
from schemas.topics import TopicSettings

STALL_S = 1.0  # lowered from the default 120 s so the test takes seconds


@pytest.fixture
def stream_topics(fresh_topic) -> TopicSettings:
    return make_stream_topics(fresh_topic)


def status(platform_settings: PlatformSettings, topics: TopicSettings) -> subprocess.CompletedProcess[str]:
    """`traffic platform status kafka` as a user runs it, watching the test's topics with the lowered period."""
    env = dict(os.environ, TRAFFIC_WORK_DIR=str(platform_settings.work_dir), TRAFFIC_TOPICS_RAW=topics.raw,
               TRAFFIC_TOPICS_EVENTS=topics.events, TRAFFIC_TOPICS_DEAD_LETTERS=topics.dead_letters,
               TRAFFIC_TOPICS_PREDICTIONS=topics.predictions, TRAFFIC_STREAM_WATCH_STALL_AFTER_S=str(STALL_S))
    return subprocess.run([sys.executable, "-m", "cli.main", "platform", "status", "kafka"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.integration
def test_a_stall_is_reported_and_cleared_by_new_output(kafka_bootstrap, platform_settings, stream_topics,
                                                       tmp_path: Path) -> None:
    settings = platform_settings.model_copy(update={"work_dir": tmp_path, "kafka_bootstrap_servers": kafka_bootstrap})
    watch = StreamWatchSettings(stall_after_s=STALL_S)
    assert observe_stream(settings, stream_topics, watch).state == "no_input"

    produce(kafka_bootstrap, stream_topics.raw, raw_steps(range(12)))  # an hour of input, nobody processing it
    first = observe_stream(settings, stream_topics, watch)
    assert first.state == "behind" and first.ok and first.no_progress_s == 0
    assert first.unprocessed_records == 12 * len(SENSORS) and first.behind_s is None
    assert first.newest_input_ms == T0_MS + 11 * STEP_MS and first.newest_prediction_ms is None
    time.sleep(STALL_S + 0.2)
    stalled = observe_stream(settings, stream_topics, watch)
    assert stalled.state == "stalled" and not stalled.ok and stalled.no_progress_s >= STALL_S
    assert (tmp_path / "run" / SAMPLES_FILE).is_file()

    command = status(platform_settings, stream_topics)  # its first sample: behind; the next one, a period on: stalled
    time.sleep(STALL_S + 0.2)
    command = status(platform_settings, stream_topics)
    assert command.returncode == 1, command.stdout + command.stderr
    assert "stream job: STALLED: behind with no new output for" in command.stdout
    assert "240 raw records not validated, no prediction yet" in command.stdout

    # The job's output comes: every reading validated, then predictions up to the newest step
    produce(kafka_bootstrap, stream_topics.events, events_of(range(12)))
    validated = observe_stream(settings, stream_topics, watch)  # no prediction yet (a fresh network's first hour)
    assert validated.state == "caught_up" and validated.unprocessed_records == 0 and validated.behind_s is None
    assert validated.newest_event_ms == T0_MS + 11 * STEP_MS  # the event_time inside, not the batch's timestamp
    produce(kafka_bootstrap, stream_topics.predictions, predictions_at(11))
    cleared = observe_stream(settings, stream_topics, watch)
    assert cleared.state == "caught_up" and cleared.ok and cleared.behind_s == 0
    assert cleared.unprocessed_records == 0 and cleared.newest_prediction_ms == T0_MS + 11 * STEP_MS
    time.sleep(STALL_S + 0.2)
    idle = observe_stream(settings, stream_topics, watch)  # caught up, no new input: idle is not stalled
    assert idle.state == "caught_up" and idle.ok
    command = status(platform_settings, stream_topics)
    assert command.returncode == 0, command.stdout + command.stderr
    assert "stream job: caught up; 0 raw records not validated, predictions 0 s of event time behind" in command.stdout


def test_a_broker_that_does_not_answer_gives_one_line_and_no_stall(tmp_path: Path) -> None:
    settings = PlatformSettings(work_dir=tmp_path, kafka_bootstrap_servers="127.0.0.1:1", kafka_client_timeout_s=1.0)
    line, fine = stream_line(settings)
    assert fine and line.startswith("stream job: unknown (Kafka at 127.0.0.1:1 is not reachable")
    assert "\n" not in line and not (tmp_path / "run" / SAMPLES_FILE).exists()
