"""A small, fast real model: per-horizon ridge on the change from the last reading, with 90% intervals.

Not a training candidate (``traffic train`` selects among ``ml.models``); it is the model that
tests and benchmarks fit in seconds on a slice of METR-LA when they need a registered bundle.
"""

from __future__ import annotations

import numpy as np

from ml.conformal import fit_binned_conformal
from ml.dataset import MetrLA
from ml.features import FEATURE_NAMES, HORIZONS_MIN, RIDGE_FEATURE_NAMES, fit_context
from ml.registry import ModelBundle
from ml.rowwise_ridge import RowwiseRidge
from ml.training_set import examples

__all__ = ["fit_residual_ridge"]

# Every feature but the network ridge's columns (NaN in a context fitted on less than two training days, and the
# benchmarks that fit this model compare runs across versions).
_READS = tuple(n for n in FEATURE_NAMES if n not in RIDGE_FEATURE_NAMES)


def fit_residual_ridge(data: MetrLA, alpha: float = 10.0, stride: int = 2, min_bin_rows: int = 100,
                       adjacency: np.ndarray | None = None) -> ModelBundle:
    """Fit on ``data``'s training windows (every ``stride``-th); intervals are calibrated on the same rows.

    ``adjacency`` is the road graph of ``data``'s sensors (default: METR-LA's).
    """
    ctx = fit_context(data, adjacency)
    x, y, _ = examples(data, ctx, "train", stride=stride)
    last = x[:, FEATURE_NAMES.index("speed_last")].astype(np.float64)
    # float64 rows: the ridge solves in its rows' dtype, and the benchmarks compare runs with this fit across versions.
    x = x[:, [FEATURE_NAMES.index(n) for n in _READS]].astype(np.float64)
    estimators, intervals = {}, {}
    for j, h in enumerate(HORIZONS_MIN):
        ok = np.isfinite(y[:, j])
        estimators[h] = RowwiseRidge(alpha=alpha).fit(x[ok], y[ok, j] - last[ok])
        intervals[h] = fit_binned_conformal(y[:, j], last + estimators[h].predict(x), 0.9, min_bin_rows=min_bin_rows)
    return ModelBundle(estimators, dict.fromkeys(HORIZONS_MIN, "speed_last"), intervals, ctx,
                       model_names=dict.fromkeys(HORIZONS_MIN, "ridge"),
                       feature_columns=dict.fromkeys(HORIZONS_MIN, _READS))
