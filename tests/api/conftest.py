"""Fixtures of the API tests: real Kafka topics, a model trained by the project's code, a served API."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import Producer, ServedApi, Timeline, serve

from schemas.topics import TopicSettings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def api_topics(kafka_bootstrap: str) -> Iterator[TopicSettings]:
    """Fresh predictions/alerts/aggregates/incidents topics for this session, deleted afterwards."""
    from confluent_kafka.admin import AdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    # raw: a name no test writes to, so /health's streaming_job check sees no input (not the default traffic-raw)
    topics = TopicSettings(raw=f"test-api-{tag}-raw", predictions=f"test-api-{tag}-predictions",
                           alerts=f"test-api-{tag}-alerts",
                           aggregates=f"test-api-{tag}-aggregates", incidents=f"test-api-{tag}-incidents",
                           partitions=2)
    names = [topics.predictions, topics.alerts, topics.aggregates, topics.incidents]
    with AdminClient({"bootstrap.servers": kafka_bootstrap}) as admin:
        for future in admin.create_topics([NewTopic(n, num_partitions=2, replication_factor=1)
                                           for n in names]).values():
            future.result(30)
    yield topics
    with AdminClient({"bootstrap.servers": kafka_bootstrap}) as admin:
        for future in admin.delete_topics(names).values():
            with contextlib.suppress(Exception):  # best-effort cleanup
                future.result(30)


@pytest.fixture(scope="session")
def producer(kafka_bootstrap: str, api_topics: TopicSettings) -> Iterator[Producer]:
    producer = Producer(kafka_bootstrap, api_topics)
    yield producer
    producer.close()  # before the session's platform stops: an open producer reconnects and logs until exit


@pytest.fixture(scope="session")
def model_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A registry holding a model trained by the project's own feature/registry code."""
    from real_predictions import train_quick_model

    root = tmp_path_factory.mktemp("registry")
    return root, train_quick_model(root)


@pytest.fixture(scope="session")
def real_records(model_registry):
    """Three hours of Friday-afternoon predictions (and the actual speeds) from that model."""
    from real_predictions import forecast_hours

    root, _ = model_registry
    first = int(__import__("numpy").datetime64("2012-06-01T16:00", "ms").astype("int64"))
    return forecast_hours(root, first, 36)


@pytest.fixture(scope="session")
def served_api(kafka_bootstrap, api_topics, model_registry) -> Iterator[ServedApi]:
    """The real API (uvicorn, HTTP on loopback) consuming this session's topics."""
    from api.settings import ApiSettings

    root, _ = model_registry
    key = uuid.uuid4().hex
    settings = ApiSettings(port=_free_port(), bootstrap_servers=kafka_bootstrap, model_registry=root, admin_key=key,
                           metadata_refresh_s=1.0, rate_limit_per_s=0, ping_s=1.0, client_queue_size=50_000,
                           ring_buffer_size=100_000)
    app, thread, server = serve(settings, api_topics)
    deadline = time.monotonic() + 60
    while len(app.state.runtime.feed.assigned) < 8:  # 4 topics x 2 partitions
        assert time.monotonic() < deadline, "the API's consumer did not get its partitions"
        time.sleep(0.1)
    yield ServedApi(f"http://127.0.0.1:{settings.port}", app, key)
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="session")
def real_incidents(real_records) -> list[dict]:
    """The incidents of those records, by the pipeline's lifecycle rules."""
    from real_incidents import incidents_of

    return incidents_of(real_records)


@pytest.fixture(scope="session")
def timeline(real_records, producer, real_incidents) -> Timeline:
    return Timeline(real_records, producer, real_incidents)
