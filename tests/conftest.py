"""Session fixtures shared by every test package: the real local platform.

The fixtures start a service through :class:`runners.platform.Platform` only if
it is not already running (so a developer's ``traffic platform up`` is reused)
and, at the end of the session, stop only what they started themselves.
Ports and the work directory come from the usual ``TRAFFIC_*`` variables
(``TRAFFIC_KAFKA_PORT``, ``TRAFFIC_WORK_DIR``, ...), so a test run can be
pointed at a separate platform.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kafka_clients import client_threads, install

from config.settings import PlatformSettings
from runners.platform import Platform, PlatformError

# Before any test module imports confluent_kafka's classes (config.settings and runners.platform do not):
# from now on every Kafka client remembers where it was made.
_CLIENTS = install()
_CLOSE_WAIT_S = 10.0  # how long a client that is closing (in another thread) may take before it counts as open


@pytest.fixture(scope="session")
def platform_settings() -> PlatformSettings:
    """The platform the tests use: the default settings unless ``TRAFFIC_*`` variables say otherwise."""
    return PlatformSettings()


class _SessionPlatform:
    """Starts services on demand and remembers which ones this test session started."""

    def __init__(self, settings: PlatformSettings) -> None:
        self.platform = Platform(settings)
        self.started: list[str] = []

    def ensure(self, *names: str) -> None:
        try:
            self.started.extend(self.platform.up(list(names)))
        except PlatformError as exc:
            pytest.fail(f"the local platform could not start {', '.join(names)}: {exc}", pytrace=False)

    def stop_started(self) -> None:
        if self.started:
            self.platform.down(self.started)
            self.started.clear()


@pytest.fixture(scope="session")
def _session_platform(platform_settings: PlatformSettings) -> Iterator[_SessionPlatform]:
    session = _SessionPlatform(platform_settings)
    yield session
    session.stop_started()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Notes the Kafka clients each test (set-up, call and teardown) left open, for the end-of-session check."""
    before = client_threads()
    _CLIENTS.test_started(item.nodeid)
    yield
    _CLIENTS.test_ended(before, item.nodeid)


@pytest.fixture(scope="session", autouse=True)
def _kafka_clients_closed(_session_platform: _SessionPlatform) -> Iterator[None]:
    """At the end of the session, before the platform stops: fail if a Kafka client is still open.

    An open client keeps reconnecting to a stopped broker and floods the log with "Connection refused".
    The failure names the test during which each one was opened and the code that made it.
    """
    yield
    gc.collect()  # clients only garbage holds are destroyed now
    deadline = time.monotonic() + _CLOSE_WAIT_S
    while (left := client_threads()) and time.monotonic() < deadline:
        time.sleep(0.5)
        gc.collect()
    if left:
        pytest.fail(f"{len(left)} Kafka client(s) are still open at the end of the tests; close every producer, "
                    f"consumer and admin client a test opens:\n{_CLIENTS.report(left)}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap(_session_platform: _SessionPlatform, platform_settings: PlatformSettings) -> str:
    """``"127.0.0.1:<port>"`` of a running Kafka broker."""
    _session_platform.ensure("kafka")
    return platform_settings.bootstrap_servers


@pytest.fixture(scope="session")
def flink_services(_session_platform: _SessionPlatform, platform_settings: PlatformSettings) -> dict[str, str]:
    """A running Flink cluster and Beam job server: ``{"rest_url", "job_endpoint", "flink_master"}``."""
    _session_platform.ensure("flink", "jobserver")
    host = platform_settings.host
    return {
        "rest_url": platform_settings.flink_rest_url,
        "job_endpoint": f"{host}:{platform_settings.job_server_port}",
        "flink_master": f"{host}:{platform_settings.flink_rest_port}",
    }


@pytest.fixture(scope="session")
def hdfs_service(_session_platform: _SessionPlatform, platform_settings: PlatformSettings) -> dict[str, object]:
    """A running HDFS: ``{"host", "http_port", "namenode_port", "user", "webhdfs_url"}``.

    ``http_port`` is WebHDFS, what Beam's ``hdfs://`` filesystem needs (``--hdfs_port``).
    """
    _session_platform.ensure("hdfs")
    host = platform_settings.host
    return {
        "host": host,
        "http_port": platform_settings.hdfs_http_port,
        "namenode_port": platform_settings.hdfs_namenode_port,
        "user": platform_settings.hdfs_user,
        "webhdfs_url": f"http://{host}:{platform_settings.hdfs_http_port}/webhdfs/v1",
    }


@pytest.fixture
def fresh_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """A factory: ``fresh_topic("events", partitions=2, config={...})`` creates a uniquely named topic.

    Every topic it made is deleted after the test.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    from kafka_client.lifecycle import close_clients  # not at the top: kafka_clients.install() comes first

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(prefix: str = "test", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        # Record timestamps are event times (years old in replays): no age-based retention, as in production.
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1,
                         config={"retention.ms": "-1", **(config or {})})
        for future in admin.create_topics([topic], operation_timeout=30).values():
            future.result(timeout=60)
        created.append(name)
        return name

    with admin:  # closed afterwards: a client left open reconnects (and logs) until the broker is gone
        yield make
        # The test's jobs are over: a LOOPBACK job that was cancelled left its DoFns' clients of these topics
        # open in this process (a runner never tears a cancelled job's DoFns down); close them.
        close_clients(created)
        if created:
            for future in admin.delete_topics(created, operation_timeout=30).values():
                try:
                    future.result(timeout=60)
                except Exception:  # noqa: BLE001, S110 - a test may already have deleted its topic
                    pass


@pytest.fixture(scope="session")
def postgres_server(_session_platform: _SessionPlatform, platform_settings: PlatformSettings) -> PlatformSettings:
    """A running PostgreSQL (the store's server) of these settings."""
    _session_platform.ensure("postgres")
    return platform_settings


@pytest.fixture
def store_dsn(postgres_server: PlatformSettings) -> Iterator[str]:
    """A fresh, migrated database on the real server; dropped after the test."""
    import psycopg
    from psycopg import sql

    from store.db import migrate

    name = f"traffic_test_{uuid.uuid4().hex[:10]}"
    admin_dsn = postgres_server.postgres_dsn.replace(f"dbname={postgres_server.postgres_db}", "dbname=postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = postgres_server.postgres_dsn.replace(f"dbname={postgres_server.postgres_db}", f"dbname={name}")
    with psycopg.connect(dsn) as conn:
        migrate(conn)
    yield dsn
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
