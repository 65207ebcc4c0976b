"""Predictions made by the project's own code for the API's integration and browser tests.

``train_quick_model`` trains with the project's own training code
(``ml.train.train(quick=True)``: candidate models per horizon, selection and
split-conformal calibration on validation days) on strided windows of all 207
sensors built by ``ml.training_set.examples``, and registers the bundle
(``ml.registry``). ``forecast_hours`` runs that registered model over a few
hours of the bundled METR-LA data the way the streaming job does
(``build_features`` -> ``ModelBundle.predict`` -> ``ml.handler.prediction_inputs``)
and turns the rows into Prediction and Alert records with the post-processing
step's own functions. Actual speeds for the same hours become WindowAggregate
records (one reading per 5-minute window). Nothing here is invented.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.dataset import STEP_MS, MetrLA, load_metrla
from ml.features import (
    HISTORY_STEPS,
    build_features,
    fit_context,
    history_from_speeds,
)
from ml.handler import prediction_inputs
from ml.registry import MAX_SPEED_MPH, ModelRegistry
from ml.training_set import examples

__all__ = ["RealRecords", "forecast_hours", "train_quick_model"]


@dataclass(frozen=True)
class RealRecords:
    predictions: list[dict]
    alerts: list[dict]
    aggregates: list[dict]
    model_version: str
    steps_ms: list[int]


def train_quick_model(registry_root: Path, data: MetrLA | None = None, stride: int = 48) -> str:
    """``ml.train.train(quick=True)`` on every sensor's windows (every ``stride``-th); registered; the version."""
    from ml.train import train

    data = data or load_metrla()
    ctx = fit_context(data)
    features = examples(data, ctx, "all", stride=stride)
    bundle, _ = train(features=features, ctx=ctx, quick=True, progress=lambda message: None)
    bundle.metadata["trained_by"] = "tests/api/real_predictions.py: ml.train.train(quick=True), strided windows"
    return ModelRegistry(registry_root).register(bundle)


def forecast_hours(registry_root: Path, first_step_ms: int, n_steps: int, data: MetrLA | None = None) -> RealRecords:
    """Run the registered model over ``n_steps`` 5-minute steps from ``first_step_ms``."""
    from transforms.postprocess import (  # PostProcess's pure functions
        SUDDEN_DROP_MPH,
        to_alerts,
        to_prediction,
    )

    data = data or load_metrla()
    bundle = ModelRegistry(registry_root).load()
    data = data.only(bundle.context.sensor_ids)
    start = int(np.searchsorted(data.times_ms, first_step_ms))
    predictions, alerts, steps = [], [], []
    for t in range(start, start + n_steps):
        history = history_from_speeds(data.speed[t - HISTORY_STEPS + 1 : t + 1])
        step_ms = int(data.times_ms[t])
        features = build_features(history, step_ms, bundle.context)
        rows = prediction_inputs({"step_ms": step_ms, "speeds": history}, bundle.predict(features), bundle)
        processing_ms = step_ms + 60_000
        for row in rows:
            record = to_prediction(row, MAX_SPEED_MPH, bundle.coverage, processing_ms)
            predictions.append(record)
            alerts.extend(to_alerts(record, row.get("current_speed_mph"), SUDDEN_DROP_MPH))
        steps.append(step_ms)
    aggregates = []
    lo, hi = start - HISTORY_STEPS, start + n_steps + 12
    for t in range(lo, hi):
        for j, sensor_id in enumerate(data.sensor_ids):
            speed = float(data.speed[t, j])
            observed = speed > 0
            aggregates.append({
                "sensor_id": sensor_id, "window_start": int(data.times_ms[t]),
                "window_end": int(data.times_ms[t]) + STEP_MS,
                "mean_speed_mph": speed if observed else None, "min_speed_mph": speed if observed else None,
                "max_speed_mph": speed if observed else None, "stddev_speed_mph": 0.0 if observed else None,
                "count": 1, "missing_count": 0 if observed else 1, "pane_timing": "ON_TIME",
            })
    return RealRecords(predictions, alerts, aggregates, bundle.version, steps)
