"""Forecast: NetworkHistory snapshots -> RunInference -> a forecast batch per step, batch and streaming alike."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from small_models import register_ridge_bundle

from ml.dataset import STEP_MS, load_metrla
from ml.features import HORIZONS_MIN, build_features, history_from_speeds
from ml.registry import ModelBundle
from transforms.forecast import Forecast, model_sensor_ids
from transforms.postprocess import PostProcess

N_SENSORS = 5


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> tuple[str, ModelBundle]:
    root = str(tmp_path_factory.mktemp("registry"))
    bundle = register_ridge_bundle(root, N_SENSORS)
    return root, bundle


def make_snapshots(sensor_ids: tuple[str, ...], first_t: int = 600, count: int = 6) -> list[dict]:
    data = load_metrla().only(sensor_ids)
    return [
        {"step_ms": int(data.times_ms[t]), "speeds": history_from_speeds(data.speed[t - 11 : t + 1])}
        for t in range(first_t, first_t + count)
    ]


def expected(snaps: list[dict], bundle: ModelBundle) -> list[tuple]:
    rows = []
    for snap in snaps:
        pred = bundle.predict(build_features(snap["speeds"], snap["step_ms"], bundle.context))
        for i, sensor in enumerate(bundle.context.sensor_ids):
            current = snap["speeds"][-1, i]
            for h in HORIZONS_MIN:
                yhat, lower, upper = (float(a[i]) for a in pred[h])
                rows.append((sensor, snap["step_ms"], h, yhat, lower, upper, bundle.version,
                             None if not np.isfinite(current) else float(current)))
    return rows


def key(row: dict) -> tuple:
    return (row["sensor_id"], row["event_time"], row["horizon_min"], row["predicted_speed_mph"], row["lower_mph"],
            row["upper_mph"], row["model_version"], row["current_speed_mph"])


def test_model_sensor_ids_are_the_models_network(registry) -> None:
    root, bundle = registry
    assert model_sensor_ids(root) == bundle.context.sensor_ids


def test_forecast_emits_bundle_predictions_per_sensor_and_horizon(registry) -> None:
    root, bundle = registry
    snaps = make_snapshots(bundle.context.sensor_ids)
    snaps[2]["speeds"][-1, 1] = np.nan
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        rows = p | beam.Create(snaps) | Forecast(root, max_batch_size=4) | beam.FlatMap(lambda b: b.records())
        assert_that(rows | beam.Map(key), equal_to(expected(snaps, bundle)))


def test_forecast_output_is_postprocess_input(registry) -> None:
    root, bundle = registry
    snaps = make_snapshots(bundle.context.sensor_ids, count=3)
    n = len(snaps) * N_SENSORS * len(HORIZONS_MIN)
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        post = p | beam.Create(snaps) | Forecast(root) | PostProcess(now_ms_fn=lambda: 0)
        predictions = post.predictions | "Records" >> beam.FlatMap(lambda b: b.records())
        assert_that(predictions | "CountPredictions" >> beam.combiners.Count.Globally(), equal_to([n]),
                    label="AllPredictions")
        assert_that(post.dead_letter, equal_to([]), label="NoRejects")
        assert_that(
            predictions | beam.Map(lambda r: (r["target_time"] - r["event_time"]) // 60_000 - r["horizon_min"]),
            equal_to([0] * n), label="TargetTimes",
        )


def test_forecast_in_streaming_mode_with_test_stream(registry) -> None:
    root, bundle = registry
    snaps = make_snapshots(bundle.context.sensor_ids, count=4)
    stream = test_stream.TestStream()
    for snap in snaps:
        stream = stream.add_elements([TimestampedValue(snap, (snap["step_ms"] + STEP_MS) / 1000 - 1e-6)])
        stream = stream.advance_watermark_to((snap["step_ms"] + STEP_MS) / 1000)
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        rows = p | stream | Forecast(root, max_batch_size=2) | beam.FlatMap(lambda b: b.records())
        assert_that(rows | beam.Map(key), equal_to(expected(snaps, bundle)))
