"""The streaming pipeline end to end on the real Kafka, on Prism and on the local Flink cluster.

Three hours of METR-LA (all 207 sensors) with injected bad records are replayed
into a fresh raw topic; the job runs until every sensor x step x horizon of the
model has a prediction. Then:

- counts add up: raw records = validated events + dead letters;
- after de-duplication by key, every (sensor, step, horizon) with a full
  12-step history has exactly one prediction;
- those predictions equal the batch backfill's for the same readings within 1e-6.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.runner import PipelineState
from small_models import register_ridge_bundle
from topic_contents import read_all, record_count

from kafka_client import producer_config
from ml.dataset import STEP_MS, VAL_END_MS, load_metrla, network_sensor_ids
from ml.features import HISTORY_STEPS, HORIZONS_MIN
from ml.registry import ModelBundle
from pipelines.batch_cli import run as run_batch
from pipelines.replay import replay
from pipelines.streaming import StreamingConfig, build_pipeline
from runners.flink_jobs import cancel_flink_jobs
from runners.presets import pipeline_options
from schemas.codec import AvroCodec
from schemas.topics import TopicSettings

SENSORS = 8
HOURS = 3
START_MS = VAL_END_MS - 6 * 3600 * 1000  # a validation-period morning the model never trained on
END_MS = START_MS + HOURS * 3600 * 1000
FILE_WAIT_S = 90  # how long to wait for window files once every prediction has arrived
# Flink checkpoints every second here, so that a checkpoint is what finishes the last bundle of each stage:
# unless the preset finishes bundles before checkpointing, Beam's Flink operators keep the outputs of such a
# bundle buffered until their next input, i.e. for good once the replay has been read (no window files, or
# no predictions at all when it hits the partition listing).
RUNNER_ARGS = {"prism": [], "flink": ["--checkpointing_interval=1000"],
               # Scale-out: both slots of the local cluster; the shard keys spread over them.
               "flink-parallelism-2": ["--checkpointing_interval=1000", "--parallelism=2"]}


def iso(ms: int) -> str:
    return str(np.datetime64(ms, "ms"))


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[str, ModelBundle]:
    """A small real model (ridge on the first 8 sensors' first two days), registered."""
    root = str(tmp_path_factory.mktemp("registry"))
    bundle = register_ridge_bundle(root, SENSORS)
    return root, bundle


@pytest.fixture(scope="module")
def batch_predictions(registered, tmp_path_factory) -> dict[tuple, tuple]:
    """The batch backfill over the same hours: key -> (predicted, lower, upper, congestion)."""
    root, _ = registered
    out = tmp_path_factory.mktemp("backfill")
    assert run_batch(["backfill", "--registry", root, "--start", iso(START_MS), "--end", iso(END_MS),
                      "--output", str(out)]) == 0
    table = pq.read_table(out / "predictions").to_pylist()
    return {_key(r): _values(r) for r in table}


def _file_steps(directory: Path) -> set[int]:
    """The steps (event times) the Parquet files in ``directory`` hold predictions of."""
    return {int(t) for file in directory.glob("*.parquet") for t in pq.read_table(file, columns=["event_time"])
            .column("event_time").to_pylist()}


def _closed_steps(got: dict[tuple, list[tuple]]) -> set[int]:
    """The steps of ``got`` whose file window (an hour) has closed, so that their files are due.

    The watermark at the file grouping trails the newest step: the aggregation holds it by its lateness and
    grace, and the network history emits a step once the next one's window has passed.
    """
    cfg = StreamingConfig
    span_ms = cfg.file_window_s * 1000
    steps = {key[1] for key in got}
    watermark = max(steps, default=0) - (cfg.allowed_lateness_s + cfg.lateness_grace_s) * 1000
    return {step for step in steps if (step // span_ms + 1) * span_ms <= watermark}


def _key(record: dict) -> tuple:
    event_time = record["event_time"]
    if not isinstance(event_time, int):
        event_time = int(event_time.timestamp() * 1000)
    return record["sensor_id"], event_time, record["horizon_min"]


def _values(record: dict) -> tuple:
    return (record["predicted_speed_mph"], record["lower_mph"], record["upper_mph"], record["congestion"])


def _topics(fresh_topic) -> TopicSettings:
    names = {field: fresh_topic(f"stream-{field}", partitions=4)
             for field in ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "incidents",
                           "scores")}
    return TopicSettings(**names)


def _ended(result) -> list[str]:
    """The job's state, polled: a streaming job that is no longer running has failed this test.

    (Not ``wait_until_finish()``: Prism ends its job message stream with DEADLINE_EXCEEDED after
    about 5 minutes, which that call reports as a failure of a job that is still running.)
    """
    try:
        state = str(result.state)
    except Exception:  # noqa: BLE001 - a state the job service cannot tell right now: poll again
        return []
    return [f"the job ended in state {state}"] if PipelineState.is_terminal(state) else []


def _settled(predictions: dict[tuple, Any]) -> set[tuple]:
    """The prediction keys whose target is an hour or more before the replay's end (the watermark passed it)."""
    return {k for k in predictions if k[1] + k[2] * 60_000 < END_MS - 3600 * 1000}


def _expected_keys(bundle: ModelBundle, data_times: np.ndarray) -> set[tuple]:
    steps = [int(t) for t in data_times[HISTORY_STEPS - 1:]]
    return {(s, t, h) for s in bundle.context.sensor_ids for t in steps for h in HORIZONS_MIN}


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["prism", pytest.param("flink", marks=pytest.mark.flink),
                                     pytest.param("flink-parallelism-2", marks=pytest.mark.flink)])
def test_streaming_predictions_are_complete_and_equal_the_batch_ones(
    variant: str, request, registered, batch_predictions, kafka_bootstrap, fresh_topic, platform_settings,
    tmp_path: Path,
) -> None:
    runner = variant.split("-")[0]
    if runner == "flink":
        request.getfixturevalue("flink_services")
    root, bundle = registered
    topics = _topics(fresh_topic)
    sent = replay(None, producer_config(kafka_bootstrap), topics.raw, speed=float("inf"), start_ms=START_MS,
                  end_ms=END_MS, inject_bad=0.01, seed=7, progress=False)
    times = load_metrla().between(START_MS, END_MS).times_ms
    expected = _expected_keys(bundle, times)

    job_name = f"test-stream-{uuid.uuid4().hex[:8]}"
    cfg = StreamingConfig(bootstrap_servers=kafka_bootstrap, topics=topics, sensor_ids=bundle.context.sensor_ids,
                          registry=root, known_sensor_ids=network_sensor_ids(), output=str(tmp_path / "out"),
                          group_id=job_name, start="earliest")
    args = [f"--job_name={job_name}", *RUNNER_ARGS[variant]]
    pipeline = beam.Pipeline(options=pipeline_options(runner, True, args, platform_settings))
    build_pipeline(pipeline, cfg)
    result = pipeline.run()
    failure: list[str] = []
    codec, score_codec = AvroCodec("prediction"), AvroCodec("score")
    deadline = time.monotonic() + 420
    got: dict[tuple, list[tuple]] = {}
    scored: Counter = Counter()
    complete_since: float | None = None
    try:
        while time.monotonic() < deadline:
            got = {}
            for message in read_all(kafka_bootstrap, topics.predictions):
                record = codec.decode(message.value())
                got.setdefault(_key(record), []).append(_values(record))
            scored = Counter(_key(score_codec.decode(m.value())) for m in read_all(kafka_bootstrap, topics.scores))
            # Files are written as their hours close: every step of an hour before the newest step's.
            files_written = _file_steps(tmp_path / "out" / "predictions") >= _closed_steps(got)
            complete = (expected <= set(got) and _settled(got) <= set(scored)
                        and record_count(kafka_bootstrap, topics.dead_letters) >= sent.bad_total)
            complete_since = (complete_since or time.monotonic()) if complete else None
            failure += _ended(result)
            if failure or (complete and (files_written or time.monotonic() - complete_since > FILE_WAIT_S)):
                break
            time.sleep(3)
    finally:
        result.cancel()
        if runner == "flink":
            cancel_flink_jobs(platform_settings.flink_rest_url, job_name)

    assert not failure, f"the streaming job failed: {failure[0]}"
    missing = expected - set(got)
    assert not missing, f"{len(missing)} of {len(expected)} predictions never arrived, e.g. {sorted(missing)[:3]}"
    # Scoring runs on every runner: each prediction whose target settled long before the replay's end has
    # exactly one score (tests/pipelines/test_streaming_scoring.py checks the values on Prism).
    unscored = sorted(_settled(got) - set(scored))
    assert not unscored, f"{len(unscored)} of {len(_settled(got))} settled predictions have no score: {unscored[:5]}"
    assert set(scored) <= set(got) and max(scored.values()) == 1, [k for k, n in scored.items() if n > 1][:3]
    # Counts add up: every raw record is a validated event or a dead letter (none twice on a clean run).
    raw = record_count(kafka_bootstrap, topics.raw)
    events = read_all(kafka_bootstrap, topics.events)
    event_keys = Counter((m.key(), AvroCodec("traffic_event").decode(m.value())["event_time"]) for m in events)
    dead = record_count(kafka_bootstrap, topics.dead_letters)
    assert raw == sent.events
    twice = sorted(key for key, count in event_keys.items() if count > 1)
    assert not twice, f"{len(twice)} validated events were published more than once, e.g. {twice[:3]}"
    assert raw == len(events) + dead, (raw, len(events), dead)
    assert dead == sent.bad_total  # every injected bad record, duplicates included, is a dead letter
    # One prediction per key once de-duplicated, equal to the batch pipeline's within 1e-6.
    assert set(batch_predictions) == expected
    worst = 0.0
    for key in expected:
        versions = set(got[key])
        assert len(versions) == 1, f"{key} has differing duplicates {versions}"
        (stream,) = versions
        batch = batch_predictions[key]
        assert stream[3] == batch[3], key
        worst = max(worst, *(abs(a - b) for a, b in zip(stream[:3], batch[:3], strict=True)))
    assert worst <= 1e-6
    # The windowed Parquet files of a step (its on-time pane and any later pane: records behind the watermark
    # go to a later pane's file instead of being dropped) hold exactly the topic's predictions of that step, each
    # once, with the topic's values; no step is in two windows' files and no prediction in two files. Every step
    # of an hour before the newest step's is in them (the last hour's window is still open when the job is
    # cancelled: it has no file yet).
    files = sorted((tmp_path / "out" / "predictions").glob("*.parquet"))
    assert files, "no prediction Parquet files were written"
    by_step: dict[int, set[tuple]] = {}
    for key in got:
        by_step.setdefault(key[1], set()).add(key)
    windows: dict[str, Counter] = {}
    everywhere: Counter = Counter()
    for file in files:
        rows = pq.read_table(file).to_pylist()  # an on-time pane may be empty when all its records came late
        window = re.sub(r"-pane\d+$", "", file.stem)
        keys = Counter(_key(row) for row in rows)
        windows.setdefault(window, Counter()).update(keys)
        everywhere.update(keys)
        for row in rows:
            assert _values(row) in got[_key(row)], (file.name, _key(row))
    assert max(everywhere.values()) == 1, [k for k, n in everywhere.items() if n > 1][:3]
    written: dict[int, str] = {}
    for window, keys in windows.items():
        if not keys:  # only an empty on-time pane so far: its records came late, their pane was not written yet
            continue
        steps = {key[1] for key in keys}
        for step in steps:
            assert step not in written, f"step {step} is in {written.get(step)} and {window}"
            written[step] = window
        assert set(keys) == set().union(*(by_step.get(step, set()) for step in steps)), window
    print(f"\n{len(files)} prediction files cover {len(written)} of {len(by_step)} steps")
    missing_steps = sorted(_closed_steps(got) - set(written))
    assert not missing_steps, f"{len(missing_steps)} steps of closed hours are in no file, e.g. {missing_steps[:3]}"
    # The aggregate files keep each window's final panes (transforms/panes.py): no EARLY row, and one row per
    # sensor and window that is not a LATE one (the topic keeps every pane).
    aggregate_rows = [row for file in (tmp_path / "out" / "aggregates").glob("*.parquet")
                      for row in pq.read_table(file, columns=["sensor_id", "window_start", "pane_timing"]).to_pylist()]
    assert aggregate_rows, "no aggregate Parquet files were written"
    assert "EARLY" not in {row["pane_timing"] for row in aggregate_rows}
    final = Counter((row["sensor_id"], row["window_start"]) for row in aggregate_rows if row["pane_timing"] != "LATE")
    assert max(final.values()) == 1, [key for key, n in final.items() if n > 1][:3]
    windows = {int(start) for _, start in final}
    assert _closed_steps(got) <= windows, sorted(_closed_steps(got) - windows)[:3]  # every closed hour's windows


PROMPT_WAIT_S = 90  # at real-time speed the next step comes 300 s later: waiting for it would fail this


def _complete_steps(bootstrap: str, topic: str, per_step: int) -> set[int]:
    """The steps whose predictions (every sensor x horizon) are all on ``topic``."""
    codec = AvroCodec("prediction")
    seen: dict[int, set[tuple]] = {}
    for message in read_all(bootstrap, topic):
        record = codec.decode(message.value())
        seen.setdefault(_key(record)[1], set()).add((record["sensor_id"], record["horizon_min"]))
    return {step for step, keys in seen.items() if len(keys) == per_step}


def _wait_for_step(step: int, timeout_s: float, bootstrap: str, topic: str, per_step: int, result) -> list[str]:
    """Polls until ``step`` is predicted; returns why it was not (empty when it was)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if step in _complete_steps(bootstrap, topic, per_step):
            return []
        failure = _ended(result)
        if failure:
            return failure
        time.sleep(2)
    return [f"step {iso(step)} was not predicted within {timeout_s:.0f} s"]


@pytest.fixture(scope="module")
def registered_network(tmp_path_factory) -> tuple[str, ModelBundle]:
    """A small real model of the whole network (207 sensors), registered."""
    root = str(tmp_path_factory.mktemp("registry-network"))
    return root, register_ridge_bundle(root, len(network_sensor_ids()), days=1)


@pytest.mark.integration
@pytest.mark.parametrize("runner", ["prism", pytest.param("flink", marks=pytest.mark.flink)])
def test_a_paced_steps_predictions_do_not_wait_for_the_next_step(
    runner: str, request, registered_network, kafka_bootstrap, fresh_topic, platform_settings
) -> None:
    """Caught up, the job gets one more step and predicts it with nothing after it in the topic.

    On Prism a timer left set at the previous step's end once held the new step's aggregates
    back until later steps moved the watermark: predictions came a step late. The whole network
    is needed to see it (this test failed so before the fix; with the 8-sensor model it passed).
    """
    if runner == "flink":
        request.getfixturevalue("flink_services")
    root, bundle = registered_network
    topics = _topics(fresh_topic)
    times = [int(t) for t in load_metrla().between(START_MS, START_MS + 2 * 3600 * 1000 + STEP_MS).times_ms]
    caught_up_at, paced = times[-2], times[-1]
    send = producer_config(kafka_bootstrap)
    replay(None, send, topics.raw, speed=float("inf"), start_ms=START_MS, end_ms=paced, progress=False)
    job_name = f"test-prompt-{uuid.uuid4().hex[:8]}"
    cfg = StreamingConfig(bootstrap_servers=kafka_bootstrap, topics=topics, sensor_ids=bundle.context.sensor_ids,
                          registry=root, known_sensor_ids=network_sensor_ids(), group_id=job_name, start="earliest")
    pipeline = beam.Pipeline(options=pipeline_options(
        runner, True, [f"--job_name={job_name}", *RUNNER_ARGS[runner]], platform_settings))
    build_pipeline(pipeline, cfg)
    result = pipeline.run()
    per_step = len(bundle.context.sensor_ids) * len(HORIZONS_MIN)
    try:
        failure = _wait_for_step(caught_up_at, 420, kafka_bootstrap, topics.predictions, per_step, result)
        assert not failure, f"the job did not catch up: {failure[0]}"
        replay(None, send, topics.raw, speed=float("inf"), start_ms=paced, end_ms=paced + STEP_MS, progress=False)
        failure = _wait_for_step(paced, PROMPT_WAIT_S, kafka_bootstrap, topics.predictions, per_step, result)
    finally:
        result.cancel()
        if runner == "flink":
            cancel_flink_jobs(platform_settings.flink_rest_url, job_name)
    assert not failure, f"with no later readings, {failure[0]}"
