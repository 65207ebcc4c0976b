"""A small real model for pipeline tests: ridge on the first sensors' first days, calibrated, registered.

Shared by the batch, streaming and Forecast tests (importable because tests/ holds the root conftest).
"""

from __future__ import annotations

from ml.dataset import load_metrla
from ml.registry import ModelBundle, ModelRegistry
from ml.residual_ridge import fit_residual_ridge

__all__ = ["register_ridge_bundle"]

DAY_MS = 24 * 3600 * 1000


def register_ridge_bundle(root: str, n_sensors: int, days: int = 2) -> ModelBundle:
    """Fit per-horizon ridge models on residuals to the last reading, calibrate 90% intervals, register."""
    data = load_metrla()
    data = data.only(data.sensor_ids[:n_sensors]).between(None, int(data.times_ms[0]) + days * DAY_MS)
    bundle = fit_residual_ridge(data, alpha=10.0, stride=2)
    ModelRegistry(root).register(bundle)
    return bundle
