"""``traffic replay`` against the real local Kafka: completeness, per-sensor order, bad records, CLI."""

from __future__ import annotations

import io
import json
import math
import threading
import time
import uuid
from collections import Counter, defaultdict

import fastavro
import numpy as np
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer

from cli.main import main
from kafka_client import producer_config
from ml.dataset import STEP_MS, load_metrla
from pipelines.bad_records import (
    ABSURD_SPEED_MPH,
    ANCIENT_BEFORE_MS,
    FAR_FUTURE_S,
    VALIDATOR_MAX_BYTES,
    WRONG_FIELD_TYPES_SCHEMA,
)
from pipelines.replay import ReplayError, known_sensor_ids, replay
from schemas.codec import AvroCodec, FileSchemaIds
from schemas.exceptions import DecodeError

T0 = 1_330_560_000_000  # 2012-03-01T00:00Z
DAY_MS = 24 * 3600 * 1000
DOWN = "127.0.0.1:1"
RAW = AvroCodec("raw_reading")


@pytest.fixture(scope="module")
def data():
    return load_metrla()


def consume_all(bootstrap: str, topic: str, expected: int, idle_s: float = 20.0) -> list:
    """Every record of ``topic`` in per-partition order, read with a plain consumer."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"test-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    records: list = []
    last = time.monotonic()
    try:
        while len(records) < expected and time.monotonic() - last < idle_s:
            batch = consumer.consume(num_messages=10_000, timeout=1.0)
            for message in batch:
                assert message.error() is None, message.error()
                records.append(message)
            if batch:
                last = time.monotonic()
        for message in consumer.consume(num_messages=10_000, timeout=2.0):  # nothing more may follow
            records.append(message)
    finally:
        consumer.close()
    return records


@pytest.mark.integration
def test_one_day_arrives_complete_and_in_per_sensor_order(kafka_bootstrap, fresh_topic, data) -> None:
    topic = fresh_topic("replay-day", partitions=4)
    report = replay(data, producer_config(kafka_bootstrap), topic, speed=math.inf,
                    start_ms=T0, end_ms=T0 + DAY_MS, progress=False)
    assert (report.readings, report.steps, report.sensors, report.bad_total) == (288 * 207, 288, 207, 0)
    assert report.first_event_ms == T0 and report.last_event_ms == T0 + DAY_MS - STEP_MS
    day = data.between(T0, T0 + DAY_MS)
    assert report.missing == int((day.speed == 0).sum())

    records = consume_all(kafka_bootstrap, topic, report.readings)
    assert len(records) == 288 * 207
    column = {sid: j for j, sid in enumerate(day.sensor_ids)}
    times_by_sensor: dict[str, list[int]] = defaultdict(list)
    for message in records:
        reading = RAW.decode(message.value())
        assert message.key() == reading["sensor_id"].encode()
        kind, timestamp = message.timestamp()
        assert (kind, timestamp) == (TIMESTAMP_CREATE_TIME, reading["event_time"])  # event time drives watermarks
        step = (reading["event_time"] - T0) // STEP_MS
        assert reading["speed_mph"] == day.speed[step, column[reading["sensor_id"]]]
        times_by_sensor[reading["sensor_id"]].append(reading["event_time"])
    expected_times = [T0 + i * STEP_MS for i in range(288)]
    assert set(times_by_sensor) == set(day.sensor_ids)
    for sensor, times in times_by_sensor.items():
        assert times == expected_times, sensor  # complete, no duplicates, in event-time order


def classify(message, last_good: dict[bytes, bytes], seen: set, known: frozenset[str], now_ms: int) -> str:
    """What a consumed record is, judged only by its bytes (independent of the generators)."""
    key, value = message.key(), message.value()
    if len(value) > VALIDATOR_MAX_BYTES:
        assert value.startswith(last_good[key])
        return "oversized"
    if value[0] != 0:
        return "garbage"
    if len(value) >= 5 and int.from_bytes(value[1:5], "big") != RAW.schema_id:
        ids = FileSchemaIds()
        name = {ids.id_for(n): n for n in ("traffic_event", "window_aggregate", "prediction", "alert")}[
            int.from_bytes(value[1:5], "big")
        ]
        AvroCodec(name).decode(value)  # valid Avro of that schema
        return "wrong_schema"
    try:
        record = RAW.decode(value)
    except DecodeError:
        if key in last_good and last_good[key].startswith(value):
            return "truncated"
        body = io.BytesIO(value[5:])
        fastavro.schemaless_reader(body, WRONG_FIELD_TYPES_SCHEMA)
        assert body.tell() == len(value) - 5
        return "wrong_field_types"
    speed, event_time = record["speed_mph"], record["event_time"]
    if not math.isfinite(speed):
        return "non_finite_speed"
    if speed < 0:
        return "negative_speed"
    if speed >= ABSURD_SPEED_MPH:
        return "absurd_speed"
    if record["sensor_id"] not in known:
        assert key == record["sensor_id"].encode()
        return "unknown_sensor"
    if event_time > now_ms + FAR_FUTURE_S * 1000 - 60_000:
        return "future_timestamp"
    if event_time < ANCIENT_BEFORE_MS:
        return "ancient_timestamp"
    if (key, value) in seen:
        return "duplicate"
    seen.add((key, value))
    last_good[key] = value
    return "good"


@pytest.mark.integration
def test_bad_record_report_matches_what_was_sent(kafka_bootstrap, fresh_topic, data) -> None:
    topic = fresh_topic("replay-bad", partitions=3)
    report = replay(data, producer_config(kafka_bootstrap), topic, speed=math.inf, start_ms=T0,
                    end_ms=T0 + 3 * 3600 * 1000, inject_bad=0.05, seed=11, progress=False)
    assert report.readings == 36 * 207
    assert set(report.bad) == {
        "truncated", "garbage", "wrong_schema", "wrong_field_types", "non_finite_speed", "negative_speed",
        "absurd_speed", "unknown_sensor", "future_timestamp", "ancient_timestamp", "oversized", "duplicate",
    }
    records = consume_all(kafka_bootstrap, topic, report.events)
    assert len(records) == report.events
    known = known_sensor_ids(data)
    last_good: dict[bytes, bytes] = {}
    seen: set = set()
    now_ms = int(time.time() * 1000)
    kinds = Counter(classify(m, last_good, seen, known, now_ms) for m in records)
    assert kinds.pop("good") == report.readings
    assert dict(kinds) == report.bad


@pytest.mark.integration
def test_loop_shifts_event_times_forward(kafka_bootstrap, fresh_topic, data) -> None:
    topic = fresh_topic("replay-loop", partitions=2)
    sensors = ["773869", "717490", "716328"]
    report = replay(data, producer_config(kafka_bootstrap), topic, speed=math.inf, start_ms=T0,
                    end_ms=T0 + 4 * STEP_MS, sensors=sensors, loops=3, progress=False)
    assert (report.loops, report.steps, report.readings) == (3, 12, 36)
    times: dict[str, list[int]] = defaultdict(list)
    for message in consume_all(kafka_bootstrap, topic, 36):
        reading = RAW.decode(message.value())
        times[reading["sensor_id"]].append(reading["event_time"])
    assert set(times) == set(sensors)
    week_ms = 7 * 24 * 3600 * 1000
    for sensor_times in times.values():
        # a 4-step span, shifted by whole weeks per pass so time of day and day of week stay true
        assert sensor_times == [T0 + (i % 4) * STEP_MS + (i // 4) * week_ms for i in range(12)]


@pytest.mark.integration
def test_speed_factor_paces_the_steps(kafka_bootstrap, fresh_topic, data) -> None:
    # the broker stamps append time here, so record timestamps tell when each step was produced
    topic = fresh_topic("replay-pace", config={"message.timestamp.type": "LogAppendTime"})
    # factor 3000: one 5-minute step every 0.1 s
    before_ms = int(time.time() * 1000)
    replay(data, producer_config(kafka_bootstrap, linger_ms=0), topic, speed=3000, start_ms=T0,
           end_ms=T0 + 5 * STEP_MS, sensors=["773869"], progress=False)
    stamps = {}
    for message in consume_all(kafka_bootstrap, topic, 5):
        stamps[RAW.decode(message.value())["event_time"]] = message.timestamp()[1]
    produced = [stamps[T0 + i * STEP_MS] for i in range(5)]
    assert produced == sorted(produced)
    # step k leaves no earlier than k x 100 ms after the replay started (2 ms for clock rounding)
    assert all(produced[k] - before_ms >= k * 100 - 2 for k in range(5)), (before_ms, produced)


@pytest.mark.integration
def test_stop_event_ends_an_endless_loop(kafka_bootstrap, fresh_topic, data) -> None:
    topic = fresh_topic("replay-stop")
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    report = replay(data, producer_config(kafka_bootstrap), topic, speed=300, sensors=["773869"], loops=0,
                    stop=stop, progress=False)
    timer.cancel()
    assert report.interrupted and report.readings >= 1
    assert len(consume_all(kafka_bootstrap, topic, report.readings, idle_s=5)) == report.readings


@pytest.mark.integration
def test_cli_replay_prints_rate_and_bad_table_and_writes_json(kafka_bootstrap, fresh_topic, tmp_path, capsys):
    topic = fresh_topic("replay-cli")
    sensors = tmp_path / "sensors.txt"
    sensors.write_text("# two sensors\n773869\n717490\n")
    report_path = tmp_path / "report.json"
    argv = ["replay", "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--speed", "max",
            "--start", "2012-03-01T00:00", "--end", "2012-03-01T02:00Z", "--sensors", f"@{sensors}",
            "--inject-bad", "0.5", "--seed", "5", "--report-json", str(report_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "replayed 48 readings" in out and "events/s" in out and "bad record kind" in out
    saved = json.loads(report_path.read_text())
    assert saved["readings"] == 48 and saved["sensors"] == 2 and saved["bad_total"] == sum(saved["bad"].values())
    assert f"total  {saved['bad_total']:>5}".split() == out.strip().splitlines()[-1].split()
    assert len(consume_all(kafka_bootstrap, topic, saved["events"])) == saved["events"]


@pytest.mark.integration
def test_missing_topic_is_one_line(kafka_bootstrap, capfd) -> None:
    topic = f"absent-{uuid.uuid4().hex}"
    assert main(["replay", "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--no-progress"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"topic {topic} does not exist" in err[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/no/such/file.npz"], "data file /no/such/file.npz does not exist"),
        (["--start", "2012-03-02", "--end", "2012-03-01"], "the time range is empty"),
        (["--start", "2030-01-01"], "no readings in the requested time range"),
        (["--start", "last tuesday"], "is not an ISO timestamp"),
        (["--speed", "0"], "--speed must be a positive number"),
        (["--sensors", "773869,nope"], "unknown sensor ids: nope"),
        (["--sensors", "@/no/such/list"], "cannot read the sensor list"),
        (["--inject-bad", "2"], "--inject-bad must be a fraction"),
        ([], "Kafka at 127.0.0.1:1 is not reachable"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str, capfd) -> None:
    assert main(["replay", "--bootstrap-servers", DOWN, "--no-progress", *args]) == 2
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("traffic: error:") and message in lines[0], captured.err


def test_api_rejects_bad_arguments_before_connecting(data) -> None:
    config = producer_config(DOWN)
    with pytest.raises(ReplayError, match="speed"):
        replay(data, config, "t", speed=0)
    with pytest.raises(ReplayError, match="loops"):
        replay(data, config, "t", loops=-1)


def test_producer_config_is_idempotent_and_batching() -> None:
    config = producer_config("h:1", linger_ms=5, batch_size=65536, compression="lz4")
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert (config["linger.ms"], config["batch.size"], config["compression.type"]) == (5, 65536, "lz4")
    assert np.isfinite(config["message.timeout.ms"])


@pytest.mark.integration
@pytest.mark.hdfs
def test_replay_reads_an_npz_from_hdfs(kafka_bootstrap, fresh_topic, hdfs_service, data, monkeypatch) -> None:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setattr(FileSystems, "_pipeline_options", FileSystems._pipeline_options)  # restored afterwards

    options = {"hdfs_host": hdfs_service["host"], "hdfs_port": hdfs_service["http_port"],
               "hdfs_user": hdfs_service["user"]}
    FileSystems.set_options(PipelineOptions.from_dictionary(options))
    path = f"hdfs://tests/replay-{uuid.uuid4().hex[:8]}/slice.npz"
    buffer = io.BytesIO()
    np.savez(buffer, speed=data.speed[:6, :3], timestamps=data.times_ms[:6].astype("datetime64[ms]"),
             sensor_ids=np.array(data.sensor_ids[:3]))
    with FileSystems.create(path) as handle:
        handle.write(buffer.getvalue())
    try:
        topic = fresh_topic("replay-hdfs")
        report = replay(path, producer_config(kafka_bootstrap), topic, speed=math.inf, progress=False,
                        hdfs_options=options)
        assert (report.readings, report.sensors, report.steps) == (18, 3, 6)
        got = {(r["sensor_id"], r["event_time"]): r["speed_mph"]
               for r in (RAW.decode(m.value()) for m in consume_all(kafka_bootstrap, topic, 18))}
        assert got == {(sid, int(data.times_ms[i])): data.speed[i, j]
                       for i in range(6) for j, sid in enumerate(data.sensor_ids[:3])}
    finally:
        FileSystems.delete([path])


@pytest.mark.integration
def test_rejected_records_are_reported_not_counted_as_sent(kafka_bootstrap, data) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic = f"replay-tiny-{uuid.uuid4().hex[:10]}"
    # the broker refuses every batch bigger than 64 bytes
    futures = admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "64"})])
    for future in futures.values():
        future.result(timeout=30)
    try:
        for _ in range(100):
            if topic in admin.list_topics(timeout=10).topics:
                break
            time.sleep(0.1)
        with pytest.raises(ReplayError, match=r"of \d+ records were not delivered to .*too large") as info:
            replay(data, producer_config(kafka_bootstrap, linger_ms=50), topic, speed=math.inf,
                   start_ms=T0, end_ms=T0 + 2 * STEP_MS, progress=False)
        assert "\n" not in str(info.value)
    finally:
        with admin:
            for future in admin.delete_topics([topic]).values():
                future.result(timeout=30)


@pytest.mark.integration
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_after_the_current_step_with_exact_counts(
    kafka_bootstrap, fresh_topic, tmp_path, signame
) -> None:
    import signal
    import subprocess
    import sys

    topic = fresh_topic(f"replay-{signame.lower()}", partitions=2)
    report_path = tmp_path / "report.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "replay", "--bootstrap-servers", kafka_bootstrap, "--topic", topic,
         "--speed", "600", "--sensors", "773869,717490,716328", "--loop", "--inject-bad", "0.3",
         "--report-json", str(report_path), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        try:
            while consumer.poll(0.5) is None and time.monotonic() < deadline:  # wait until the replay is sending
                pass
        finally:
            consumer.close()
        time.sleep(1.0)
        process.send_signal(getattr(signal, signame))
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert out.startswith("interrupted after")
    saved = json.loads(report_path.read_text())
    assert saved["interrupted"] and saved["readings"] >= 3 and saved["readings"] % 3 == 0
    assert len(consume_all(kafka_bootstrap, topic, saved["events"], idle_s=5)) == saved["events"]
