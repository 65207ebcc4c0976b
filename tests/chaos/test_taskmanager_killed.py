"""The Flink TaskManager killed (SIGKILL) in the middle of a replay: it comes back and the job restores by itself.

Three hours of METR-LA for 6 sensors are replayed into ``traffic stream
--runner flink``. Once predictions flow and a checkpoint is complete, the
TaskManager's JVM gets ``kill -9``. Nobody steps in: the platform's supervisor
(:mod:`runners.platform.supervise`) starts a new TaskManager, and Flink's restart
strategy restores the job on it from its last checkpoint. Asserted: a new
TaskManager registered, the job restored from a checkpoint and ran on, and
nothing is lost (see :mod:`chaos_harness`). The recovery times are printed
(and recorded in docs/faults.md).
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import httpx
import pytest
from chaos_harness import (
    ChaosRun,
    assert_restored_from_checkpoint,
    flink_checkpoints,
    flink_job,
    restore_outcome,
    rss_mb,
    wait_for,
)

from config.settings import PlatformSettings
from runners.flink_jobs import cancel_flink_jobs, flink_jobs
from runners.platform import Platform
from runners.platform.process import process_tree

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.flink]

SPEED = 60.0  # 36 steps in 3 minutes
WAIT_S = 600.0


def _taskmanagers(rest: str) -> set[str]:
    try:
        return {tm["id"] for tm in httpx.get(f"{rest}/taskmanagers", timeout=10).json()["taskmanagers"]}
    except httpx.HTTPError:
        return set()


def _taskmanager_jvm(platform: Platform) -> int:
    """The pid of the TaskManager's JVM (a child of its supervisor)."""
    [supervisor] = [p.pid() for p in platform.service("flink").processes() if p.name == "flink-taskmanager"]
    assert supervisor is not None, "the TaskManager is not running"
    jvms = [p.pid for p in process_tree(supervisor) if p.pid != supervisor and "java" in p.name()]
    assert len(jvms) == 1, jvms
    return jvms[0]


def test_a_killed_taskmanager_comes_back_and_the_job_restores(
        registered, kafka_bootstrap, flink_services, fresh_topic, platform_settings: PlatformSettings,
        tmp_path) -> None:
    root, bundle = registered
    rest = flink_services["rest_url"]
    platform = Platform(platform_settings)
    run = ChaosRun(kafka_bootstrap, fresh_topic, root, bundle, tmp_path)
    reference = run.reference()
    name = f"chaos-tm-{uuid.uuid4().hex[:8]}"
    try:
        job = run.stream("flink", name)
        wait_for(lambda: any(j["name"] == name and j["state"] == "RUNNING" for j in flink_jobs(rest, name)),
                 WAIT_S, "the Flink job is running", every_s=2, alive=job.exited)
        jid = flink_job(rest, name)["jid"]
        run.replay_in_background(SPEED)
        wait_for(lambda: bool(run.predictions()) and flink_checkpoints(rest, jid)["counts"]["completed"] >= 1,
                 WAIT_S, "predictions flow and a checkpoint is complete", every_s=2, alive=job.exited)
        before = _taskmanagers(rest)
        jvm = _taskmanager_jvm(platform)
        killed_at = time.time()
        os.kill(jvm, signal.SIGKILL)
        tm_back_s = wait_for(lambda: bool(_taskmanagers(rest) - before), WAIT_S,
                             "a new TaskManager registered", alive=job.exited)
        running_s = wait_for(lambda: flink_job(rest, name)["state"] == "RUNNING" and
                             (flink_checkpoints(rest, jid).get("latest") or {}).get("restored"),
                             WAIT_S, "the job restored from a checkpoint and runs", alive=job.exited)
        wait_for(lambda: run.first_prediction_after(killed_at * 1000) is not None, WAIT_S,
                 "a prediction was made after the kill", every_s=2, alive=job.exited)
        first_after_s = run.first_prediction_after(killed_at * 1000)
        wait_for(run.replay_done, WAIT_S, "the replay finished", alive=job.exited)
        all_in_s = wait_for(run.all_arrived(reference), WAIT_S, "every prediction arrived", every_s=2,
                            alive=job.exited)
        state, restored = restore_outcome(rest, name, jid)
        rss = {"stream": rss_mb(job.proc.pid), "taskmanager": rss_mb(_taskmanager_jvm(platform))}
    finally:
        run.stop_all()
        cancel_flink_jobs(rest, name)

    assert_restored_from_checkpoint(state, restored)
    counts = run.check_nothing_lost(reference)
    print(f"\nTaskManager killed: a new one registered {tm_back_s:.1f} s after the kill; the job ran again, "
          f"restored from checkpoint {restored['id']}, {running_s:.1f} s after that; first prediction "
          f"{first_after_s:.1f} s after the kill; all {counts['keys']} predictions {all_in_s:.1f} s after the "
          f"replay ended; counts {counts}; RSS MB {rss}")
