"""Kafka stopped for 30 s in the middle of a replay, then started again: everything recovers by itself.

Three hours of METR-LA for 6 sensors are replayed at 90x (a step every 3.3 s)
into ``traffic stream`` on Prism, with ``traffic serve`` consuming the outputs.
Once predictions flow, the broker is stopped (``traffic platform down kafka``'s
code path) for 30 s and started again. Nobody restarts the job, the replay or
the API. Asserted: ``/health`` says 503 with Kafka down while the broker is away
and 200 after; the job, the replay and the API keep running; nothing is lost
(see :mod:`chaos_harness`); the API's consumer has read every record of its
topics. The recovery times are printed (and recorded in docs/faults.md).
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from chaos_harness import ChaosRun, rss_mb, wait_for
from topic_contents import record_count

from config.settings import PlatformSettings
from runners.platform import Platform

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SPEED = 90.0  # 36 steps in about 2 minutes
OUTAGE_S = 30.0
WAIT_S = 600.0


def test_a_broker_restart_mid_replay_loses_nothing(registered, kafka_bootstrap, fresh_topic,
                                                    platform_settings: PlatformSettings, tmp_path) -> None:
    root, bundle = registered
    run = ChaosRun(kafka_bootstrap, fresh_topic, root, bundle, tmp_path)
    reference = run.reference()
    platform = Platform(platform_settings)
    api_port = int(os.environ.get("TRAFFIC_API_PORT", "8000"))
    try:
        api = run.command("serve", ["serve", "--port", str(api_port), "--bootstrap", kafka_bootstrap])
        wait_for(lambda: run.health(api_port)[0] == 200, 180, "the API became healthy", alive=api.exited)
        job = run.stream("prism", f"chaos-broker-{uuid.uuid4().hex[:8]}")
        alive = lambda: job.exited() or api.exited()  # noqa: E731
        run.replay_in_background(SPEED)
        wait_for(lambda: bool(run.predictions()), WAIT_S, "the first predictions arrived", every_s=2, alive=alive)

        down_at = time.time()
        platform.down(["kafka"])
        outage_health: list[tuple[int, dict]] = []
        while time.time() - down_at < OUTAGE_S:
            outage_health.append(run.health(api_port))
            time.sleep(3)
        assert platform.up(["kafka"]) == ["kafka"]
        up_at = time.time()
        print(f"\nbroker away for {up_at - down_at:.1f} s (stopped, {OUTAGE_S:.0f} s, restarted until healthy)")

        last: list = []  # the /health answers, to show the last one if it never turns 200

        def healthy_again() -> bool:
            last.append(run.health(api_port))
            return last[-1][0] == 200

        api_back_s = wait_for(healthy_again, 180, "/health was 200 again",
                              alive=lambda: alive() or (str(last[-1]) if len(last) > 170 else None))
        job_back_s = wait_for(lambda: run.first_prediction_after(up_at * 1000) is not None, WAIT_S,
                              "a prediction was made after the broker came back", every_s=2, alive=alive)
        job_back_s = run.first_prediction_after(up_at * 1000)
        wait_for(run.replay_done, WAIT_S, "the replay finished", alive=alive)
        all_in_s = wait_for(run.all_arrived(reference), WAIT_S, "every prediction arrived", every_s=2, alive=alive)
        totals = sum(record_count(kafka_bootstrap, run.topics[t]) for t in ("predictions", "alerts", "aggregates"))
        wait_for(lambda: run.health(api_port)[1]["checks"]["consumer"]["records"] == totals, 120,
                 f"the API consumer read all {totals} records", alive=alive)
        rss = {"stream": rss_mb(job.proc.pid), "api": rss_mb(api.proc.pid)}
        assert job.exited() is None and api.exited() is None
    finally:
        if not platform.is_running("kafka"):
            platform.up(["kafka"])
        run.stop_all()

    during = [body for status, body in outage_health if status == 503]
    assert during, f"/health never said 503 while the broker was down: {outage_health}"
    assert all(b["checks"]["kafka"]["ok"] is False for b in during), during
    assert all(status != 200 for status, _ in outage_health), outage_health
    counts = run.check_nothing_lost(reference)
    report = run.reports[0]
    assert report.undelivered == 0 and not report.interrupted
    print(f"broker restart: API /health 200 again {api_back_s:.1f} s after the broker was back; "
          f"first prediction {job_back_s:.1f} s after; all {counts['keys']} predictions in {all_in_s:.1f} s after "
          f"the replay ended; replay {report.events} records in {report.elapsed_s:.1f} s, none undelivered; "
          f"counts {counts}; RSS MB {rss}")
