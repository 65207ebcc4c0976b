"""A multi-layer perceptron whose forecast of a row never depends on the rows predicted with it.

scikit-learn's ``MLPRegressor`` multiplies its dense layers with BLAS. OpenBLAS picks its kernels by the number
of rows, so on some processors a row's product differs in the last bits between a call of one row and a call
of 207 (an AMD EPYC: up to 1.6e-7 mph in the perceptron's forecast). The streaming job and the backfill predict
a catch-up's steps in one call, grouped as the runner batches them, so two runs over the same data could
differ. ``RowwiseMLPRegressor`` fits as ``MLPRegressor`` does and predicts with each dense layer summed row by
row in one order (``ml._row_matmul``). A sparse layer input (the sensor's one-hot, ``ml.neural.SensorIdentity``)
already is: scipy sums a row's stored values in order.

``IndexedOneHotMLPRegressor`` is the same model for inputs whose last column is a one-hot given as its index (the
sensor's identity, ``ml.neural.SensorIndex``): its first layer adds that row of its weights instead of multiplying a
sparse one-hot, in fitting and predicting, which fits the perceptron 1.58x faster (``benchmarks/perceptron_fit.py``;
docs/model-experiments.md, tenth round).
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

__all__ = ["IndexedOneHotMLPRegressor", "RowwiseMLPRegressor", "rowwise_matmul"]


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
        return self._through_layers(self._first_layer(X), rowwise_matmul)

    def _first_layer(self, X) -> np.ndarray:  # noqa: N803
        """The first layer's product for predicting, each row summed in one order."""
        return X @ self.coefs_[0] if sparse.issparse(X) else rowwise_matmul(X, self.coefs_[0])

    def _through_layers(self, product: np.ndarray, matmul, activations: list | None = None) -> np.ndarray:
        """The network from the first layer's ``product`` on: intercepts, activations and the later layers'
        products (``matmul``); ``activations`` (when fitting) keeps every layer's output."""
        hidden = ACTIVATIONS[self.activation]
        for i in range(self.n_layers_ - 1):
            if i:
                product = matmul(product, self.coefs_[i])
            product += self.intercepts_[i]
            if i != self.n_layers_ - 2:
                hidden(product)
            if activations is not None:
                activations[i + 1] = product
        ACTIVATIONS[self.out_activation_](product)
        return product


class IndexedOneHotMLPRegressor(RowwiseMLPRegressor):
    """``RowwiseMLPRegressor`` whose last input column is the index of the row's one-hot input (-1: none).

    Its first layer has a weight row per dense column and per one-hot position (as many positions as the largest
    index in the fitted rows, plus one), and adds the row's one-hot weights where the sparse one-hot would have
    multiplied them by 1: the model of a perceptron on the dense columns beside a one-hot, without the sparse
    products that took most of its fitting time.
    """

    def _fit(self, X, y, sample_weight=None, incremental=False):  # noqa: N803 - scikit-learn's names
        # One-hot positions of these rows; scikit-learn decides whether this fit sizes new weights (_initialize).
        self._positions = int(np.max(np.asarray(X)[:, -1], initial=-1.0)) + 1
        try:
            return super()._fit(X, y, sample_weight, incremental)
        finally:
            del self._positions

    def _initialize(self, y, layer_units, dtype):
        # scikit-learn sizes the first layer's weights (and their gradients) from this list: one row per dense
        # column and one per one-hot position, not one for the index column.
        self.n_indexed_ = self._positions
        layer_units[0] += self.n_indexed_ - 1
        super()._initialize(y, layer_units, dtype)

    @staticmethod
    def _split(X) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        """(the dense columns, the one-hot index of each row as an integer)."""
        X = np.asarray(X)
        return X[:, :-1], X[:, -1].astype(np.intp)

    def _first_product(self, X, matmul) -> np.ndarray:  # noqa: N803
        """The dense columns times their weights (``matmul``), plus each row's one-hot weights."""
        columns, index = self._split(X)
        n_dense = columns.shape[1]
        product = matmul(columns, self.coefs_[0][:n_dense])
        if (known := index >= 0).all():
            product += self.coefs_[0][n_dense + index]
        else:
            product[known] += self.coefs_[0][n_dense + index[known]]
        return product

    def _first_layer(self, X) -> np.ndarray:  # noqa: N803
        return self._first_product(X, rowwise_matmul)

    def _forward_pass(self, activations):
        self._through_layers(self._first_product(activations[0], np.matmul), np.matmul, activations)
        return activations

    def _compute_loss_grad(self, layer, sw_sum, activations, deltas, coef_grads, intercept_grads):
        if layer != 0:
            super()._compute_loss_grad(layer, sw_sum, activations, deltas, coef_grads, intercept_grads)
            return
        columns, index = self._split(activations[0])
        delta = deltas[0]
        n_dense = columns.shape[1]
        grad = np.empty_like(self.coefs_[0])
        grad[:n_dense] = columns.T @ delta
        known = np.flatnonzero(index >= 0)
        # The one-hot rows' gradient: each position's sum of its rows' deltas, as one sparse product (numpy's
        # add.at took seven times as long in an ad hoc timing of a 512-row batch).
        one_hot = sparse.csr_matrix((np.ones(len(known), delta.dtype), (index[known], known)),
                                    shape=(self.n_indexed_, len(index)))
        grad[n_dense:] = one_hot @ delta
        grad += self.alpha * self.coefs_[0]
        grad /= sw_sum
        coef_grads[0] = grad
        intercept_grads[0] = np.sum(delta, axis=0) / sw_sum
