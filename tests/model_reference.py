"""The batch backfill's answer, for tests that check a streaming job lost nothing: the model on every full step.

A model trained on a few days can forecast above the 85 mph that PostProcess
publishes at most (the overload run's March replay had 119 such of 1.24M), so
the reference is clamped the same way.
"""

from __future__ import annotations

import inspect

import numpy as np

from ml.dataset import load_metrla
from ml.features import HISTORY_STEPS, HORIZONS_MIN, build_features, history_from_speeds
from ml.registry import ModelBundle
from transforms.postprocess import PostProcess, clamp_interval

__all__ = ["PUBLISHED_MAX_MPH", "reference_predictions"]

# The pipelines' PostProcess() clamps what it publishes to [0, this] (the model itself clips at 100 mph).
PUBLISHED_MAX_MPH = inspect.signature(PostProcess).parameters["max_speed_mph"].default


def reference_predictions(bundle: ModelBundle, start_ms: int, end_ms: int,
                          known_from_ms: int | None = None) -> dict[tuple, tuple[float, float, float]]:
    """``(sensor, step_ms, horizon) -> (predicted, lower, upper)`` for every step in [start, end) with a full
    12-step history, clamped as PostProcess publishes it; readings before ``known_from_ms`` count as unknown."""
    data = load_metrla().only(list(bundle.context.sensor_ids)).between(start_ms, end_ms)
    out = {}
    for i in range(HISTORY_STEPS - 1, data.n_steps):
        step_ms = int(data.times_ms[i])
        history = history_from_speeds(data.speed[i - HISTORY_STEPS + 1:i + 1])
        if known_from_ms is not None:
            history[data.times_ms[i - HISTORY_STEPS + 1:i + 1] < known_from_ms] = np.nan
        predicted = bundle.predict(build_features(history, step_ms, bundle.context))
        for h in HORIZONS_MIN:
            for j, sensor_id in enumerate(bundle.context.sensor_ids):
                out[sensor_id, step_ms, h] = clamp_interval(*(float(a[j]) for a in predicted[h]), PUBLISHED_MAX_MPH)
    return out
