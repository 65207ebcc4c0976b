"""The streaming benchmark's yardstick does the job's work: same counts, same predictions.

Integration test on the real Kafka: real METR-LA readings (with injected bad
records) go through ``benchmarks/reference_loop.py``; every raw record ends as a
valid event or a dead letter, and every sensor x step x horizon with a full
history gets exactly one prediction, equal to the model run in-process on the
same history (``build_features`` -> ``ModelBundle.predict``). It also does the
job's other work: each prediction is scored once against its target's
aggregate, incidents are published, and every closed file window holds its
aggregates.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from small_models import register_ridge_bundle
from topic_contents import read_all

from kafka_client import producer_config
from ml.dataset import load_metrla, network_sensor_ids
from ml.features import HISTORY_STEPS, build_features, history_from_speeds
from ml.registry import MAX_SPEED_MPH
from pipelines.replay import replay
from schemas.codec import AvroCodec
from schemas.topics import TopicSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.reference_loop import ReferenceLoop  # noqa: E402
from benchmarks.stream_watch import WATCHED_FIELDS, WATCHED_TOPIC_CONFIG, Watcher  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOURS = 2
N_SENSORS = 8


def test_the_reference_loop_counts_add_up_and_predicts_like_the_model(fresh_topic, kafka_bootstrap, tmp_path):
    bundle = register_ridge_bundle(str(tmp_path / "models"), N_SENSORS)
    data = load_metrla().only(list(bundle.context.sensor_ids))
    start_ms = int(data.times_ms[3 * 288])  # a day after the model's training days
    part = data.between(start_ms, start_ms + HOURS * 3600_000)
    topics = TopicSettings(**{f: fresh_topic(f.replace("_", "-"), partitions=2,
                                             config=WATCHED_TOPIC_CONFIG if f in WATCHED_FIELDS else None)
                              for f in ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts",
                                        "scores", "incidents")})
    sent = replay(part, producer_config(kafka_bootstrap), topics.raw, speed=float("inf"), progress=False,
                  inject_bad=0.02, seed=7)
    watcher = Watcher(kafka_bootstrap, topics, N_SENSORS * 3, N_SENSORS)  # the benchmark's yardstick, watching
    try:
        watcher.wait_ready()
        loop = ReferenceLoop(kafka_bootstrap, topics, bundle, network_sensor_ids(), output=str(tmp_path / "out"),
                             file_window_s=1800)
        figures = loop.run(int(part.times_ms[-1]), sent.events, timeout_s=300)
        returned_at = time.time()  # every prediction was delivered (flushed) before this
        seen = watcher.arrivals
        deadline = time.monotonic() + 60
        while len(seen.complete_s) < part.n_steps and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watcher.stop()
    # the watcher saw every step complete (its keys read from the records' leading fields), after the first event
    assert sorted(seen.complete_s) == [int(t) for t in part.times_ms]
    assert seen.ready_s <= seen.first_event_s <= min(seen.complete_s.values())
    # arrivals are the broker's append times, not when the watcher got round to reading them
    assert max(seen.complete_s.values()) <= returned_at

    raw = len(read_all(kafka_bootstrap, topics.raw))
    events = read_all(kafka_bootstrap, topics.events)
    dead = read_all(kafka_bootstrap, topics.dead_letters)
    assert figures.raw == raw == sent.events
    assert raw == len(events) + len(dead)
    assert len(dead) > 0  # the injected bad records, each its own dead letter
    keys = [(e["sensor_id"], e["event_time"]) for e in map(AvroCodec("traffic_event").decode,
                                                             (m.value() for m in events))]
    assert len(keys) == len(set(keys)) == part.n_steps * N_SENSORS

    codec = AvroCodec("prediction")
    predictions = [codec.decode(m.value()) for m in read_all(kafka_bootstrap, topics.predictions)]
    got = {(p["sensor_id"], p["event_time"], p["horizon_min"]): p["predicted_speed_mph"] for p in predictions}
    assert len(got) == len(predictions)  # exactly one per sensor x step x horizon
    full = part.times_ms[HISTORY_STEPS - 1:]
    index = {int(t): i for i, t in enumerate(part.times_ms)}
    for step_ms in full:
        t = index[int(step_ms)]
        history = history_from_speeds(part.speed[t - HISTORY_STEPS + 1: t + 1])
        expected = bundle.predict(build_features(history, int(step_ms), bundle.context))
        for h, (yhat, _lo, _hi) in expected.items():
            for j, sensor in enumerate(bundle.context.sensor_ids):
                value = got[(sensor, int(step_ms), h)]
                assert value == pytest.approx(float(np.clip(yhat[j], 0, MAX_SPEED_MPH)), abs=1e-6), (sensor, step_ms, h)
    # each step predicted once: as many predicted steps as distinct steps, each with every sensor x horizon
    assert figures.steps == len({p["event_time"] for p in predictions}) == part.n_steps
    assert figures.predictions == len(predictions) == part.n_steps * N_SENSORS * len(expected)

    # scores: every prediction whose target window closed, once, against that window's aggregate
    means = {(a["sensor_id"], a["window_start"]): a["mean_speed_mph"] for a in map(
        AvroCodec("window_aggregate").decode, (m.value() for m in read_all(kafka_bootstrap, topics.aggregates)))}
    scores = [AvroCodec("score").decode(m.value()) for m in read_all(kafka_bootstrap, topics.scores)]
    closed = [p for p in predictions if p["target_time"] <= int(part.times_ms[-1])]
    assert figures.scores == len(scores) == len(closed) > 0
    assert {(s["sensor_id"], s["event_time"], s["horizon_min"]) for s in scores} == {
        (p["sensor_id"], p["event_time"], p["horizon_min"]) for p in closed}
    for s in scores:
        actual = means.get((s["sensor_id"], s["target_time"]))
        if actual is not None and actual > 0:
            assert s["status"] == "SCORED" and s["actual_speed_mph"] == actual
        else:
            assert s["status"] == "MISSING" and s["actual_speed_mph"] is None
    incidents = [AvroCodec("incident").decode(m.value()) for m in read_all(kafka_bootstrap, topics.incidents)]
    assert figures.incidents == len(incidents)
    assert all(int(part.times_ms[0]) <= i["updated_at"] <= int(part.times_ms[-1]) for i in incidents)
    # files: each closed half hour (all but the last) holds its aggregates, predictions and scores
    windows = sorted({int(t) - int(t) % 1_800_000 for t in part.times_ms})[:-1]
    files = {name: sorted((tmp_path / "out" / name).glob("part-*.parquet")) for name in
             ("aggregates", "predictions", "scores")}
    assert [len(found) for found in files.values()] == [len(windows)] * 3 and figures.files == 3 * len(windows)
    stored = pq.read_table(files["aggregates"]).to_pylist()
    assert sorted((a["sensor_id"], a["window_start"]) for a in stored) == sorted(
        key for key in means if key[1] < windows[-1] + 1_800_000)
