"""RowwiseRidge: Ridge's fit, and a row's prediction the same to the last bit in any call."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from ml.rowwise_ridge import RowwiseRidge


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(207 * 24, 83)) * rng.uniform(0.1, 60.0, size=83)).astype(np.float32)
    y = x @ rng.normal(size=83).astype(np.float32) + rng.normal(size=len(x)).astype(np.float32)
    return x, y


def test_it_fits_as_ridge_and_predicts_what_ridge_predicts(rows) -> None:
    x, y = rows
    mine, theirs = RowwiseRidge(alpha=10.0).fit(x, y), Ridge(alpha=10.0).fit(x, y)
    np.testing.assert_array_equal(mine.coef_, theirs.coef_)
    assert mine.intercept_ == theirs.intercept_
    predicted = mine.predict(x)
    assert predicted.dtype == np.float64 and predicted.shape == (len(x),)
    np.testing.assert_allclose(predicted, theirs.predict(x.astype(np.float64)), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("size", [1, 2, 7, 207, 3 * 207, 16 * 207 + 5])
def test_a_rows_prediction_does_not_depend_on_the_rows_beside_it(rows, size) -> None:
    x, y = rows
    model = RowwiseRidge(alpha=10.0).fit(x, y)
    whole = model.predict(x)
    for start in (0, 1, 3, 207, len(x) - size):
        np.testing.assert_array_equal(model.predict(x[start : start + size]), whole[start : start + size])
    order = np.random.default_rng(size).permutation(len(x))
    np.testing.assert_array_equal(model.predict(x[order]), whole[order])
    np.testing.assert_array_equal(model.predict(np.asfortranarray(x[:size])), whole[:size])


def test_several_targets_predict_as_ridge_predicts_them(rows) -> None:
    x, y = rows
    targets = np.stack([y, -2 * y + 1], axis=1)
    mine, theirs = RowwiseRidge(alpha=1.0).fit(x, targets), Ridge(alpha=1.0).fit(x, targets)
    both = mine.predict(x[:50])
    assert both.shape == (50, 2)
    np.testing.assert_allclose(both, theirs.predict(x[:50].astype(np.float64)), rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(mine.predict(x[7:9]), both[7:9])


def test_it_refuses_what_ridge_refuses(rows) -> None:
    x, y = rows
    model = RowwiseRidge().fit(x, y)
    bad = x[:3].copy()
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(bad)
    with pytest.raises(ValueError, match="X has 82 features, but RowwiseRidge is expecting 83 features as input"):
        model.predict(x[:3, :82])
