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

The flat node arrays are built at the first prediction and never stored with the model. The model is stored
with its trees packed into a few arrays (:func:`pack_trees`), which loads several times faster than scikit-learn's
three arrays a tree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE as _NODE_FIELDS
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.utils.validation import check_is_fitted

try:
    from ml import _tree_walk
except ImportError as exc:  # a checkout whose C extensions were not compiled
    raise ImportError("ml._tree_walk is not built: run `make setup` (it compiles it; needs a C compiler)") from exc

__all__ = ["CompiledTreesRegressor", "FlatTrees", "flat_trees", "pack_trees", "unpack_trees"]

_FLAT = "_flat_trees"  # the instance attribute that caches the flat arrays (never stored)
_PACKED = "_packed_trees"  # the stored form of the fitted trees (see CompiledTreesRegressor.__getstate__)


class FlatTrees:
    """Every tree's nodes end to end (split feature, threshold, children, missing side, value), with each tree's
    root and depth: the arrays ``ml._tree_walk.walk`` reads. A leaf is its own child on both sides.

    Built with a few whole-array operations over all the trees' nodes at once, not a loop over the trees.
    """

    def __init__(self, predictors: list[list[Any]], n_features: int) -> None:
        trees = []
        for iteration in predictors:
            (tree,) = iteration
            trees.append(tree.nodes)
        counts = np.array([len(nodes) for nodes in trees], dtype=np.int64)
        nodes = np.concatenate(trees) if trees else np.zeros(0, dtype=_NODE_FIELDS)
        roots = np.cumsum(counts) - counts
        index = np.arange(len(nodes))
        leaf = nodes["is_leaf"].astype(bool)
        inner = ~leaf
        tree_of = np.repeat(np.arange(len(trees)), counts)
        local_left, local_right = nodes["left"].astype(np.int64), nodes["right"].astype(np.int64)
        left = np.where(leaf, index, local_left + roots[tree_of])
        right = np.where(leaf, index, local_right + roots[tree_of])
        depth = nodes["depth"].astype(np.int64)
        # Every split reads a column the rows have, and both its children lie one level deeper in the same
        # tree: a walk of the tree's depth from its root then stays in the arrays and ends at a leaf.
        columns = nodes["feature_idx"][inner].astype(np.int64)
        size = counts[tree_of[inner]]
        local = np.concatenate([local_left[inner], local_right[inner]])  # scikit-learn's child indices are unsigned
        children = np.concatenate([left[inner], right[inner]])
        if (counts == 0).any() or (depth[roots] != 0).any() or (columns >= n_features).any() \
                or (columns < 0).any() or (local >= np.tile(size, 2)).any() \
                or (depth[children] != np.tile(depth[inner] + 1, 2)).any():
            raise ValueError("a tree's nodes do not form a tree over the model's features")
        if len(nodes) >= 2**31:
            raise ValueError("too many nodes for 32-bit node indices")
        depths = np.maximum.reduceat(depth, roots) if len(trees) else np.zeros(0, dtype=np.int64)
        self.n_features = n_features
        self.arrays = (np.ascontiguousarray(np.where(leaf, 0, nodes["feature_idx"]), dtype=np.int32),
                       np.ascontiguousarray(nodes["num_threshold"], dtype=np.float64),
                       np.ascontiguousarray(np.stack([left, right], axis=1).ravel(), dtype=np.int32),
                       np.ascontiguousarray(nodes["missing_go_to_left"], dtype=np.uint8),
                       np.ascontiguousarray(nodes["value"], dtype=np.float64),
                       roots.astype(np.int32), depths.astype(np.int32))

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


def pack_trees(predictors: list[list[TreePredictor]]) -> dict[str, Any]:
    """A fitted model's trees (``_predictors``: a list of iterations, each a list of trees) as a few arrays."""
    trees = [tree for iteration in predictors for tree in iteration]

    def joined(field: str) -> tuple[np.ndarray, np.ndarray]:
        parts = [getattr(tree, field) for tree in trees]
        return np.concatenate(parts), np.array([len(part) for part in parts], dtype=np.int64)

    nodes, node_counts = joined("nodes")
    binned, binned_counts = joined("binned_left_cat_bitsets")
    raw, raw_counts = joined("raw_left_cat_bitsets")
    return {"trees_per_iteration": len(predictors[0]), "nodes": nodes, "node_counts": node_counts,
            "binned_bitsets": binned, "binned_counts": binned_counts, "raw_bitsets": raw, "raw_counts": raw_counts}


def unpack_trees(packed: dict[str, Any]) -> list[list[TreePredictor]]:
    """:func:`pack_trees` undone: the trees are views into the packed arrays, in their order."""
    def split(values: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
        if counts.sum() != len(values):
            raise ValueError("packed trees: the lengths do not add up to the arrays")
        return np.split(values, np.cumsum(counts)[:-1])

    nodes = packed["nodes"]
    if nodes.dtype != _NODE_FIELDS:
        raise ValueError("packed trees: the nodes are not scikit-learn's node records")
    counts = [packed[name] for name in ("node_counts", "binned_counts", "raw_counts")]
    if not len(counts[0]) == len(counts[1]) == len(counts[2]):
        raise ValueError("packed trees: the three arrays count different trees")
    trees = [TreePredictor(*parts) for parts in zip(split(nodes, counts[0]), split(packed["binned_bitsets"], counts[1]),
                                                    split(packed["raw_bitsets"], counts[2]), strict=True)]
    per = int(packed["trees_per_iteration"])
    if per < 1 or len(trees) % per:
        raise ValueError("packed trees: the trees do not fill whole iterations")
    return [trees[i:i + per] for i in range(0, len(trees), per)]


class CompiledTreesRegressor(HistGradientBoostingRegressor):
    """``HistGradientBoostingRegressor`` whose ``predict`` walks every tree in one compiled pass (see the module)."""

    def __getstate__(self) -> dict:
        """The state without the flat arrays, the fitted trees packed into a few arrays.

        scikit-learn stores three arrays a tree; a model of 750 trees then loads 2,250 small arrays, each with
        its own header to parse. Packed, every tree's nodes and bitsets are one array each, with their
        lengths, and a model loads several times faster.
        """
        state = dict(super().__getstate__())  # a copy: the base class may hand back the instance's own __dict__
        state.pop(_FLAT, None)
        if state.get("_predictors"):
            state[_PACKED] = pack_trees(state.pop("_predictors"))
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        packed = state.pop(_PACKED, None)
        if packed is not None:
            state["_predictors"] = unpack_trees(packed)
        super().__setstate__(state)

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
