"""A multi-layer perceptron whose forecast of a row never depends on the rows predicted with it.

scikit-learn's ``MLPRegressor`` multiplies its dense layers with BLAS. OpenBLAS picks its kernels by the number
of rows, so on some processors a row's product differs in the last bits between a call of one row and a call
of 207 (an AMD EPYC: up to 1.6e-7 mph in the perceptron's forecast). The streaming job and the backfill predict
a catch-up's steps in one call, grouped as the runner batches them, so two runs over the same data could
differ. ``RowwiseMLPRegressor`` fits as ``MLPRegressor`` does and predicts with each dense layer summed row by
row in one order (``ml._row_matmul``). A sparse layer input (the sensor's one-hot, ``ml.neural.SensorIdentity``)
already is: scipy sums a row's stored values in order.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.neural_network import MLPRegressor
from sklearn.neural_network._base import ACTIVATIONS
from sklearn.utils.validation import validate_data

try:
    from ml import _row_matmul
except ImportError as exc:  # a checkout whose C extensions were not compiled
    raise ImportError("ml._row_matmul is not built: run `make setup` (it compiles it; needs a C compiler)") from exc

__all__ = ["RowwiseMLPRegressor", "rowwise_matmul"]


def rowwise_matmul(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``rows @ weights`` with every row summed in one order (float32 stays float32)."""
    kind = "f" if rows.dtype == np.float32 and weights.dtype == np.float32 else "d"
    dtype = np.float32 if kind == "f" else np.float64
    rows = np.ascontiguousarray(rows, dtype=dtype)
    weights = np.ascontiguousarray(weights, dtype=dtype)
    if rows.ndim != 2 or weights.ndim != 2 or rows.shape[1] != weights.shape[0]:
        raise ValueError(f"rows {rows.shape} and weights {weights.shape} do not multiply")
    out = np.empty((rows.shape[0], weights.shape[1]), dtype=dtype)
    _row_matmul.matmul(rows, weights, out, weights.shape[0], weights.shape[1], kind)
    return out


class RowwiseMLPRegressor(MLPRegressor):
    """``MLPRegressor`` whose predictions sum each row's dense products in one order (see the module)."""

    def _forward_pass_fast(self, X, check_input=True):  # noqa: N803 - scikit-learn's names
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        activation = X
        hidden = ACTIVATIONS[self.activation]
        for i in range(self.n_layers_ - 1):
            coef = self.coefs_[i]
            activation = activation @ coef if sparse.issparse(activation) else rowwise_matmul(activation, coef)
            activation += self.intercepts_[i]
            if i != self.n_layers_ - 2:
                hidden(activation)
        ACTIVATIONS[self.out_activation_](activation)
        return activation
