"""RowwiseMLPRegressor: MLPRegressor's fit, and a row's forecast the same to the last bit in any call."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.neural_network import MLPRegressor

from ml import _row_matmul
from ml.rowwise_mlp import RowwiseMLPRegressor, rowwise_matmul

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
