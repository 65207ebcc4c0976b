"""Overload: a replay at twice the job's measured capacity for 5 minutes. Memory stays bounded, nothing is lost.

The whole sensor network (207 sensors) streams through ``traffic stream
--runner flink`` with its Python code in ``traffic worker-pool`` workers. The
job's capacity is measured in the same run, never assumed: a backlog of 2 days
of readings is sent at full speed (``traffic replay --speed max``) and its
records divided by the time from the first of them validated to the last of
their predictions out is the capacity (in raw records per second; the job emits
a window's predictions all at once when the watermark passes it, so the rate
between two fractions of the predictions measures bursts, not throughput).
Then the next readings are replayed for 5 minutes with the replay's own pacing
flag set to twice that rate (``--speed``), and the job is left to work off its
backlog. A sampler records every few seconds the
resident memory of every process (Kafka, the Flink JobManager and TaskManager,
the job server, ``traffic stream``, the worker pool and each SDK worker, the
replay) and the lag (raw records not yet validated; steps not yet predicted).

Asserted: the job really fell behind (predictions were missing when the replay
ended); no process's peak memory in the second half of the overload is above
its peak in the first half by more than a quarter plus 64 MB (the backlog
doubles in that time: it waits in Kafka, not in memory); the lag is worked off
with the job still running; and nothing is lost (see :mod:`chaos_harness`).
Rates, memory over time, the lag curve and the time to work it off are
printed (and recorded in docs/faults.md).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import fields
from datetime import UTC, datetime

import psutil
import pytest
from chaos_harness import ChaosRun, Command, flink_job, free_port, rss_mb, wait_for
from small_models import register_ridge_bundle
from topic_contents import record_count

from config.settings import PlatformSettings
from ml.dataset import STEP_MS, load_metrla
from ml.features import HORIZONS_MIN
from pipelines.replay import ReplayReport
from runners.flink_jobs import cancel_flink_jobs, flink_jobs
from runners.platform import Platform
from runners.platform.process import process_tree

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.flink]

CAPACITY_STEPS = 576  # 2 days of the whole network (~120,000 records) sent at full speed to measure the capacity
OVERLOAD = 2.0  # the replay's rate as a multiple of the measured capacity
OVERLOAD_S = 300.0
SAMPLE_EVERY_S = 2.0
GROWTH, SLACK_MB = 1.25, 64.0  # bound on the second half's peak memory against the first half's
WAIT_S = 1800.0
WORK_OFF_WAIT_S = 3600.0  # give up on the work-off only after an hour (a loaded machine slows the job a lot)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """``(registry root, bundle)``: a ridge model of the whole network, registered."""
    root = str(tmp_path_factory.mktemp("registry"))
    return root, register_ridge_bundle(root, len(load_metrla().sensor_ids))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M")


def _own_rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


class _Sampler(threading.Thread):
    """Every SAMPLE_EVERY_S: the phase, the topics' record counts and each process's RSS (MB)."""

    def __init__(self, run: ChaosRun, platform: Platform, pool: Command, job: Command) -> None:
        super().__init__(name="overload-sampler", daemon=True)
        self.chaos, self.platform, self.pool, self.job = run, platform, pool, job
        self.replay: Command | None = None
        self.phase = "idle"
        self.rows: list[dict] = []
        self.started = time.monotonic()
        self.stopped = threading.Event()

    def processes(self) -> dict[str, float]:
        rss: dict[str, float] = {}
        for service in ("kafka", "flink", "jobserver"):
            for proc in self.platform.service(service).processes():
                if (pid := proc.pid()) is not None:
                    rss[proc.name] = rss_mb(pid)  # with its children (the TaskManager's supervisor and JVM)
        rss["traffic-stream"] = rss_mb(self.job.proc.pid)
        rss["worker-pool"] = _own_rss_mb(self.pool.proc.pid)
        for proc in process_tree(self.pool.proc.pid):
            if proc.pid != self.pool.proc.pid and "python" in proc.name():
                rss[f"sdk-worker-{proc.pid}"] = rss_mb(proc.pid)
        if self.replay is not None and self.replay.proc.poll() is None:
            rss["traffic-replay"] = rss_mb(self.replay.proc.pid)
        return rss

    def sample(self) -> dict:
        def count(topic: str) -> int:
            return record_count(self.chaos.bootstrap, self.chaos.topics[topic])

        row = {"t": round(time.monotonic() - self.started, 1), "phase": self.phase, "raw": count("raw"),
               "validated": count("events") + count("dead_letters"), "predictions": count("predictions")}
        row["rss"] = {name: round(mb, 1) for name, mb in self.processes().items()}
        return row

    def run(self) -> None:  # noqa: D102 - the thread's body
        while not self.stopped.is_set():
            try:
                self.rows.append(self.sample())
            except Exception as exc:  # noqa: BLE001 - a broker hiccup loses one sample, not the test
                self.rows.append({"t": round(time.monotonic() - self.started, 1), "error": repr(exc)})
            self.stopped.wait(SAMPLE_EVERY_S)

    def first_time(self, count: str, at_least: int) -> float:
        """When the sampled ``count`` (``"validated"``, ``"predictions"``) first reached ``at_least``."""
        return next(r["t"] for r in self.rows if r.get(count, -1) >= at_least)


def _replay(run: ChaosRun, name: str, speed: str, start_ms: int, end_ms: int, seed: int) -> Command:
    return run.command(name, ["replay", "--bootstrap-servers", run.bootstrap, "--topic", run.topics["raw"],
                              "--speed", speed, "--start", _iso(start_ms), "--end", _iso(end_ms),
                              "--inject-bad", "0.03", "--seed", str(seed), "--no-progress",
                              "--report-json", str(run.tmp_path / f"{name}.json")])


def _report(run: ChaosRun, command: Command) -> ReplayReport:
    """The report ``traffic replay --report-json`` wrote, once the replay has exited cleanly."""
    code = command.proc.wait()
    assert code == 0, command.exited()
    data = json.loads((run.tmp_path / f"{command.log.stem}.json").read_text())
    return ReplayReport(**{f.name: data[f.name] for f in fields(ReplayReport)})


def _peaks(rows: list[dict]) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for row in rows:
        for name, mb in row.get("rss", {}).items():
            peaks[name] = max(peaks.get(name, 0.0), mb)
    return peaks


def test_twice_the_capacity_for_five_minutes_is_worked_off_with_bounded_memory(
        network, kafka_bootstrap, flink_services, fresh_topic, platform_settings: PlatformSettings,
        tmp_path) -> None:
    root, bundle = network
    rest = flink_services["rest_url"]
    data = load_metrla()
    start_ms, data_end_ms = int(data.times_ms[0]), int(data.times_ms[-1]) + STEP_MS
    run = ChaosRun(kafka_bootstrap, fresh_topic, root, bundle, tmp_path, steps=CAPACITY_STEPS, start_ms=start_ms)
    run.read_timeout_s = 900.0  # a million predictions take a while to read back
    per_step = len(bundle.context.sensor_ids) * len(HORIZONS_MIN)  # predictions per replayed step
    name = f"chaos-overload-{uuid.uuid4().hex[:8]}"
    port = free_port()
    sampler: _Sampler | None = None
    try:
        pool = run.command("worker-pool", ["worker-pool", "--port", str(port)])
        wait_for(lambda: "serving at" in pool.output(), 120, "the worker pool serves", alive=pool.exited)
        job = run.stream("flink", name, (f"--flink_worker_pool=127.0.0.1:{port}",))
        alive = lambda: job.exited() or pool.exited()  # noqa: E731
        wait_for(lambda: any(j["name"] == name and j["state"] == "RUNNING" for j in flink_jobs(rest, name)),
                 WAIT_S, "the Flink job is running", every_s=2, alive=alive)
        sampler = _Sampler(run, Platform(platform_settings), pool, job)
        sampler.start()

        # 1. The capacity: a backlog sent at full speed, and the rate its predictions come out at.
        sampler.phase = "capacity"
        sampler.replay = _replay(run, "replay-capacity", "max", start_ms, run.end_ms, seed=11)
        capacity_report = _report(run, sampler.replay)
        run.reports.append(capacity_report)
        expected = CAPACITY_STEPS * per_step
        wait_for(lambda: record_count(kafka_bootstrap, run.topics["predictions"]) >= expected, WAIT_S,
                 "the capacity backlog was predicted", every_s=2, alive=alive)
        time.sleep(SAMPLE_EVERY_S * 1.5)  # the sampler has seen it too
        # From the first record validated (the job at work; not its cold start) to the last prediction out.
        drain_s = sampler.first_time("predictions", expected) - sampler.first_time("validated", 1)
        assert drain_s > 5 * SAMPLE_EVERY_S, f"the backlog drained in {drain_s:.1f} s: raise CAPACITY_STEPS"
        capacity = capacity_report.events / drain_s  # raw records per second
        records_per_step = capacity_report.events / capacity_report.steps
        speed = OVERLOAD * capacity / records_per_step * (STEP_MS / 1000)
        overload_steps = round(speed * OVERLOAD_S / (STEP_MS / 1000))
        overload_end_ms = run.end_ms + overload_steps * STEP_MS
        assert overload_end_ms <= data_end_ms, (
            f"{OVERLOAD_S:.0f} s at {OVERLOAD}x a capacity of {capacity:.0f} records/s needs {overload_steps} steps,"
            " more than the data holds: lower CAPACITY_STEPS' share or replay fewer sensors")

        # 2. Twice the capacity for OVERLOAD_S, paced by the replay itself.
        sampler.phase = "overload"
        sampler.replay = _replay(run, "replay-overload", f"{speed:.3f}", run.end_ms, overload_end_ms, seed=12)
        overload_report = _report(run, sampler.replay)
        run.reports.append(overload_report)
        run.end_ms = overload_end_ms
        total = (CAPACITY_STEPS + overload_steps) * per_step
        behind = total - record_count(kafka_bootstrap, run.topics["predictions"])

        # 3. The lag is worked off.
        sampler.phase = "work-off"
        dead_letters = sum(r.bad_total for r in run.reports)
        worked_off_s = wait_for(
            lambda: (record_count(kafka_bootstrap, run.topics["predictions"]) >= total
                     and record_count(kafka_bootstrap, run.topics["dead_letters"]) >= dead_letters),
            WORK_OFF_WAIT_S, "the backlog was worked off", every_s=2, alive=alive)
        sampler.phase = "after"
        time.sleep(5 * SAMPLE_EVERY_S)
        state = flink_job(rest, name)["state"]
    finally:
        if sampler is not None:
            sampler.stopped.set()
            sampler.join(60)
            (tmp_path / "samples.json").write_text(json.dumps(sampler.rows))  # kept for a failed run too
        run.stop_all()
        cancel_flink_jobs(rest, name)

    rows = [r for r in sampler.rows if "rss" in r]
    overload_rows = [r for r in rows if r["phase"] == "overload"]
    middle = len(overload_rows) // 2
    first, second = _peaks(overload_rows[:middle]), _peaks(overload_rows[middle:])
    print(f"\noverload: capacity {capacity:.0f} records/s ({capacity_report.events} records at full speed, "
          f"first validated to last predicted in {drain_s:.1f} s); replay --speed {speed:.1f} = "
          f"{overload_report.events / overload_report.elapsed_s:.0f} records/s for {overload_report.elapsed_s:.0f} s "
          f"({overload_report.events} records, {overload_steps} steps); {behind} predictions behind when it ended; "
          f"worked off {worked_off_s:.0f} s later; job {state}; samples in {tmp_path / 'samples.json'}")
    print("t s | phase | raw | not validated | steps not predicted | RSS MB")
    for row in rows[::max(1, len(rows) // 40)]:
        steps_behind = row["raw"] / records_per_step - row["predictions"] / per_step
        print(f"{row['t']:.0f} | {row['phase']} | {row['raw']} | {row['raw'] - row['validated']} | "
              f"{steps_behind:.0f} | {row['rss']}")
    print(f"peak RSS MB, first half of the overload {first}; second half {second}; overall {_peaks(rows)}")

    assert behind > 0, f"the job kept up at {OVERLOAD}x its measured capacity: it was not overloaded"
    assert overload_report.undelivered == 0 and not overload_report.interrupted
    assert state == "RUNNING", state
    counts = run.check_nothing_lost(run.reference())
    print(f"overload counts {counts}")
    assert counts["duplicates"] == 0, counts  # no fault, no restore: each prediction made exactly once
    grew = {n: (first[n], mb) for n, mb in second.items() if n in first and mb > first[n] * GROWTH + SLACK_MB}
    assert not grew, f"memory kept growing during the overload (first-half peak, second-half peak MB): {grew}"
