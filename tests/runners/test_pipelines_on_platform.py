"""Beam pipelines on the real local platform, through the runner presets.

Kafka -> transform -> Kafka on Prism and on Flink (job server 2.62, SDK 2.77,
LOOPBACK), unbounded reads that keep consuming records produced after the job
started (with event-time windows firing while partitions sit idle), and Parquet
written to ``hdfs://`` and read back through WebHDFS.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import apache_beam as beam
import httpx
import pyarrow as pa
import pytest
from apache_beam.runners.runner import PipelineState
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from confluent_kafka import Consumer, Producer

from config.settings import PlatformSettings
from runners.presets import pipeline_options
from transforms.kafka_io import ReadFromKafka, WriteToKafka

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

N = 300
WINDOW_S = 10


def _produce(bootstrap: str, topic: str, values: list[int], base_ms: int, key: Callable[[int], bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    try:
        for v in values:
            producer.produce(topic, key=key(v), value=str(v).encode(), timestamp=base_ms + v)
        assert producer.flush(30) == 0
    finally:
        producer.close()


class _Reader:
    """One consumer over the output topics, accumulating everything seen."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:8]}",
                                   "auto.offset.reset": "earliest"})
        self._consumer.subscribe(topics)
        self.seen: dict[str, list[bytes]] = {t: [] for t in topics}

    def until(self, done: Callable[[dict[str, list[bytes]]], bool], timeout_s: float = 240.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while not done(self.seen) and time.monotonic() < deadline:
            for m in self._consumer.consume(200, timeout=0.5):
                if m.error() is None:
                    self.seen[m.topic()].append(m.value())
        return self.seen

    def drain(self) -> dict:
        """Whatever else arrives in the next few polls (to catch duplicates)."""
        for _ in range(4):
            for m in self._consumer.consume(200, timeout=0.5):
                if m.error() is None:
                    self.seen[m.topic()].append(m.value())
        return self.seen

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def reader_factory(kafka_bootstrap: str) -> Iterator[Callable[[list[str]], _Reader]]:
    readers: list[_Reader] = []

    def make(topics: list[str]) -> _Reader:
        readers.append(_Reader(kafka_bootstrap, topics))
        return readers[-1]

    yield make
    for r in readers:
        r.close()


def _tag(m) -> tuple[bytes | None, bytes]:
    return m.key, b"seen:" + m.value


def _kafka_to_kafka(options, bootstrap: str, source: str, sink: str) -> None:
    with beam.Pipeline(options=options) as p:
        _ = (p
             | "Read" >> ReadFromKafka(bootstrap, source, bounded=True)
             | "Tag" >> beam.Map(_tag)
             | "Write" >> WriteToKafka(bootstrap, sink, key_fn=lambda kv: kv[0], value_fn=lambda kv: kv[1]))


def _assert_exactly(seen: list[bytes], values: list[int]) -> None:
    counts = Counter(seen)
    assert sorted(counts) == sorted(f"seen:{v}".encode() for v in values)  # all arrived
    assert max(counts.values()) == 1  # none twice


def _flink_jobs(settings: PlatformSettings, name: str) -> list[dict]:
    jobs = httpx.get(f"{settings.flink_rest_url}/jobs/overview", timeout=10).json()["jobs"]
    return [j for j in jobs if j["name"].startswith(name)]


def _flink_job_summary(settings: PlatformSettings, name: str) -> str:
    """State, per-vertex record counts and the latest exception of a job, for failure messages."""
    lines = []
    for job in _flink_jobs(settings, name):
        detail = httpx.get(f"{settings.flink_rest_url}/jobs/{job['jid']}", timeout=10).json()
        lines.append(f"{job['jid']} {detail['state']}")
        lines += [f"  {v['name'][:60]}: {v['status']} in={v['metrics'].get('read-records')} "
                  f"out={v['metrics'].get('write-records')}" for v in detail["vertices"]]
        history = httpx.get(f"{settings.flink_rest_url}/jobs/{job['jid']}/exceptions", timeout=10).json()
        entries = history.get("exceptionHistory", {}).get("entries", [])
        if entries:
            lines.append("  latest exception: " + entries[0]["stacktrace"].splitlines()[0][:300])
    return "\n".join(lines) or "no such job"


def _wait_for(condition: Callable[[], bool], timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.5)
    return condition()


# --- bounded Kafka -> Kafka --------------------------------------------------------------------------------


def test_kafka_to_kafka_on_prism(kafka_bootstrap: str, fresh_topic, reader_factory,
                                 platform_settings: PlatformSettings) -> None:
    source, sink = fresh_topic("prism-src", partitions=4), fresh_topic("prism-dst", partitions=4)
    _produce(kafka_bootstrap, source, list(range(N)), int(time.time() * 1000), key=lambda v: str(v % 7).encode())
    _kafka_to_kafka(pipeline_options("prism", False, [], platform_settings), kafka_bootstrap, source, sink)
    reader = reader_factory([sink])
    reader.until(lambda seen: len(seen[sink]) >= N)
    _assert_exactly(reader.drain()[sink], list(range(N)))


@pytest.mark.flink
def test_kafka_to_kafka_on_flink(kafka_bootstrap: str, flink_services: dict[str, str], fresh_topic, reader_factory,
                                 platform_settings: PlatformSettings) -> None:
    source, sink = fresh_topic("flink-src", partitions=4), fresh_topic("flink-dst", partitions=4)
    _produce(kafka_bootstrap, source, list(range(N)), int(time.time() * 1000), key=lambda v: str(v % 7).encode())
    job_name = f"kafka-roundtrip-{uuid.uuid4().hex[:8]}"
    options = pipeline_options("flink", False, [f"--job_name={job_name}"], platform_settings)
    _kafka_to_kafka(options, kafka_bootstrap, source, sink)
    reader = reader_factory([sink])
    reader.until(lambda seen: len(seen[sink]) >= N)
    _assert_exactly(reader.drain()[sink], list(range(N)))
    assert [j["state"] for j in _flink_jobs(platform_settings, job_name)] == ["FINISHED"]


# --- unbounded ----------------------------------------------------------------------------------------------


def _streaming_pipeline(options, bootstrap: str, source: str, sink: str, windows: str) -> beam.Pipeline:
    p = beam.Pipeline(options=options)
    messages = p | "Read" >> ReadFromKafka(bootstrap, source)
    _ = (messages
         | "Tag" >> beam.Map(_tag)
         | "Write" >> WriteToKafka(bootstrap, sink, key_fn=lambda kv: kv[0], value_fn=lambda kv: kv[1]))
    _ = (messages
         | "Window" >> beam.WindowInto(window.FixedWindows(WINDOW_S))
         | "One" >> beam.Map(lambda _: 1)
         | "Count" >> beam.CombineGlobally(sum).without_defaults()
         | "Label" >> beam.Map(lambda n, w=beam.DoFn.WindowParam: f"{w.start.micros // 1000}:{n}".encode())
         | "WriteCounts" >> WriteToKafka(bootstrap, windows))
    return p


def _run_unbounded(options, bootstrap: str, fresh_topic, reader_factory) -> tuple[object, Callable[[], None]]:
    """Starts the job, then produces two batches, each after the previous one came out; checks both.

    Every record goes to one partition (one key), so the other three partitions stay idle: the
    first window still fires, because idle partitions do not hold the watermark back.
    """
    source, sink, windows = (fresh_topic(n, partitions=p) for n, p in (("live-src", 4), ("live-dst", 4),
                                                                        ("live-win", 1)))
    result = _streaming_pipeline(options, bootstrap, source, sink, windows).run()
    window_ms = WINDOW_S * 1000
    first_window = (int(time.time() * 1000) // window_ms - 6) * window_ms
    reader = reader_factory([sink, windows])

    def stop() -> None:
        result.cancel()

    try:
        assert result.state in (PipelineState.RUNNING, PipelineState.STARTING, PipelineState.PENDING)
        batch1 = list(range(0, 5))  # timestamps first_window + 0..4 ms: all in the first window
        _produce(bootstrap, source, batch1, first_window, key=lambda _: b"sensor-1")
        reader.until(lambda seen: len(seen[sink]) >= len(batch1))
        batch2 = list(range(window_ms, window_ms + 7))  # produced after batch 1 came out: the next window
        _produce(bootstrap, source, batch2, first_window, key=lambda _: b"sensor-1")
        first_count = f"{first_window}:{len(batch1)}".encode()
        seen = reader.until(lambda seen: len(seen[sink]) >= len(batch1) + len(batch2) and first_count in seen[windows])
        _assert_exactly(reader.drain()[sink], batch1 + batch2)
        assert seen[windows] == [first_count]  # the second window holds the newest record: still open
    except BaseException:
        stop()
        raise
    return result, stop


def test_unbounded_read_on_prism_keeps_reading_and_fires_windows(kafka_bootstrap: str, fresh_topic, reader_factory,
                                                                 platform_settings: PlatformSettings) -> None:
    options = pipeline_options("prism", True, [], platform_settings)
    result, stop = _run_unbounded(options, kafka_bootstrap, fresh_topic, reader_factory)
    stop()
    assert result.state == PipelineState.CANCELLED


@pytest.mark.flink
def test_unbounded_read_on_flink_checkpoints_and_keeps_reading(
    kafka_bootstrap: str, flink_services: dict[str, str], fresh_topic, reader_factory,
    platform_settings: PlatformSettings,
) -> None:
    job_name = f"kafka-live-{uuid.uuid4().hex[:8]}"
    options = pipeline_options("flink", True, [f"--job_name={job_name}"], platform_settings)
    rest = platform_settings.flink_rest_url
    try:
        try:
            _result, stop = _run_unbounded(options, kafka_bootstrap, fresh_topic, reader_factory)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nFlink: {_flink_job_summary(platform_settings, job_name)}") from None
        [job] = _flink_jobs(platform_settings, job_name)
        assert job["state"] == "RUNNING"
        config = httpx.get(f"{rest}/jobs/{job['jid']}/checkpoints/config", timeout=10).json()
        assert config["interval"] == platform_settings.flink_checkpoint_interval_ms
        completed = lambda: httpx.get(f"{rest}/jobs/{job['jid']}/checkpoints", timeout=10).json()[  # noqa: E731
            "counts"]["completed"] >= 1
        assert _wait_for(completed, timeout_s=6 * platform_settings.flink_checkpoint_interval_ms / 1000)
    finally:
        # The 2.62 job server's cancel ends the invocation but leaves the Flink job running
        # (restarting without its LOOPBACK worker): cancel it through Flink's REST API as well.
        for job in _flink_jobs(platform_settings, job_name):
            if job["state"] not in ("FINISHED", "CANCELED", "FAILED"):
                httpx.patch(f"{rest}/jobs/{job['jid']}", params={"mode": "cancel"}, timeout=10)
        assert _wait_for(lambda: all(j["state"] == "CANCELED" for j in _flink_jobs(platform_settings, job_name)))
    stop()


# --- Parquet on HDFS ----------------------------------------------------------------------------------------

SCHEMA = pa.schema([("sensor_id", pa.string()), ("event_time_ms", pa.int64()), ("speed_mph", pa.float64())])
ROWS = [{"sensor_id": f"77{i % 5}", "event_time_ms": 1_336_000_000_000 + i * 300_000, "speed_mph": 40.0 + i / 4}
        for i in range(120)]


@pytest.mark.hdfs
@pytest.mark.parametrize("runner", ["prism", pytest.param("flink", marks=pytest.mark.flink)])
def test_parquet_round_trip_through_webhdfs(runner: str, request: pytest.FixtureRequest, hdfs_service: dict,
                                            platform_settings: PlatformSettings) -> None:
    if runner == "flink":
        request.getfixturevalue("flink_services")
    from apache_beam.io.filesystems import FileSystems

    root = f"hdfs://beam-parquet-{runner}-{uuid.uuid4().hex[:8]}"
    options = lambda: pipeline_options(runner, False, [], platform_settings, paths=[root])  # noqa: E731
    try:
        with beam.Pipeline(options=options()) as p:
            _ = (p
                 | "Rows" >> beam.Create(ROWS)
                 | "WriteParquet" >> beam.io.WriteToParquet(f"{root}/readings", SCHEMA, file_name_suffix=".parquet",
                                                            num_shards=2))
        listing = httpx.get(f"{hdfs_service['webhdfs_url']}/{root.removeprefix('hdfs://')}",
                            params={"op": "LISTSTATUS", "user.name": hdfs_service["user"]}, timeout=10).json()
        names = sorted(s["pathSuffix"] for s in listing["FileStatuses"]["FileStatus"])
        assert len(names) == 2 and all(n.startswith("readings-") and n.endswith(".parquet") for n in names)
        with beam.Pipeline(options=options()) as p:
            back = p | "ReadParquet" >> beam.io.ReadFromParquet(f"{root}/readings-*.parquet")
            assert_that(back, equal_to(ROWS))
    finally:
        FileSystems.set_options(options())
        if FileSystems.exists(root):
            FileSystems.delete([root])
