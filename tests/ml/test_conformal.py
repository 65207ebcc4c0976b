"""Binned and scaled (normalised) split-conformal intervals: coverage, adaptivity, round trips."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from ml.conformal import (
    BinnedConformal,
    ScaledConformal,
    fit_binned_conformal,
    fit_scaled_conformal,
    intervals_from_dict,
    scale_inputs,
)
from ml.exceptions import MLError


def _heteroscedastic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x[:, 0] in {0, 1} (calm / congested) sets the noise scale; the forecast alone does not reveal it."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.integers(0, 2, n), rng.uniform(0, 1, n)]).astype(np.float32)
    yhat = rng.uniform(20, 70, n)
    y = yhat + rng.normal(0, 1 + 7 * x[:, 0], n)
    return x, yhat, y


@pytest.fixture(scope="module")
def scale_model() -> HistGradientBoostingRegressor:
    x, yhat, y = _heteroscedastic(20_000, 0)
    model = HistGradientBoostingRegressor(loss="absolute_error", max_iter=30, random_state=0)
    return model.fit(scale_inputs(x, yhat), np.abs(y - yhat))


def test_scaled_intervals_cover_and_adapt_where_binned_cannot(scale_model) -> None:
    x_cal, f_cal, y_cal = _heteroscedastic(20_000, 1)
    x, f, y = _heteroscedastic(40_000, 2)
    scaled = fit_scaled_conformal(y_cal, f_cal, x_cal, scale_model, coverage=0.9, min_bin_rows=2000)
    binned = fit_binned_conformal(y_cal, f_cal, coverage=0.9, min_bin_rows=2000)
    s_lo, s_hi = scaled.bounds(f, x)
    b_lo, b_hi = binned.bounds(f)
    for lo, hi in ((s_lo, s_hi), (b_lo, b_hi)):
        assert 0.88 <= np.mean((lo <= y) & (y <= hi)) <= 0.92
    calm = x[:, 0] == 0
    for rows in (calm, ~calm):  # the scaled intervals hold in each state; the binned ones miss one of them
        assert 0.87 <= np.mean((s_lo[rows] <= y[rows]) & (y[rows] <= s_hi[rows])) <= 0.93
    assert np.mean((b_lo[~calm] <= y[~calm]) & (y[~calm] <= b_hi[~calm])) < 0.85
    assert np.mean(s_hi - s_lo) < 0.9 * np.mean(b_hi - b_lo)
    assert np.mean((s_hi - s_lo)[calm]) < 0.5 * np.mean((s_hi - s_lo)[~calm])


def test_interval_parameters_round_trip_through_dicts(scale_model) -> None:
    x, f, y = _heteroscedastic(5_000, 3)
    scaled = fit_scaled_conformal(y, f, x, scale_model, min_bin_rows=500)
    back = intervals_from_dict(scaled.to_dict(), scale_model)
    assert isinstance(back, ScaledConformal)
    for a, b in zip(scaled.bounds(f, x), back.bounds(f, x), strict=True):
        assert np.array_equal(a, b)
    binned = fit_binned_conformal(y, f, min_bin_rows=500)
    old = {k: v for k, v in binned.to_dict().items() if k != "kind"}  # as stored by the earlier models
    assert isinstance(intervals_from_dict(old), BinnedConformal)


def test_bad_interval_parameters_are_ml_errors(scale_model) -> None:
    with pytest.raises(MLError, match="unknown interval kind"):
        intervals_from_dict({"kind": "magic"})
    with pytest.raises(MLError, match="scale model"):
        intervals_from_dict({"kind": "scaled", "coverage": 0.9, "edges": [], "lower": [-1], "upper": [1]})
