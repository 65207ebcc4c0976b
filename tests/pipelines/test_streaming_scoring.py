"""Live scoring in the streaming job on Prism with the real Kafka (and the real PostgreSQL store).

Three hours of real METR-LA readings (8 sensors) are replayed; the job predicts, scores and writes the store.
Every prediction whose target reading arrived long enough before the end of the replay (the watermark has
to pass the target window) gets exactly one score on the scores topic, SCORED with ``error = predicted -
actual`` against the reading computed offline (or MISSING where the reading is 0); no prediction is scored
twice; the store holds the same scores, and the windowed Parquet files agree with the topic.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.runner import PipelineState
from small_models import register_ridge_bundle
from topic_contents import read_all

from kafka_client import producer_config
from ml.dataset import VAL_END_MS, load_metrla, network_sensor_ids
from pipelines.replay import replay
from pipelines.streaming import StreamingConfig, build_pipeline
from runners.presets import pipeline_options
from schemas.codec import AvroCodec
from schemas.topics import TopicSettings
from store.db import connect

pytestmark = pytest.mark.integration

SENSORS = 8
START_MS = VAL_END_MS - 6 * 3600 * 1000
END_MS = START_MS + 3 * 3600 * 1000
SETTLED_BEFORE_MS = END_MS - 3600 * 1000  # targets this early are settled long before the replay's end
FIELDS = ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "scores")


def _key(r: dict) -> tuple:
    return r["sensor_id"], int(r["event_time"]), int(r["horizon_min"]), r["model_version"]


def _stored(dsn: str) -> dict[tuple, float | None]:
    with connect(dsn) as conn:
        return {(r[0], r[1], r[2], r[3]): r[4] for r in conn.execute(
            "SELECT sensor_id, event_time_ms, horizon_min, model_version, error_mph FROM scores")}


def _ended(result) -> str | None:
    """The job's state once it is terminal (a failed job will score nothing more), else None."""
    try:
        state = str(result.state)
    except Exception:  # noqa: BLE001 - a state the job service cannot tell right now: poll again
        return None
    return state if PipelineState.is_terminal(state) else None


def _describe(unscored: set[tuple], predictions: dict[tuple, dict], scores: list[dict],
              reading: dict[tuple, float]) -> str:
    """Every unscored key with its step and target (minutes after the start), horizon, the target's reading and
    how many scores that sensor's target has from other predictions (a failure message says what is missing)."""
    by_target = Counter((s["sensor_id"], int(s["target_time"])) for s in scores)
    rows = []
    for key in sorted(unscored, key=lambda k: (predictions[k]["target_time"], k)):
        target = int(predictions[key]["target_time"])
        rows.append(f"{key[0]} step {(key[1] - START_MS) // 60_000} -> target {(target - START_MS) // 60_000} "
                    f"(+{key[2]} min, model {key[3]}, reading {reading.get((key[0], target))}, "
                    f"{by_target[(key[0], target)]} other scores of that target)")
    return "; ".join(rows[:40]) + (f"; ... {len(rows) - 40} more" if len(rows) > 40 else "")


def test_streaming_scores_every_settled_prediction_once(kafka_bootstrap, fresh_topic, platform_settings, store_dsn,
                                                        tmp_path) -> None:
    root = str(tmp_path / "registry")
    bundle = register_ridge_bundle(root, SENSORS)
    topics = TopicSettings(**{f: fresh_topic(f"score-{f}", partitions=2) for f in FIELDS})
    replay(None, producer_config(kafka_bootstrap), topics.raw, speed=float("inf"), start_ms=START_MS,
           end_ms=END_MS, progress=False)
    data = load_metrla().only(bundle.context.sensor_ids).between(START_MS, END_MS)
    reading = {(s, int(t)): float(data.speed[i, j]) for i, t in enumerate(data.times_ms)
               for j, s in enumerate(data.sensor_ids)}
    job = f"test-score-{uuid.uuid4().hex[:8]}"
    cfg = StreamingConfig(bootstrap_servers=kafka_bootstrap, topics=topics, sensor_ids=bundle.context.sensor_ids,
                          registry=root, known_sensor_ids=network_sensor_ids(), group_id=job, start="earliest",
                          store_dsn=store_dsn, output=str(tmp_path / "out"))
    pipeline = beam.Pipeline(options=pipeline_options("prism", True, [f"--job_name={job}"], platform_settings))
    build_pipeline(pipeline, cfg)
    result = pipeline.run()
    score_codec, prediction_codec = AvroCodec("score"), AvroCodec("prediction")
    try:
        deadline = time.monotonic() + 420
        while True:
            published = [prediction_codec.decode(m.value()) for m in read_all(kafka_bootstrap, topics.predictions)]
            predictions = {_key(r): r for r in published}
            scores = [score_codec.decode(m.value()) for m in read_all(kafka_bootstrap, topics.scores)]
            due = {k for k, p in predictions.items() if p["target_time"] < SETTLED_BEFORE_MS}
            if due and due <= {_key(s) for s in scores}:
                break
            unscored = due - {_key(s) for s in scores}
            assert not (ended := _ended(result)), f"the job ended in state {ended} (see the log above)"
            newest = max([(s["target_time"] - START_MS) // 60_000 for s in scores], default=None)
            assert time.monotonic() < deadline, (
                f"{len(unscored)} of {len(due)} settled predictions have no score: "
                f"{_describe(unscored, predictions, scores, reading)}; newest scored target at minute {newest}")
            time.sleep(3)
        time.sleep(5)  # anything scored twice would show up now
        scores = [score_codec.decode(m.value()) for m in read_all(kafka_bootstrap, topics.scores)]
        deadline = time.monotonic() + 90
        while not list((tmp_path / "out" / "scores").glob("*.parquet")):  # written as their windows close
            assert time.monotonic() < deadline, "no score Parquet file was written"
            time.sleep(2)
        deadline = time.monotonic() + 90
        while not {_key(s) for s in scores} <= set(stored := _stored(store_dsn)):
            assert time.monotonic() < deadline, "the store never got every score of the topic"
            time.sleep(2)
    finally:
        result.cancel()

    counts = Counter(_key(s) for s in scores)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:3]
    assert set(counts) <= set(predictions)
    versions: dict[tuple, set[tuple]] = {}
    for p in published:
        versions.setdefault(_key(p), set()).add((p["predicted_speed_mph"], p["lower_mph"], p["upper_mph"]))
    differing = [k for k, v in versions.items() if len(v) > 1]
    print(f"predictions published with differing values for one key: {len(differing)} of {len(versions)}")
    checked = 0
    for score in scores:
        if score["target_time"] >= SETTLED_BEFORE_MS:
            continue
        actual = reading[(score["sensor_id"], int(score["target_time"]))]
        # The score is of a prediction as published (the topic may hold a key twice: see versions below).
        assert (score["predicted_speed_mph"], score["lower_mph"], score["upper_mph"]) in versions[_key(score)]
        if actual > 0:
            assert score["status"] == "SCORED"
            assert score["actual_speed_mph"] == actual
            assert score["error_mph"] == score["predicted_speed_mph"] - actual
            assert score["inside_interval"] == (score["lower_mph"] <= actual <= score["upper_mph"])
            checked += 1
        else:
            assert score["status"] == "MISSING" and score["error_mph"] is None
    observed_due = sum(1 for k in due if reading[(k[0], int(predictions[k]["target_time"]))] > 0)
    assert checked == observed_due > 0
    assert {_key(s): s["error_mph"] for s in scores} == {k: v for k, v in stored.items() if k in counts}
    assert set(stored) <= set(predictions)
    files = sorted((tmp_path / "out" / "scores").glob("*.parquet"))
    in_files = [r for f in files for r in pq.read_table(f).to_pylist()]
    topic = {_key(s): s for s in scores}
    assert in_files and all(topic[_key(r)]["error_mph"] == r["error_mph"] for r in in_files if _key(r) in topic)
