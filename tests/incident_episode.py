"""A real congestion episode of METR-LA for the incident tests.

Six sensors connected by road links (a chain from 773869), 2012-03-30
05:00-09:00 UTC (48 steps): one run of congestion that starts at 07:05 and
clears before 09:00. Observed speeds are the readings (0 = missing -> NaN); the
"predictions" are the readings 15/30/60 min later (an oracle forecast from the
real data, a test double of the model's output).
"""

from __future__ import annotations

import numpy as np

from ml.dataset import load_metrla
from ml.road_graph import load_road_links

__all__ = ["HORIZONS", "LINKS", "SENSORS", "STEPS", "STEP_MS", "T0_MS", "episode", "prediction_dicts", "snapshots"]

SENSORS = ("773869", "717573", "761003", "760987", "773904", "773880")
LINKS = load_road_links(SENSORS)
HORIZONS = (15, 30, 60)
STEP_MS = 300_000
T0_MS = int(np.datetime64("2012-03-30T05:00", "ms").astype(np.int64))
STEPS = 48


def episode() -> tuple[np.ndarray, np.ndarray]:
    """observed (STEPS, 6) and predicted (STEPS, 3, 6), NaN where the reading is missing."""
    data = load_metrla().only(list(SENSORS))
    first = int(np.searchsorted(data.times_ms, T0_MS))
    speeds = np.asarray(data.speed, dtype=np.float64)
    speeds = np.where(speeds > 0, speeds, np.nan)
    observed = speeds[first:first + STEPS]
    predicted = np.stack([np.stack([speeds[first + t + h // 5] for h in HORIZONS]) for t in range(STEPS)])
    return observed, predicted


def snapshots(observed: np.ndarray) -> list[dict]:
    """NetworkHistory-like elements: only the newest row matters to the incidents."""
    return [{"step_ms": T0_MS + t * STEP_MS, "speeds": observed[max(0, t - 11):t + 1]} for t in range(STEPS)]


def prediction_dicts(predicted: np.ndarray, t: int) -> list[dict]:
    """PostProcess-like prediction records of step t."""
    return [
        {"sensor_id": s, "event_time": T0_MS + t * STEP_MS, "horizon_min": h,
         "predicted_speed_mph": float(predicted[t, k, j]), "model_version": "oracle-test"}
        for j, s in enumerate(SENSORS) for k, h in enumerate(HORIZONS)
    ]
