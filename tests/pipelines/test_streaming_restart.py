"""Stop the streaming job on Flink with a savepoint, restart it from there: no prediction lost across the restart.

Three hours of METR-LA for a handful of sensors, in two parts, through
``traffic stream --runner flink`` (the command, as a user runs it, with
checkpointing on):

1. the first part is replayed and the job runs until its predictions arrived;
2. SIGTERM with ``--savepoint-dir``: the job stops with a savepoint;
3. the second part is replayed while no job runs;
4. the job starts again with ``--from-savepoint`` and ``--start latest`` (so a
   job that did not restore its reader's offsets would read nothing at all),
   and runs until every prediction arrived.

Then every (sensor, step, horizon) with a full 12-step history has exactly one
prediction after de-duplication by key, equal (within 1e-6) to what the model
makes of the true history: the steps whose history spans the restart come from
the restored NetworkHistory state. Counts add up: raw = valid + dead letters.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from model_reference import reference_predictions
from small_models import register_ridge_bundle
from topic_contents import read_all, record_count

from config.settings import PlatformSettings
from kafka_client import producer_config
from ml.dataset import STEP_MS, VAL_END_MS
from ml.features import HISTORY_STEPS, HORIZONS_MIN
from ml.registry import ModelBundle
from pipelines.replay import ReplayReport, replay
from runners.flink_jobs import (
    FlinkUnavailableError,
    UnknownFlinkJobError,
    cancel_flink_jobs,
    flink_jobs,
    stop_with_savepoint,
)
from schemas.codec import AvroCodec
from schemas.topics import TopicSettings

SENSORS = 6
START_MS = VAL_END_MS - 19 * 3600 * 1000  # 2012-06-03 09:10, validation period; no reading missing for 3 h
SPLIT_MS = START_MS + 18 * STEP_MS  # 1.5 h before the restart, 1.5 h after
END_MS = START_MS + 36 * STEP_MS
WAIT_S = 240  # for one part's predictions (a Flink job start included)

_TOPIC_FIELDS = ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "incidents", "scores")


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[str, ModelBundle]:
    root = str(tmp_path_factory.mktemp("registry"))
    return root, register_ridge_bundle(root, SENSORS)


def _key(record: dict) -> tuple[str, int, int]:
    return record["sensor_id"], int(record["event_time"]), int(record["horizon_min"])


def _values(record: dict) -> tuple[float, float, float]:
    return record["predicted_speed_mph"], record["lower_mph"], record["upper_mph"]


def _predictions(bootstrap: str, topic: str) -> dict[tuple, list[tuple]]:
    codec = AvroCodec("prediction")
    got: dict[tuple, list[tuple]] = {}
    for message in read_all(bootstrap, topic):
        record = codec.decode(message.value())
        got.setdefault(_key(record), []).append(_values(record))
    return got


def _reference(bundle: ModelBundle, known_from_ms: int = START_MS) -> dict[tuple, tuple[float, float, float]]:
    """The model applied to every replayed step with a full 12-step history, clamped as published, readings
    before ``known_from_ms`` unknown (the default: what the stream was sent)."""
    return reference_predictions(bundle, START_MS, END_MS, known_from_ms)


class _StreamCommand:
    """``traffic stream --runner flink ...`` as a child process, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.job_name = argv[-1].split("=", 1)[1]
        exe = shutil.which("traffic", path=str(Path(sys.executable).parent))
        command = [exe] if exe else [sys.executable, "-m", "cli.main"]
        with log.open("w") as out:
            self.proc = subprocess.Popen([*command, *argv], env=env, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not done():
            assert self.proc.poll() is None, f"traffic stream exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"{what} within {WAIT_S} s; job output:\n{self.output()[-3000:]}"
            time.sleep(2)

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGTERM (what `traffic run` sends), then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            tail = self.output()[-3000:]
            raise AssertionError(f"traffic stream did not stop within {timeout_s:.0f} s:\n{tail}") from None


def _job(rest_url: str, name: str) -> dict:
    [job] = [j for j in flink_jobs(rest_url, name) if j["name"] == name]
    return job


@pytest.mark.integration
@pytest.mark.flink
def test_stop_with_savepoint_and_restart_loses_no_prediction(
    registered, kafka_bootstrap: str, flink_services: dict[str, str], fresh_topic,
    platform_settings: PlatformSettings, tmp_path: Path,
) -> None:
    root, bundle = registered
    topics = TopicSettings(**{field: fresh_topic(f"restart-{field}", partitions=2)
                              for field in _TOPIC_FIELDS})
    env = dict(os.environ, **{f"TRAFFIC_TOPICS_{field.upper()}": getattr(topics, field)
                              for field in _TOPIC_FIELDS})
    rest = platform_settings.flink_rest_url
    name = f"test-restart-{uuid.uuid4().hex[:8]}"
    savepoints = tmp_path / "savepoints"
    common = ["stream", "--runner", "flink", "--bootstrap", kafka_bootstrap, "--registry", root, "--output", "none",
              "--group-id", name, "--savepoint-dir", str(savepoints)]
    sensors = list(bundle.context.sensor_ids)
    reference = _reference(bundle)
    first_keys = {key for key in reference if key[1] < SPLIT_MS}
    # The 11 steps after the split need history from before it: a job that lost its state at the restart would
    # predict them from a shorter history, and differently (so the equality check below can tell).
    spanning = {key for key in reference if SPLIT_MS <= key[1] < SPLIT_MS + (HISTORY_STEPS - 1) * STEP_MS}
    lost = _reference(bundle, known_from_ms=SPLIT_MS)
    assert len(spanning) == SENSORS * (HISTORY_STEPS - 1) * len(HORIZONS_MIN)
    assert all(abs(lost[key][0] - reference[key][0]) > 1e-3 for key in spanning)

    def part(start_ms: int, end_ms: int) -> ReplayReport:
        return replay(None, producer_config(kafka_bootstrap), topics.raw, speed=float("inf"), start_ms=start_ms,
                      end_ms=end_ms, sensors=sensors, inject_bad=0.03, seed=11, progress=False)

    def arrived(keys: set[tuple], dead_letters: int) -> Callable[[], bool]:
        return lambda: (keys <= set(_predictions(kafka_bootstrap, topics.predictions))
                        and record_count(kafka_bootstrap, topics.dead_letters) >= dead_letters)

    started = time.monotonic()
    jobs: list[_StreamCommand] = []
    try:
        sent = [part(START_MS, SPLIT_MS)]
        jobs.append(_StreamCommand([*common, "--start", "earliest", "--", f"--job_name={name}-a"], env,
                                   tmp_path / "stream-a.log"))
        jobs[0].wait_for(arrived(first_keys, sent[0].bad_total), "the first part's predictions did not arrive")
        assert jobs[0].stop() == 0, jobs[0].output()[-3000:]
        found = re.search(r"^savepoint: (\S+)$", jobs[0].output(), re.MULTILINE)
        assert found, jobs[0].output()[-3000:]
        savepoint = found.group(1)
        assert Path(savepoint.removeprefix("file:")).parent == savepoints.resolve()
        assert (Path(savepoint.removeprefix("file:")) / "_metadata").is_file()
        assert _job(rest, f"{name}-a")["state"] == "FINISHED"  # stopped, not failed or cancelled
        stopped_at = len(read_all(kafka_bootstrap, topics.predictions))

        sent.append(part(SPLIT_MS, END_MS))
        jobs.append(_StreamCommand([*common, "--start", "latest", "--from-savepoint", savepoint, "--",
                                    f"--job_name={name}-b"], env, tmp_path / "stream-b.log"))
        jobs[1].wait_for(arrived(set(reference), sum(s.bad_total for s in sent)), "not every prediction arrived")
        restored_job = _job(rest, f"{name}-b")
        checkpoints = httpx.get(f"{rest}/jobs/{restored_job['jid']}/checkpoints", timeout=10).json()
        restored = (checkpoints.get("latest") or {}).get("restored") or {}
        assert jobs[1].stop() == 0, jobs[1].output()[-3000:]
    finally:
        for job in jobs:
            if job.proc.poll() is None:
                job.proc.kill()
                job.proc.wait()
        cancel_flink_jobs(rest, name)
    elapsed = time.monotonic() - started

    assert restored.get("external_path", "").rstrip("/") == savepoint.rstrip("/"), restored
    got = _predictions(kafka_bootstrap, topics.predictions)
    missing = set(reference) - set(got)
    assert not missing, f"{len(missing)} of {len(reference)} predictions never arrived, e.g. {sorted(missing)[:3]}"
    worst = 0.0
    for key, expected in reference.items():
        versions = set(got[key])
        assert len(versions) == 1, f"{key} has differing duplicates {versions}"
        worst = max(worst, *(abs(a - b) for a, b in zip(versions.pop(), expected, strict=True)))
    assert worst <= 1e-6, worst  # the spanning steps included: NetworkHistory's state was restored
    # Counts add up across the restart: every raw record is one validated event or one dead letter.
    raw = record_count(kafka_bootstrap, topics.raw)
    events = read_all(kafka_bootstrap, topics.events)
    event_keys = Counter((m.key(), AvroCodec("traffic_event").decode(m.value())["event_time"]) for m in events)
    dead = record_count(kafka_bootstrap, topics.dead_letters)
    assert raw == sum(s.events for s in sent)
    assert dead == sum(s.bad_total for s in sent)
    twice = sorted(key for key, count in event_keys.items() if count > 1)
    assert not twice, f"{len(twice)} validated events were published more than once, e.g. {twice[:3]}"
    assert raw == len(events) + dead, (raw, len(events), dead)
    print(f"\nrestart test: {elapsed:.0f} s for two Flink jobs; {stopped_at} predictions before the stop, "
          f"{len(read_all(kafka_bootstrap, topics.predictions))} in all for {len(reference)} keys")


@pytest.mark.integration
@pytest.mark.flink
def test_stop_with_savepoint_reports_an_unknown_job(flink_services: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(UnknownFlinkJobError, match="no job 0123456789abcdef0123456789abcdef"):
        stop_with_savepoint(flink_services["rest_url"], "0123456789abcdef0123456789abcdef", tmp_path)


def test_stop_with_savepoint_reports_flink_down(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FlinkUnavailableError, match=f"127.0.0.1:{port} does not answer"):
        stop_with_savepoint(f"http://127.0.0.1:{port}", "0123456789abcdef0123456789abcdef", tmp_path)
