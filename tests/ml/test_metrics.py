"""Masked metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np

from ml.metrics import interval_coverage, interval_width, masked_mae, masked_mape, masked_rmse, scores

Y = np.array([60.0, 0.0, 40.0, np.nan, 20.0])
YHAT = np.array([57.0, 99.0, 44.0, 10.0, 20.0])


def test_masked_mae_ignores_zero_and_nan_targets() -> None:
    assert masked_mae(Y, YHAT) == (3 + 4 + 0) / 3


def test_masked_rmse() -> None:
    assert math.isclose(masked_rmse(Y, YHAT), math.sqrt((9 + 16 + 0) / 3))


def test_masked_mape_in_percent() -> None:
    assert math.isclose(masked_mape(Y, YHAT), 100 * (3 / 60 + 4 / 40 + 0) / 3)


def test_interval_coverage_and_width() -> None:
    lower = np.array([55.0, 0.0, 41.0, 0.0, 20.0])
    upper = np.array([65.0, 1.0, 50.0, 1.0, 30.0])
    assert interval_coverage(Y, lower, upper) == 2 / 3  # 40 is below 41
    assert interval_width(Y, lower, upper) == (10 + 9 + 10) / 3


def test_no_observed_target_gives_nan() -> None:
    assert math.isnan(masked_mae(np.zeros(3), np.ones(3)))


def test_scores_counts_scored_targets() -> None:
    out = scores(Y, YHAT, YHAT - 5, YHAT + 5)
    assert out["n"] == 3 and out["coverage"] == 1.0 and out["width"] == 10.0
