"""One codebase, two modes: the same readings through a batch pipeline (Create) and a streaming one
(TestStream) built from the same spine give the same aggregates and the same network histories,
whatever RawBatches the readings come in.

Both are checked against an independent numpy computation of the expected result, on two hours of
real METR-LA readings (six sensors, a missing reading included) plus a re-sent duplicate and garbage.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to

from schemas.batches import RawBatch
from schemas.codec import AvroCodec
from transforms.spine import TrafficSpine

DATA = Path(__file__).resolve().parents[2] / "data" / "metr-la" / "speed.npz"
FIRST_ROW, STEPS, N_SENSORS, HISTORY = 570, 24, 6, 12
STEP_MS = 300_000
NOW_MS = 1_795_000_000_000


def load_block() -> tuple[list[str], np.ndarray, int]:
    with np.load(DATA) as data:
        speeds = data["speed"][FIRST_ROW : FIRST_ROW + STEPS, :N_SENSORS].astype(np.float64)
        sensors = [str(s) for s in data["sensor_ids"][:N_SENSORS]]
        t0_ms = int(data["timestamps"][FIRST_ROW].astype("datetime64[ms]").astype(np.int64))
    return sensors, speeds, t0_ms


SENSORS, SPEEDS, T0_MS = load_block()
RAW = AvroCodec("raw_reading")


def readings_by_step() -> list[list[bytes]]:
    """Wire-format readings per step, with one re-sent duplicate (step 5) and one garbage record (step 9)."""
    steps = []
    for step in range(STEPS):
        out = []
        for j, sensor in enumerate(SENSORS):
            value = {"sensor_id": sensor, "event_time": T0_MS + step * STEP_MS, "speed_mph": float(SPEEDS[step, j])}
            out.append(RAW.encode(value))
            if step == 5 and j == 2:
                out.append(RAW.encode(value))
        if step == 9:
            out.append(b"\x00\x00\x00\x00\x01garbage")
        steps.append(out)
    return steps


def expected_aggregates() -> list[tuple]:
    rows = []
    for step in range(STEPS):
        for j, sensor in enumerate(SENSORS):
            speed = float(SPEEDS[step, j])
            missing = speed == 0.0
            mean = None if missing else speed
            rows.append((sensor, T0_MS + step * STEP_MS, mean, mean, mean, None if missing else 0.0, 1, int(missing)))
    return rows


def expected_histories() -> list[tuple]:
    matrix = np.where(SPEEDS == 0.0, np.nan, SPEEDS)
    padded = np.vstack([np.full((HISTORY - 1, N_SENSORS), np.nan), matrix])
    return [(T0_MS + step * STEP_MS, comparable(padded[step : step + HISTORY])) for step in range(STEPS)]


def comparable(matrix: np.ndarray) -> tuple:
    return tuple(tuple(None if math.isnan(v) else float(v) for v in row) for row in matrix)


def aggregate_row(a: dict) -> tuple:
    return (
        a["sensor_id"],
        a["window_start"],
        a["mean_speed_mph"],
        a["min_speed_mph"],
        a["max_speed_mph"],
        a["stddev_speed_mph"],
        a["count"],
        a["missing_count"],
    )


def build(raw: beam.PCollection, allowed_lateness_s: int | None, early_firing_count: int | None = None) -> None:
    """The shared chain (the spine both pipelines use); asserts on every output."""
    spine = raw | "Spine" >> TrafficSpine(SENSORS, SENSORS, namespace="test.parity", window_s=300,
                                          history_steps=HISTORY, allowed_lateness_s=allowed_lateness_s,
                                          early_firing_count=early_firing_count)
    on_time = (spine.aggregates | "AggregateRecords" >> beam.FlatMap(lambda b: b.records())
               | "OnTime" >> beam.Filter(lambda a: a["pane_timing"] == "ON_TIME"))
    assert_that(on_time | "AggRows" >> beam.Map(aggregate_row), equal_to(expected_aggregates()), label="Aggregates")
    assert_that(
        spine.snapshots | "HistRows" >> beam.Map(lambda s: (s["step_ms"], comparable(s["speeds"]))),
        equal_to(expected_histories()),
        label="Histories",
    )
    assert_that(  # nothing is late: the only dead letters are the garbage and the duplicate
        spine.dead_letters | "Reasons" >> beam.Map(lambda d: d["reason"]), equal_to(["undecodable", "duplicate"]),
        label="Dead",
    )


def chunks(values: list[bytes], seed: int) -> list[RawBatch]:
    """``values`` cut into RawBatches of random sizes (1 to 40), as polls and file chunks come."""
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(values):
        n = rng.randint(1, 40)
        out.append(RawBatch.of(values[i : i + n]))
        i += n
    return out


def test_batch_pipeline():
    shuffled = [raw for step in readings_by_step() for raw in step]
    random.Random(5).shuffle(shuffled)  # batch input order means nothing
    with test_pipeline.TestPipeline() as p:
        build(p | beam.Create(chunks(shuffled, 5)), allowed_lateness_s=None)


@pytest.mark.parametrize("early_firing_count", [None, 1], ids=["on-time-only", "early-panes"])
def test_streaming_pipeline(early_firing_count):
    stream = test_stream.TestStream().advance_watermark_to(T0_MS / 1000)
    for step, step_readings in enumerate(readings_by_step()):
        stream = stream.add_elements(chunks(step_readings, step)).advance_watermark_to(
            (T0_MS + (step + 1) * STEP_MS) / 1000)
    stream = stream.advance_watermark_to((T0_MS + (STEPS + 2) * STEP_MS) / 1000).advance_watermark_to_infinity()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with test_pipeline.TestPipeline(options=options) as p:
        build(p | stream, allowed_lateness_s=0, early_firing_count=early_firing_count)


def _prism_options(*extra: str) -> PipelineOptions:
    from runners.presets import RunnerPresetError, prism_location

    try:
        location = prism_location()
    except RunnerPresetError as exc:
        pytest.skip(str(exc))
    # As the prism preset: no runner-initiated splits (one bundle per key of a stateful stage at a time).
    flags = [f"--prism_location={location}", "--experiments=disable_prism_server_singleton",
             "--experiments=prism_disable_sdf_split"]
    return PipelineOptions(["--runner=PrismRunner", "--environment_type=LOOPBACK", *flags, *extra])


@pytest.mark.integration
def test_batch_and_streaming_on_prism():
    """The same chain on Beam's portable Prism runner (which holds the watermark for user timers)."""
    shuffled = [raw for step in readings_by_step() for raw in step]
    random.Random(6).shuffle(shuffled)
    with beam.Pipeline(options=_prism_options()) as p:
        build(p | beam.Create(chunks(shuffled, 6)), allowed_lateness_s=None)
    stream = test_stream.TestStream().advance_watermark_to(T0_MS / 1000)
    for step, step_readings in enumerate(readings_by_step()):
        stream = stream.add_elements([RawBatch.of(step_readings)]).advance_watermark_to(
            (T0_MS + (step + 1) * STEP_MS) / 1000)
    with beam.Pipeline(options=_prism_options("--streaming")) as p:
        build(p | stream.advance_watermark_to_infinity(), allowed_lateness_s=0, early_firing_count=1)
