"""A small real model for pipeline tests: ridge on the first sensors' first days, calibrated, registered.

Shared by the batch, streaming and Forecast tests (importable because tests/ holds the root conftest).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge

from ml.conformal import fit_binned_conformal
from ml.dataset import load_metrla
from ml.features import FEATURE_NAMES, HORIZONS_MIN, fit_context
from ml.registry import ModelBundle, ModelRegistry
from ml.training_set import examples

__all__ = ["register_ridge_bundle"]

DAY_MS = 24 * 3600 * 1000


def register_ridge_bundle(root: str, n_sensors: int, days: int = 2) -> ModelBundle:
    """Fit per-horizon ridge models on residuals to the last reading, calibrate 90% intervals, register."""
    data = load_metrla()
    data = data.only(data.sensor_ids[:n_sensors]).between(None, int(data.times_ms[0]) + days * DAY_MS)
    ctx = fit_context(data)
    x, y, _ = examples(data, ctx, "train", stride=2)
    last = x[:, FEATURE_NAMES.index("speed_last")].astype(np.float64)
    estimators, intervals = {}, {}
    for j, h in enumerate(HORIZONS_MIN):
        ok = np.isfinite(y[:, j])
        estimators[h] = Ridge(alpha=10.0).fit(x[ok], y[ok, j] - last[ok])
        intervals[h] = fit_binned_conformal(y[:, j], last + estimators[h].predict(x), 0.9, min_bin_rows=100)
    bundle = ModelBundle(estimators, dict.fromkeys(HORIZONS_MIN, "speed_last"), intervals, ctx)
    ModelRegistry(root).register(bundle)
    return bundle
