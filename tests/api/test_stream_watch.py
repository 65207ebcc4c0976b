"""api/stream_watch.py: /health's streaming_job check on the real local Kafka (stalled -> 503, cleared by output)
and its throttle (a unit test with a stand-in sampler)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from stream_topics import SENSORS, STEP_MS, T0_MS, events_of, make_stream_topics, predictions_at, produce, raw_steps

import api.stream_watch as stream_watch
from api.app import create_app
from api.models import StreamJobCheck
from api.settings import ApiSettings
from api.stream_watch import StreamWatch
from config.stream_watch import StreamWatchSettings
from kafka_client import KafkaUnavailableError
from kafka_client.stream_progress import StreamSample
from schemas.topics import TopicSettings

STALL_S = 1.0  # lowered from the default 120 s so the test takes seconds


@pytest.mark.integration
def test_health_reports_a_stalled_job_as_degraded_until_output_comes(kafka_bootstrap, fresh_topic, tmp_path,
                                                                     monkeypatch) -> None:
    topics = make_stream_topics(fresh_topic)
    monkeypatch.setenv("TRAFFIC_STREAM_WATCH_STALL_AFTER_S", str(STALL_S))
    monkeypatch.setenv("TRAFFIC_STREAM_WATCH_SAMPLE_EVERY_S", "0")  # every /health call samples
    settings = ApiSettings(bootstrap_servers=kafka_bootstrap, model_registry=tmp_path, use_store=False)

    def job_check(client: TestClient) -> tuple[int, dict]:
        response = client.get("/health")
        check = response.json()["checks"]["streaming_job"]
        StreamJobCheck.model_validate(check)  # the documented schema
        return response.status_code, check

    with TestClient(create_app(settings, topics, start_feed=False)) as client:
        assert job_check(client)[1]["state"] == "no_input"
        produce(kafka_bootstrap, topics.raw, raw_steps(range(12)))
        _, behind = job_check(client)
        assert behind["state"] == "behind" and behind["ok"] and behind["unprocessed_records"] == 12 * len(SENSORS)
        assert behind["input_topic"] == topics.raw and behind["stall_after_s"] == STALL_S
        time.sleep(STALL_S + 0.2)
        code, stalled = job_check(client)
        assert code == 503 and stalled["state"] == "stalled" and stalled["ok"] is False
        assert stalled["no_progress_s"] >= STALL_S and stalled["newest_input_ms"] == T0_MS + 11 * STEP_MS

        produce(kafka_bootstrap, topics.events, events_of(range(12)))
        produce(kafka_bootstrap, topics.predictions, predictions_at(10))
        _, cleared = job_check(client)
        assert cleared["state"] == "caught_up" and cleared["ok"] and cleared["behind_s"] == STEP_MS / 1000
        assert cleared["unprocessed_records"] == 0 and cleared["newest_prediction_ms"] == T0_MS + 10 * STEP_MS


def test_the_watch_samples_at_most_every_sample_every_s_and_reports_an_unreachable_broker(monkeypatch) -> None:
    now = [1000.0]
    calls: list[float] = []

    def fake_sample(bootstrap: str, topics: TopicSettings, timeout_s: float, clock) -> StreamSample:
        calls.append(clock())
        if len(calls) == 3:
            raise KafkaUnavailableError("Kafka at 127.0.0.1:1 is not reachable")
        return StreamSample(clock(), 100, (0, 0, 0), T0_MS, None)

    monkeypatch.setattr(stream_watch, "sample_stream", fake_sample)
    watch = StreamWatch("127.0.0.1:1", TopicSettings(), StreamWatchSettings(sample_every_s=5, stall_after_s=10),
                        1.0, clock=lambda: now[0])
    assert watch.check()["state"] == "behind"
    now[0] += 4.9
    assert watch.check()["no_progress_s"] == 0 and calls == [1000.0]  # reused, not sampled again
    now[0] += 0.1
    assert watch.check()["no_progress_s"] == 5.0 and len(calls) == 2
    now[0] += 5
    down = watch.check()
    assert down == {"ok": True, "state": "unknown", "error": "Kafka at 127.0.0.1:1 is not reachable"}
    StreamJobCheck.model_validate(down)
    now[0] += 5
    stalled = watch.check()  # the samples before the outage still count: same ends, 15 s behind
    assert stalled["state"] == "stalled" and stalled["no_progress_s"] == 15.0 and len(calls) == 4
