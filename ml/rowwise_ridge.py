"""A ridge regression whose forecast of a row never depends on the rows predicted with it.

scikit-learn's linear models predict with a BLAS matrix-vector product. Its kernels sum a row in an order
that depends on how many rows share the call and where the row sits in it: about 4e-14 mph apart in float64,
1e-5 in float32. The streaming job and the backfill predict a catch-up's steps in one call, grouped as the
runner batches them, which differs from run to run; with BLAS sums two runs over the same data would differ
in the last bits. ``RowwiseRidge`` fits as ``Ridge`` does and predicts every row on its own, in float64, with
numpy's sum along the row, so a row gives the same forecast in any call.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["RowwiseRidge"]


class RowwiseRidge(Ridge):
    """``sklearn.linear_model.Ridge`` with row-by-row predictions (see the module's docstring)."""

    def predict(self, X) -> np.ndarray:  # noqa: N803 - scikit-learn's argument name
        check_is_fitted(self)
        # Ridge.predict's own checks (NaN, infinity, the number of features), rows as C-ordered float64.
        x = validate_data(self, X, reset=False, dtype=np.float64, order="C")
        coef = np.atleast_2d(np.asarray(self.coef_, dtype=np.float64))
        sums = np.stack([np.multiply(x, c).sum(axis=1) for c in coef], axis=1) + np.asarray(self.intercept_, np.float64)
        return sums[:, 0] if np.ndim(self.coef_) == 1 else sums
