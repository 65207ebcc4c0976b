"""RowwiseMLPRegressor: MLPRegressor's fit, and a row's forecast the same to the last bit in any call."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.neural_network import MLPRegressor

from ml import _row_matmul
from ml.rowwise_mlp import IndexedOneHotMLPRegressor, RowwiseMLPRegressor, rowwise_matmul

PARAMS = dict(hidden_layer_sizes=(128, 64), max_iter=30, random_state=0)


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4_000, 40)).astype(np.float32)
    y = np.stack([np.tanh(x[:, 0]) + x[:, 1] * x[:, 2], x[:, 3] ** 2, np.sin(x[:, 4])], axis=1).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def fitted(rows) -> tuple[RowwiseMLPRegressor, MLPRegressor]:
    x, y = rows
    return RowwiseMLPRegressor(**PARAMS).fit(x, y), MLPRegressor(**PARAMS).fit(x, y)


def test_it_fits_as_mlp_regressor_and_predicts_what_it_predicts(fitted, rows) -> None:
    mine, theirs = fitted
    for a, b in zip(mine.coefs_ + mine.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # early stopping scores with the same sums
    x = rows[0][:500]
    predicted = mine.predict(x)
    assert predicted.dtype == np.float32 and predicted.shape == (500, 3)
    np.testing.assert_allclose(predicted, theirs.predict(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 12, 207, 3 * 207])
def test_a_row_gets_the_same_forecast_in_any_call(fitted, rows, size) -> None:
    mine, _ = fitted
    x = rows[0][: 16 * 207]
    together = mine.predict(x)
    apart = np.concatenate([mine.predict(x[i:i + size]) for i in range(0, 3 * 207, size)])[: 3 * 207]
    np.testing.assert_array_equal(apart, together[: 3 * 207])
    order = np.random.default_rng(size).permutation(len(x))
    np.testing.assert_array_equal(mine.predict(x[order]), together[order])


def test_a_sparse_input_is_multiplied_by_scipy_and_gives_the_dense_inputs_forecast(fitted, rows) -> None:
    mine, _ = fitted
    x = rows[0][:300]
    np.testing.assert_allclose(mine.predict(sparse.csr_matrix(x)), mine.predict(x), rtol=1e-5, atol=1e-5)
    one = np.concatenate([mine.predict(sparse.csr_matrix(x[i:i + 1])) for i in range(len(x))])
    np.testing.assert_array_equal(one, mine.predict(sparse.csr_matrix(x)))


def test_the_product_sums_each_row_in_one_order() -> None:
    rng = np.random.default_rng(9)
    for dtype in (np.float32, np.float64):
        a, w = rng.normal(size=(50, 33)).astype(dtype), rng.normal(size=(33, 17)).astype(dtype)
        out = rowwise_matmul(a, w)
        assert out.dtype == dtype
        expected = np.zeros((50, 17), dtype=dtype)
        for j in range(33):  # j = 0, 1, ...: one multiplication and one addition at a time
            expected += a[:, j:j + 1] * w[j]
        np.testing.assert_array_equal(out, expected)
    mixed = rowwise_matmul(np.ones((2, 3), np.float32), np.ones((3, 4)))
    assert mixed.dtype == np.float64 and (mixed == 3).all()
    assert rowwise_matmul(np.zeros((0, 3)), np.ones((3, 4))).shape == (0, 4)


def test_shapes_that_do_not_multiply_are_refused() -> None:
    with pytest.raises(ValueError, match="do not multiply"):
        rowwise_matmul(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="do not fit 3 x 5 weights"):
        _row_matmul.matmul(np.ones((2, 3)), np.ones((3, 5)), np.empty((2, 4)), 3, 5, "d")
    with pytest.raises(ValueError, match="kind is"):
        _row_matmul.matmul(np.ones((2, 3)), np.ones((3, 5)), np.empty((2, 5)), 3, 5, "x")


def _one_hot_rows(n: int, seed: int, positions: int = 9) -> tuple[np.ndarray, sparse.csr_matrix, np.ndarray]:
    """(dense columns + the one-hot's position as the last column, the same rows with a sparse one-hot, targets);
    every fifth row has no one-hot (-1 / an all-zero one-hot)."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n, 6)).astype(np.float32)
    at = rng.integers(0, positions, size=n)
    at[::5] = -1
    at[:positions] = np.arange(positions)  # every position is seen
    indexed = np.column_stack([dense, at]).astype(np.float32)
    one_hot = np.zeros((n, positions), np.float32)
    one_hot[at >= 0, at[at >= 0]] = 1.0
    offsets = rng.normal(scale=2.0, size=positions + 1)
    y = np.stack([dense[:, 0] + offsets[at], dense[:, 1] * dense[:, 2], offsets[at] ** 2], axis=1)
    return indexed, sparse.csr_matrix(np.hstack([dense, one_hot])), y


def test_the_indexed_one_hot_perceptron_is_the_sparse_one_hot_perceptron() -> None:
    indexed, one_hot, y = _one_hot_rows(3_000, seed=21)
    params = dict(hidden_layer_sizes=(32, 16), max_iter=8, random_state=3, batch_size=128)
    mine = IndexedOneHotMLPRegressor(**params).fit(indexed, y)
    theirs = RowwiseMLPRegressor(**params).fit(one_hot, y)
    assert mine.n_indexed_ == 9 and mine.coefs_[0].shape == theirs.coefs_[0].shape == (6 + 9, 32)
    assert mine.n_iter_ == theirs.n_iter_
    # The same initial weights and the same updates: only the order of the sums differs.
    for a, b in zip(mine.coefs_ + mine.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(mine.loss_curve_, theirs.loss_curve_, rtol=1e-5)
    # With the same weights the forecasts are equal to the last bit, rows without a one-hot too.
    mine.coefs_ = [c.copy() for c in theirs.coefs_]
    mine.intercepts_ = [c.copy() for c in theirs.intercepts_]
    np.testing.assert_array_equal(mine.predict(indexed), theirs.predict(one_hot))


def test_the_one_hot_gradient_is_the_sparse_products() -> None:
    indexed, one_hot, y = _one_hot_rows(400, seed=22)
    model = IndexedOneHotMLPRegressor(hidden_layer_sizes=(8,), max_iter=1, random_state=0).fit(indexed, y)
    delta = np.random.default_rng(23).normal(size=(400, 8)).astype(np.float32)
    grads, intercepts = [None, None], [None, None]
    model._compute_loss_grad(0, 400.0, [indexed], [delta], grads, intercepts)
    expected = (one_hot.T @ delta + model.alpha * model.coefs_[0]) / 400.0
    np.testing.assert_allclose(grads[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(intercepts[0], delta.sum(0) / 400.0, rtol=1e-5)


@pytest.mark.parametrize("size", [1, 5, 207])
def test_an_indexed_rows_forecast_is_the_same_in_any_call(size) -> None:
    indexed, _, y = _one_hot_rows(1_000, seed=24)
    model = IndexedOneHotMLPRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(indexed, y)
    together = model.predict(indexed[:414])
    apart = np.concatenate([model.predict(indexed[i:i + size]) for i in range(0, 414, size)])[:414]
    np.testing.assert_array_equal(apart, together)
