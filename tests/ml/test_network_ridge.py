"""The network ridge: a cross-fitted linear map from every sensor's deviation history to its deviation change."""

from __future__ import annotations

import numpy as np

from ml.dataset import DAY_MS, day_parity
from ml.network_ridge import NetworkRidge, fit_network_ridge, ridge_inputs, ridge_targets


def test_the_inputs_are_the_latest_deviation_and_its_changes_over_3_and_11_steps() -> None:
    dev = np.arange(2 * 12 * 2, dtype=np.float64).reshape(2, 12, 2) ** 2  # (B, K, N)
    inputs = ridge_inputs(dev)
    assert inputs.shape == (2, 6)
    assert np.array_equal(inputs[:, :2], dev[:, -1])
    assert np.array_equal(inputs[:, 2:4], dev[:, -1] - dev[:, -4])
    assert np.array_equal(inputs[:, 4:], dev[:, -1] - dev[:, 0])


def test_targets_are_horizon_major_changes_with_missing_as_no_change() -> None:
    future = np.array([[[3.0, np.nan], [5.0, 7.0]]])  # (B=1, H=2, N=2)
    targets = ridge_targets(future, np.array([[1.0, 2.0]]))
    assert np.array_equal(targets, [[2.0, 0.0, 4.0, 5.0]])


def test_the_folds_are_the_parity_of_the_utc_day() -> None:
    steps = np.array([0, DAY_MS - 1, DAY_MS, 2 * DAY_MS + 5])
    assert day_parity(steps).tolist() == [0, 0, 1, 0]


def _linear_data(seed: int = 0, rows: int = 600, n: int = 2):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(rows, 3 * n)) * rng.uniform(0.5, 4.0, size=3 * n) + rng.normal(size=3 * n)
    weights = rng.normal(size=(3 * n, 3 * n))
    return inputs, weights, rng


def test_a_weak_ridge_recovers_a_linear_map() -> None:
    inputs, weights, _ = _linear_data()
    targets = inputs @ weights + 1.5
    fold = np.arange(len(inputs)) % 2
    ridge = fit_network_ridge(inputs, targets, fold, alpha=1e-6)
    for f in (0, 1, -1):
        out = ridge.predict(inputs, np.full(len(inputs), f))
        assert out.shape == (len(inputs), 3, 2)
        assert np.allclose(out.reshape(len(inputs), -1), targets, atol=1e-6)


def test_a_row_reads_the_fit_of_the_other_half_of_the_days_and_other_rows_the_mean() -> None:
    inputs, _, rng = _linear_data(1)
    fold = np.arange(len(inputs)) % 2
    targets = np.where(fold[:, None] == 0, 10.0, -4.0) + 0.0 * inputs  # each half its own level, nothing to learn
    ridge = fit_network_ridge(inputs, targets, fold, alpha=1e6)  # a strong ridge: the fits are their levels
    probe = rng.normal(size=(3, inputs.shape[1]))
    assert np.allclose(ridge.predict(probe, np.zeros(3, int)), -4.0, atol=0.05)  # day of parity 0 -> the fit of 1
    assert np.allclose(ridge.predict(probe, np.ones(3, int)), 10.0, atol=0.05)
    assert np.allclose(ridge.predict(probe, np.full(3, -1)), 3.0, atol=0.05)
    mixed = ridge.predict(probe, np.array([0, 1, -1]))
    assert np.allclose(mixed[:, 0, 0], [-4.0, 10.0, 3.0], atol=0.05)


def test_no_ridge_without_days_of_both_parities() -> None:
    inputs, weights, _ = _linear_data()
    assert fit_network_ridge(inputs, inputs @ weights, np.zeros(len(inputs), int)) is None


def test_a_constant_input_does_not_break_the_fit() -> None:
    inputs, weights, _ = _linear_data()
    inputs[:, 1] = 7.0  # a sensor that never changed
    ridge = fit_network_ridge(inputs, inputs @ weights, np.arange(len(inputs)) % 2)
    assert np.isfinite(ridge.coef).all() and ridge.scale[1] == 1.0


def test_the_arrays_round_trip_and_an_older_store_has_none() -> None:
    inputs, weights, _ = _linear_data()
    ridge = fit_network_ridge(inputs, inputs @ weights, np.arange(len(inputs)) % 2)
    arrays = {"profile": np.zeros(1), **ridge.to_arrays()}
    back = NetworkRidge.from_arrays(arrays)
    assert list(arrays) == ["profile"]  # its keys are taken out
    assert np.array_equal(back.coef, ridge.coef) and np.array_equal(back.intercept, ridge.intercept)
    assert NetworkRidge.from_arrays({"profile": np.zeros(1)}) is None


def test_no_ridge_for_a_network_larger_than_the_cap() -> None:
    from ml.dataset import STEP_MS, MetrLA
    from ml.features import fit_context
    from ml.network_ridge import MAX_RIDGE_SENSORS, fits_network

    assert fits_network(MAX_RIDGE_SENSORS) and not fits_network(MAX_RIDGE_SENSORS + 1)
    n, steps = MAX_RIDGE_SENSORS + 1, 3 * 288  # three days: a smaller network would get its ridge
    speed = np.random.default_rng(5).uniform(20.0, 70.0, size=(steps, n)).astype(np.float32)
    data = MetrLA(speed, np.arange(steps, dtype=np.int64) * STEP_MS, tuple(f"s{i}" for i in range(n)))
    assert fit_context(data, adjacency=np.zeros((n, n))).ridge is None


def test_a_windows_columns_do_not_depend_on_the_windows_beside_it() -> None:
    n = 207  # METR-LA's size: a product over many rows sums in another order than one over a single row
    inputs, _, rng = _linear_data(4, rows=900, n=n)
    ridge = fit_network_ridge(inputs, inputs @ rng.normal(size=(3 * n, 3 * n)), np.arange(900) % 2)
    probe, fold = inputs[:40], np.array([0, 1, -1, -1] * 10)
    batch = ridge.predict(probe, fold)
    alone = np.concatenate([ridge.predict(probe[b : b + 1], fold[b : b + 1]) for b in range(len(probe))])
    assert np.array_equal(batch, alone)
    assert ridge.predict(probe[:0], fold[:0]).shape == (0, 3, n)
