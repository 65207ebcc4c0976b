"""Gradient-boosted trees that predict with every tree in one compiled pass.

scikit-learn's ``HistGradientBoostingRegressor.predict`` calls a compiled routine once per tree, with its own
Python call, output array and OpenMP region each time. The default model walks 750 trees a network step
(three models of 200, three interval models of 50), so a step of 207 rows paid more for those calls than for
the trees. ``CompiledTreesRegressor`` fits as ``HistGradientBoostingRegressor`` does (it is one, with the same
parameters and the same fitted trees) and predicts with ``ml._tree_walk``, which walks every tree for a block of
rows in one call without the GIL, eight rows side by side.

The forecast is the same to the last bit: scikit-learn's own input checks and float64 rows, a row's leaf values
added to the baseline one tree at a time in the trees' order, and the same left or right at every split (NaN
by the node's missing-value side, otherwise ``value <= threshold``). ``tests/ml/test_compiled_trees.py`` pins
that against scikit-learn's ``predict``. A model with categorical splits, or more than one tree an iteration,
predicts with scikit-learn's code.

The flat node arrays are built at the first prediction and never stored with the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted

try:
    from ml import _tree_walk
except ImportError as exc:  # a checkout whose C extensions were not compiled
    raise ImportError("ml._tree_walk is not built: run `make setup` (it compiles it; needs a C compiler)") from exc

__all__ = ["CompiledTreesRegressor", "FlatTrees", "flat_trees"]

_FLAT = "_flat_trees"  # the instance attribute that caches the flat arrays (never stored)


class FlatTrees:
    """Every tree's nodes end to end (split feature, threshold, children, missing side, value), with each tree's
    root and depth: the arrays ``ml._tree_walk.walk`` reads. A leaf is its own child on both sides."""

    def __init__(self, predictors: list[list[Any]], n_features: int) -> None:
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "children", "missing",
                                                                "value")}
        roots, depths = [], []
        offset = 0
        for iteration in predictors:
            (tree,) = iteration
            nodes = tree.nodes
            index = np.arange(len(nodes))
            leaf = nodes["is_leaf"].astype(bool)
            left = np.where(leaf, index, nodes["left"].astype(np.int64))
            right = np.where(leaf, index, nodes["right"].astype(np.int64))
            depth = nodes["depth"].astype(np.int64)
            inner = ~leaf
            # Every split reads a column the rows have, and both its children lie one level deeper in the same
            # tree: a walk of the tree's depth from its root then stays in the arrays and ends at a leaf.
            columns = nodes["feature_idx"][inner]
            children = np.concatenate([left[inner], right[inner]])
            if len(nodes) == 0 or depth[0] != 0 or (columns >= n_features).any() or (columns < 0).any() \
                    or (children >= len(nodes)).any() or (depth[children] != np.tile(depth[inner] + 1, 2)).any():
                raise ValueError("a tree's nodes do not form a tree over the model's features")
            roots.append(offset)
            depths.append(int(depth.max()))
            parts["feature"].append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.int32))
            parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
            parts["children"].append(np.stack([left, right], axis=1).ravel() + offset)
            parts["missing"].append(nodes["missing_go_to_left"].astype(np.uint8))
            parts["value"].append(nodes["value"].astype(np.float64))
            offset += len(nodes)
        if offset >= 2**31:
            raise ValueError("too many nodes for 32-bit node indices")
        dtypes = {"feature": np.int32, "threshold": np.float64, "children": np.int32, "missing": np.uint8,
                  "value": np.float64}
        arrays = {k: np.ascontiguousarray(np.concatenate(v) if v else np.zeros(0), dtype=dtypes[k])
                  for k, v in parts.items()}
        self.n_features = n_features
        self.arrays = (arrays["feature"], arrays["threshold"], arrays["children"], arrays["missing"],
                       arrays["value"], np.asarray(roots, dtype=np.int32), np.asarray(depths, dtype=np.int32))

    def add_to(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out[i]`` plus the leaf value of every tree for ``rows[i]`` (C-ordered float64), tree by tree."""
        if rows.dtype != np.float64 or not rows.flags.c_contiguous or rows.ndim != 2 \
                or rows.shape[1] != self.n_features or out.dtype != np.float64 or out.shape != (len(rows),):
            raise ValueError("the trees walk C-ordered float64 rows of the model's features into a float64 column")
        _tree_walk.walk(rows, self.n_features, *self.arrays, out)
        return out


def flat_trees(model: HistGradientBoostingRegressor) -> FlatTrees | None:
    """The flat trees of a fitted regressor, or None when its trees need scikit-learn's own walk (categorical
    splits, or several trees an iteration)."""
    if model.n_trees_per_iteration_ != 1 or getattr(model, "is_categorical_", None) is not None:
        return None
    if any(tree.nodes["is_categorical"].any() for iteration in model._predictors for tree in iteration):
        return None
    return FlatTrees(model._predictors, model.n_features_in_)


class CompiledTreesRegressor(HistGradientBoostingRegressor):
    """``HistGradientBoostingRegressor`` whose ``predict`` walks every tree in one compiled pass (see the module)."""

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())  # a copy: the base class may hand back the instance's own __dict__
        state.pop(_FLAT, None)
        return state

    def predict(self, X) -> np.ndarray:  # noqa: N803 - scikit-learn's argument name
        check_is_fitted(self)
        flat = self.__dict__.get(_FLAT)
        if flat is None:
            flat = flat_trees(self) or False
            setattr(self, _FLAT, flat)  # one assignment: threads that both build it keep either, which are equal
        if flat is False:
            return super().predict(X)
        rows = np.ascontiguousarray(self._preprocess_X(X, reset=False), dtype=np.float64)  # scikit-learn's checks
        raw = np.zeros(len(rows), dtype=self._baseline_prediction.dtype)
        raw += self._baseline_prediction.ravel()
        return self._loss.link.inverse(flat.add_to(rows, raw))
