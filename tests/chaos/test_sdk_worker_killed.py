"""The Python SDK worker of a Flink job killed (SIGKILL) mid-replay: the job restarts and catches up.

The job runs its Python code in a worker started by ``traffic worker-pool``
(``--flink_worker_pool``, EXTERNAL; with LOOPBACK the worker lives inside
``traffic stream`` itself). Once predictions flow and a checkpoint is complete,
the worker process gets ``kill -9``. Flink fails the job's tasks, restarts them
from the last checkpoint after the restart delay, and the pool starts a new
worker. Asserted: the job restored from a checkpoint, the killed worker was
replaced, and nothing is lost (see :mod:`chaos_harness`). The recovery times
are printed (and recorded in docs/faults.md).
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from chaos_harness import (
    ChaosRun,
    assert_restored_from_checkpoint,
    flink_checkpoints,
    flink_job,
    free_port,
    restore_outcome,
    rss_mb,
    wait_for,
)

from runners.flink_jobs import cancel_flink_jobs, flink_jobs
from runners.platform.process import process_tree

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.flink]

SPEED = 60.0  # 36 steps in 3 minutes
WAIT_S = 600.0


def _workers(pool_pid: int) -> list[int]:
    """The SDK worker processes the pool started (``python -c ... worker_pool_main``'s children)."""
    return [p.pid for p in process_tree(pool_pid) if p.pid != pool_pid and "python" in p.name()]


def test_a_killed_sdk_worker_is_replaced_and_the_job_catches_up(
        registered, kafka_bootstrap, flink_services, fresh_topic, tmp_path) -> None:
    root, bundle = registered
    rest = flink_services["rest_url"]
    run = ChaosRun(kafka_bootstrap, fresh_topic, root, bundle, tmp_path)
    reference = run.reference()
    name = f"chaos-sdk-{uuid.uuid4().hex[:8]}"
    port = free_port()
    try:
        pool = run.command("worker-pool", ["worker-pool", "--port", str(port)])
        wait_for(lambda: "serving at" in pool.output(), 120, "the worker pool serves", alive=pool.exited)
        job = run.stream("flink", name, (f"--flink_worker_pool=127.0.0.1:{port}",))
        alive = lambda: job.exited() or pool.exited()  # noqa: E731
        wait_for(lambda: any(j["name"] == name and j["state"] == "RUNNING" for j in flink_jobs(rest, name)),
                 WAIT_S, "the Flink job is running", every_s=2, alive=alive)
        jid = flink_job(rest, name)["jid"]
        run.replay_in_background(SPEED)
        wait_for(lambda: bool(run.predictions()) and flink_checkpoints(rest, jid)["counts"]["completed"] >= 1,
                 WAIT_S, "predictions flow and a checkpoint is complete", every_s=2, alive=alive)
        workers = _workers(pool.proc.pid)
        assert workers, "the pool started no worker"
        killed_at = time.time()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        replaced_s = wait_for(lambda: bool(set(_workers(pool.proc.pid)) - set(workers)), WAIT_S,
                              "the pool started a new worker", alive=alive)
        running_s = wait_for(lambda: flink_job(rest, name)["state"] == "RUNNING" and
                             (flink_checkpoints(rest, jid).get("latest") or {}).get("restored"),
                             WAIT_S, "the job restored from a checkpoint and runs", alive=alive)
        wait_for(lambda: run.first_prediction_after(killed_at * 1000) is not None, WAIT_S,
                 "a prediction was made after the kill", every_s=2, alive=alive)
        first_after_s = run.first_prediction_after(killed_at * 1000)
        wait_for(run.replay_done, WAIT_S, "the replay finished", alive=alive)
        all_in_s = wait_for(run.all_arrived(reference), WAIT_S, "every prediction arrived", every_s=2, alive=alive)
        state, restored = restore_outcome(rest, name, jid)
        rss = {"stream": rss_mb(job.proc.pid), "worker_pool": rss_mb(pool.proc.pid)}
    finally:
        run.stop_all()
        cancel_flink_jobs(rest, name)

    assert_restored_from_checkpoint(state, restored)
    counts = run.check_nothing_lost(reference)
    print(f"\nSDK worker killed ({len(workers)} process(es)): a new worker {replaced_s:.1f} s after the kill; the "
          f"job ran again, restored from checkpoint {restored['id']}, {running_s:.1f} s after that; first "
          f"prediction {first_after_s:.1f} s after the kill; all {counts['keys']} predictions {all_in_s:.1f} s "
          f"after the replay ended; counts {counts}; RSS MB {rss}")
