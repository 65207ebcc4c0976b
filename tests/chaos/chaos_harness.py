"""What every fault test shares: a replay through the real streaming job, and the check that nothing was lost.

A :class:`ChaosRun` owns fresh topics (2 partitions each), a replay of a few
hours of METR-LA for a few sensors (paced, so a fault lands mid-replay), the
``traffic stream`` command as a user runs it, optionally ``traffic serve``, and
:meth:`ChaosRun.check_nothing_lost`: every (sensor, step, horizon) with a full
12-step history has exactly one prediction after de-duplication by key, equal
(within 1e-6) to the model applied to the true history and published as
PostProcess publishes it, clamped to [0, its max_speed_mph] (what the batch
backfill computes, see tests/model_reference.py), and raw =
valid + dead letters, with no validated event twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from model_reference import reference_predictions
from topic_contents import read_all, record_count

from kafka_client import producer_config
from ml.dataset import STEP_MS, VAL_END_MS
from ml.registry import ModelBundle
from pipelines.replay import ReplayReport, replay
from runners.flink_jobs import flink_jobs
from runners.platform.process import process_tree
from schemas.codec import AvroCodec

__all__ = ["SENSORS", "TOPIC_FIELDS", "ChaosRun", "Command", "assert_restored_from_checkpoint", "dead_letter_identity",
           "flink_checkpoints", "flink_job", "free_port", "restore_outcome", "rss_mb", "wait_for"]

SENSORS = 6  # each fault test replays this many sensors (a small model keeps them fast)
TOPIC_FIELDS = ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "incidents", "scores")
START_MS = VAL_END_MS - 19 * 3600 * 1000  # 2012-06-03 09:10, validation period; no reading missing for 3 h


def wait_for(done: Callable[[], bool], timeout_s: float, what: str, every_s: float = 1.0,
             alive: Callable[[], str | None] = lambda: None) -> float:
    """Polls ``done`` until true; returns the seconds it took. ``alive`` returns a reason to give up early."""
    started = time.monotonic()
    while not done():
        reason = alive()
        assert reason is None, f"{what}: {reason}"
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(every_s)
    return time.monotonic() - started


def flink_job(rest: str, name: str) -> dict:
    """The Flink job called ``name`` (``jid``, ``state``, ...)."""
    [job] = [j for j in flink_jobs(rest, name) if j["name"] == name]
    return job


def flink_checkpoints(rest: str, jid: str) -> dict:
    """A job's checkpoint statistics (``counts``, ``latest.restored``, ...)."""
    return httpx.get(f"{rest}/jobs/{jid}/checkpoints", timeout=10).json()


def restore_outcome(rest: str, name: str, jid: str) -> tuple[str, dict]:
    """After a fault: the job's state and the checkpoint it last restored from (``{}`` if none)."""
    return flink_job(rest, name)["state"], flink_checkpoints(rest, jid)["latest"]["restored"]


def assert_restored_from_checkpoint(state: str, restored: dict) -> None:
    """The job runs again, restored from a checkpoint it took itself (not a savepoint, not a fresh start)."""
    assert state == "RUNNING"
    assert restored.get("is_savepoint") is False and restored.get("id", 0) >= 1, restored


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total = 0
    for proc in process_tree(pid):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


class Command:
    """A ``traffic ...`` command as a child process in its own process group, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        exe = shutil.which("traffic", path=str(Path(sys.executable).parent))
        command = [exe] if exe else [sys.executable, "-m", "cli.main"]
        with log.open("w") as out:
            self.proc = subprocess.Popen([*command, *argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def output(self, tail: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def exited(self) -> str | None:
        """None while it runs; else why it stopped, with the end of its output."""
        if self.proc.poll() is None:
            return None
        return f"`{self.log.stem}` exited ({self.proc.returncode}):\n{self.output()}"

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGTERM, then the exit code (SIGKILL to the group if it does not stop)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return -9


class ChaosRun:
    """Fresh topics, a model, a paced replay and the checks; see the module doc."""

    def __init__(self, bootstrap: str, fresh_topic: Callable[..., str], registry: str, bundle: ModelBundle,
                 tmp_path: Path, steps: int = 36, start_ms: int = START_MS) -> None:
        self.bootstrap, self.registry, self.bundle, self.tmp_path = bootstrap, registry, bundle, tmp_path
        self.start_ms, self.end_ms = start_ms, start_ms + steps * STEP_MS
        self.topics = {field: fresh_topic(f"chaos-{field.replace('_', '-')}", partitions=2) for field in TOPIC_FIELDS}
        self.env = dict(os.environ, TRAFFIC_MODEL_REGISTRY=registry, TRAFFIC_API_MODEL_REGISTRY=registry,
                        TRAFFIC_API_REQUIRE_VENDOR="false",
                        **{f"TRAFFIC_TOPICS_{field.upper()}": topic for field, topic in self.topics.items()})
        self.reports: list[ReplayReport] = []
        self.replay_error: BaseException | None = None
        self._replay_thread: threading.Thread | None = None
        self.commands: list[Command] = []
        self.read_timeout_s = 60.0  # reading a topic back; raise it for large runs

    # -- processes ------------------------------------------------------------------------------------------
    def command(self, name: str, argv: list[str]) -> Command:
        command = Command(argv, self.env, self.tmp_path / f"{name}.log")
        self.commands.append(command)
        return command

    def stream(self, runner: str, job_name: str, beam_args: tuple[str, ...] = (), output: str = "none",
               file_window_s: int = 300) -> Command:
        """``traffic stream``; its files a step each (the outage tests want many writes, and a file per step)."""
        return self.command(f"stream-{job_name}", [
            "stream", "--runner", runner, "--bootstrap", self.bootstrap, "--registry", self.registry,
            "--output", output, "--file-window-s", str(file_window_s), "--group-id", job_name,
            "--start", "earliest", "--", f"--job_name={job_name}", *beam_args])

    def stop_all(self) -> None:
        for command in reversed(self.commands):
            command.stop()

    # -- the replay -----------------------------------------------------------------------------------------
    def replay_in_background(self, speed: float, start_ms: int | None = None, end_ms: int | None = None,
                             seed: int = 11) -> threading.Thread:
        """Replays ``[start_ms, end_ms)`` (default: the whole run) at ``speed`` on a thread."""
        def run() -> None:
            try:
                self.reports.append(replay(
                    None, producer_config(self.bootstrap), self.topics["raw"], speed=speed,
                    start_ms=start_ms or self.start_ms, end_ms=end_ms or self.end_ms,
                    sensors=list(self.bundle.context.sensor_ids), inject_bad=0.03, seed=seed, progress=False))
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                self.replay_error = exc

        self._replay_thread = threading.Thread(target=run, name="chaos-replay", daemon=True)
        self._replay_thread.start()
        return self._replay_thread

    def replay_done(self) -> bool:
        return self._replay_thread is not None and not self._replay_thread.is_alive()

    def sent_steps(self) -> int:
        return record_count(self.bootstrap, self.topics["raw"])

    # -- reading the outputs ---------------------------------------------------------------------------------
    def predictions(self) -> dict[tuple, list[tuple]]:
        """(sensor, step, horizon) -> [(predicted, lower, upper, processing_time_ms), ...] in the topic."""
        codec = AvroCodec("prediction")
        got: dict[tuple, list[tuple]] = {}
        for message in read_all(self.bootstrap, self.topics["predictions"], self.read_timeout_s):
            r = codec.decode(message.value())
            got.setdefault((r["sensor_id"], int(r["event_time"]), int(r["horizon_min"])), []).append(
                (r["predicted_speed_mph"], r["lower_mph"], r["upper_mph"], int(r["processing_time"])))
        return got

    def reference(self) -> dict[tuple, tuple[float, float, float]]:
        """The model applied to every replayed step with a full 12-step history, clamped as PostProcess publishes it."""
        return reference_predictions(self.bundle, self.start_ms, self.end_ms)

    def all_arrived(self, reference: dict) -> Callable[[], bool]:
        dead_letters = sum(r.bad_total for r in self.reports)
        return lambda: (set(reference) <= set(self.predictions())
                        and record_count(self.bootstrap, self.topics["dead_letters"]) >= dead_letters)

    def check_nothing_lost(self, reference: dict) -> dict[str, int | float]:
        """Asserts the module doc's promises; returns the counts."""
        assert self.replay_error is None, f"the replay failed: {self.replay_error!r}"
        got = self.predictions()
        missing = set(reference) - set(got)
        assert not missing, f"{len(missing)} of {len(reference)} predictions never arrived, e.g. {sorted(missing)[:3]}"
        # The first 11 steps of each sensor have a shorter history; the job predicts them too (not compared).
        for key in set(got) - set(reference):
            assert len({v[:3] for v in got[key]}) == 1, f"{key} has differing duplicates {got[key]}"
        worst, off = 0.0, []
        for key, expected in reference.items():
            versions = {v[:3] for v in got[key]}
            assert len(versions) == 1, f"{key} has differing duplicates {versions}"
            diff = max(abs(a - b) for a, b in zip(versions.pop(), expected, strict=True))
            worst = max(worst, diff)
            if diff > 1e-6:
                off.append((diff, key))
        assert worst <= 1e-6, (f"{len(off)} of {len(reference)} predictions differ from the model on the true "
                               f"history, by up to {worst:.3g}; the worst (diff, (sensor, step ms, horizon)): "
                               f"{sorted(off, reverse=True)[:5]}")
        raw = record_count(self.bootstrap, self.topics["raw"])
        events = read_all(self.bootstrap, self.topics["events"], self.read_timeout_s)
        codec = AvroCodec("traffic_event")
        event_keys = Counter((m.key(), codec.decode(m.value())["event_time"]) for m in events)
        dead_letters = [AvroCodec("dead_letter").decode(m.value())
                        for m in read_all(self.bootstrap, self.topics["dead_letters"])]
        dead = len({dead_letter_identity(d) for d in dead_letters})
        assert raw == sum(r.events for r in self.reports), (raw, [r.events for r in self.reports])
        assert dead == sum(r.bad_total for r in self.reports), (dead, [r.bad_total for r in self.reports])
        assert raw == len(event_keys) + dead, (raw, len(event_keys), dead)
        return {"raw": raw, "valid": len(event_keys), "valid_records": len(events), "dead_letters": dead,
                "dead_letter_records": len(dead_letters),
                "keys": len(reference), "predictions": sum(len(v) for v in got.values()),
                "duplicates": sum(len(v) - 1 for v in got.values()), "worst_abs_diff": worst}

    def first_prediction_after(self, epoch_ms: float) -> float | None:
        """Seconds from ``epoch_ms`` to the first prediction made (processing time) after it; None if none yet."""
        after = [v[3] for values in self.predictions().values() for v in values if v[3] > epoch_ms]
        return (min(after) - epoch_ms) / 1000 if after else None

    def health(self, port: int) -> tuple[int, dict]:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=15)
            return response.status_code, response.json()
        except httpx.HTTPError as exc:
            return 0, {"error": str(exc)}


def dead_letter_identity(dead_letter: dict) -> tuple:
    """What tells two dead letters apart when a restore from a checkpoint re-read (and re-wrote) some.

    A record validation rejected names its raw record (topic, partition, offset). A repeat de-duplication
    rejected, or a reading later than its window, is a valid event: it has no offset, and is told apart by
    its reason and content (the replay repeats a reading at most once)."""
    if dead_letter["source_offset"] is not None:
        return dead_letter["source_topic"], dead_letter["source_partition"], dead_letter["source_offset"]
    return dead_letter["reason"], dead_letter["key"], dead_letter["payload"]
