"""CompiledTreesRegressor: scikit-learn's fit, and scikit-learn's predictions to the last bit from one compiled walk."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from ml import _tree_walk
from ml.compiled_trees import CompiledTreesRegressor, FlatTrees, flat_trees

PARAMS = dict(loss="absolute_error", max_iter=40, max_leaf_nodes=63, min_samples_leaf=20, l2_regularization=1.0,
              early_stopping=False, random_state=0)


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray]:
    """Float32 rows like the feature rows: wide ranges, missing values (NaN), infinities, a constant column."""
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(6_000, 30)) * rng.uniform(0.1, 60.0, size=30)).astype(np.float32)
    y = np.nan_to_num(x[:, 0] * 0.3 + np.sin(x[:, 1]) * 4 + np.where(x[:, 2] > 0, 5.0, -2.0)) + rng.normal(size=len(x))
    x[rng.random(x.shape) < 0.08] = np.nan  # missing values, learnt as a side of each split
    x[:, 5] = 3.0
    return x, y.astype(np.float32)


@pytest.fixture(scope="module")
def fitted(rows) -> tuple[CompiledTreesRegressor, HistGradientBoostingRegressor]:
    x, y = rows
    return CompiledTreesRegressor(**PARAMS).fit(x, y), HistGradientBoostingRegressor(**PARAMS).fit(x, y)


def test_it_fits_the_same_trees_as_scikit_learn(fitted) -> None:
    mine, theirs = fitted
    assert len(mine._predictors) == len(theirs._predictors) == PARAMS["max_iter"]
    for (a,), (b,) in zip(mine._predictors, theirs._predictors, strict=True):
        np.testing.assert_array_equal(a.nodes, b.nodes)
    assert mine._baseline_prediction == theirs._baseline_prediction


@pytest.mark.parametrize("size", [1, 2, 63, 64, 65, 207, 16 * 207 + 5])
def test_every_row_is_scikit_learns_prediction_to_the_last_bit(fitted, rows, size) -> None:
    mine, theirs = fitted
    x = rows[0][-size:]
    predicted = mine.predict(x)
    assert predicted.dtype == np.float64 and predicted.shape == (size,)
    np.testing.assert_array_equal(predicted, theirs.predict(x))


def test_missing_values_and_infinities_take_scikit_learns_side(fitted, rows) -> None:
    mine, theirs = fitted
    x = rows[0][:300].copy()
    x[::3, :] = np.nan
    x[1::3, :4] = np.inf
    x[2::3, 4:8] = -np.inf
    assert np.isnan(theirs.predict(x)).sum() == 0
    np.testing.assert_array_equal(mine.predict(x), theirs.predict(x))


def test_a_value_equal_to_a_threshold_goes_left_as_in_scikit_learn(fitted, rows) -> None:
    mine, theirs = fitted
    x = rows[0][:400].astype(np.float64)
    for (tree,), row in zip(mine._predictors, x, strict=False):
        inner = tree.nodes[~tree.nodes["is_leaf"].astype(bool)]
        row[inner["feature_idx"]] = inner["num_threshold"]  # row i meets every split of tree i at its threshold
    np.testing.assert_array_equal(mine.predict(x), theirs.predict(x))
    nudged = np.nextafter(x, np.inf)  # just above every threshold: right, as scikit-learn goes
    np.testing.assert_array_equal(mine.predict(nudged), theirs.predict(nudged))


def test_float64_fortran_and_strided_rows_predict_the_same(fitted, rows) -> None:
    mine, theirs = fitted
    x = rows[0][:500]
    for variant in (x.astype(np.float64), np.asfortranarray(x), np.asfortranarray(x.astype(np.float64)),
                    np.repeat(x, 2, axis=0)[::2]):
        np.testing.assert_array_equal(mine.predict(variant), theirs.predict(x))


def test_a_row_gets_the_same_forecast_in_any_call(fitted, rows) -> None:
    mine, _ = fitted
    x = rows[0][:1_000]
    alone = np.concatenate([mine.predict(x[i:i + 1]) for i in range(len(x))])
    order = np.random.default_rng(3).permutation(len(x))
    np.testing.assert_array_equal(mine.predict(x), alone)
    np.testing.assert_array_equal(mine.predict(x[order]), alone[order])


def test_scikit_learns_input_checks_still_refuse_bad_rows(fitted, rows) -> None:
    mine, _ = fitted
    with pytest.raises(ValueError, match="features"):
        mine.predict(rows[0][:5, :29])
    with pytest.raises(ValueError):
        mine.predict(np.array([["a"] * 30]))


def test_the_flat_arrays_are_not_stored_with_the_model(fitted, rows) -> None:
    mine, _ = fitted
    mine.predict(rows[0][:3])
    assert isinstance(mine.__dict__["_flat_trees"], FlatTrees)
    assert "_flat_trees" not in mine.__getstate__()
    assert "_flat_trees" in mine.__dict__  # the state is a copy: storing leaves the live model's cache alone
    again = pickle.loads(pickle.dumps(mine))
    assert "_flat_trees" not in again.__dict__
    np.testing.assert_array_equal(again.predict(rows[0][:50]), mine.predict(rows[0][:50]))


def test_categorical_splits_keep_scikit_learns_walk(rows) -> None:
    x, y = rows
    x = x[:2_000].copy()
    x[:, 3] = np.random.default_rng(1).integers(0, 5, size=len(x))
    params = dict(PARAMS, max_iter=5, categorical_features=[3])
    mine, theirs = CompiledTreesRegressor(**params).fit(x, y[:2_000]), HistGradientBoostingRegressor(**params).fit(
        x, y[:2_000])
    assert flat_trees(mine) is None
    np.testing.assert_array_equal(mine.predict(x), theirs.predict(x))
    assert mine.__dict__["_flat_trees"] is False


def test_the_walk_refuses_arrays_of_the_wrong_size(fitted, rows) -> None:
    mine, _ = fitted
    flat = flat_trees(mine)
    with pytest.raises(ValueError, match="C-ordered float64"):
        flat.add_to(np.asfortranarray(rows[0][:4].astype(np.float64)), np.zeros(4))
    feature, threshold, children, missing, value, roots, depths = flat.arrays
    x = np.zeros((4, 30))
    with pytest.raises(ValueError, match="rows holds 960 bytes, expected 1200"):
        _tree_walk.walk(x, 30, feature, threshold, children, missing, value, roots, depths, np.zeros(5))
    with pytest.raises(ValueError, match="threshold holds"):
        _tree_walk.walk(x, 30, feature, threshold[:-1], children, missing, value, roots, depths, np.zeros(4))
    with pytest.raises(ValueError, match="children holds"):
        _tree_walk.walk(x, 30, feature, threshold, children[:-1], missing, value, roots, depths, np.zeros(4))
    with pytest.raises(ValueError, match="depths holds"):
        _tree_walk.walk(x, 30, feature, threshold, children, missing, value, roots, depths[:-1], np.zeros(4))


def test_trees_that_are_not_trees_are_refused(fitted) -> None:
    mine, _ = fitted
    (tree,) = mine._predictors[0]
    nodes = tree.nodes.copy()
    inner = np.flatnonzero(~nodes["is_leaf"].astype(bool))
    nodes["left"][inner[-1]] = inner[-1]  # a loop back to itself
    skipping = tree.nodes.copy()
    skipping["depth"][inner[0]] += 1  # a child two levels down: a walk of the tree's depth could stop short

    class Tree:
        pass

    looped = Tree()
    looped.nodes = nodes
    with pytest.raises(ValueError, match="do not form a tree"):
        FlatTrees([[looped]], 30)
    with pytest.raises(ValueError, match="do not form a tree"):
        FlatTrees([[tree]], 2)  # splits on columns the rows do not have
    skipped = Tree()
    skipped.nodes = skipping
    with pytest.raises(ValueError, match="do not form a tree"):
        FlatTrees([[skipped]], 30)


def test_the_model_is_stored_with_its_trees_packed_and_loads_to_the_same_predictions(fitted, rows) -> None:
    import skops.io as sio

    from ml.registry import TRUSTED_TYPES

    mine, theirs = fitted
    state = mine.__getstate__()
    assert "_predictors" not in state and "_predictors" in mine.__dict__  # the live model keeps its trees
    packed = state["_packed_trees"]
    assert len(packed["node_counts"]) == PARAMS["max_iter"]
    assert packed["node_counts"].sum() == len(packed["nodes"]) == sum(len(t.nodes) for (t,) in mine._predictors)
    for loaded in (pickle.loads(pickle.dumps(mine)), sio.loads(sio.dumps(mine), trusted=list(TRUSTED_TYPES))):
        assert type(loaded) is CompiledTreesRegressor and "_packed_trees" not in loaded.__dict__
        for (a,), (b,) in zip(loaded._predictors, theirs._predictors, strict=True):
            np.testing.assert_array_equal(a.nodes, b.nodes)
            np.testing.assert_array_equal(a.raw_left_cat_bitsets, b.raw_left_cat_bitsets)
        x = rows[0][:700]
        np.testing.assert_array_equal(loaded.predict(x), theirs.predict(x))
        np.testing.assert_array_equal(HistGradientBoostingRegressor.predict(loaded, x), theirs.predict(x))


def test_a_model_stored_with_scikit_learns_three_arrays_a_tree_still_loads(fitted, rows) -> None:
    mine, theirs = fitted
    earlier = dict(HistGradientBoostingRegressor.__getstate__(mine))  # the form stored before the packing
    earlier.pop("_flat_trees", None)
    assert "_predictors" in earlier
    loaded = CompiledTreesRegressor.__new__(CompiledTreesRegressor)
    loaded.__setstate__(earlier)
    np.testing.assert_array_equal(loaded.predict(rows[0][:300]), theirs.predict(rows[0][:300]))


def test_packed_trees_that_do_not_add_up_are_refused(fitted) -> None:
    from ml.compiled_trees import pack_trees, unpack_trees

    mine, _ = fitted
    packed = pack_trees(mine._predictors)
    assert [len(i) for i in unpack_trees(packed)] == [1] * PARAMS["max_iter"]
    counts = packed["node_counts"].copy()
    counts[-1] += 1
    with pytest.raises(ValueError, match="do not add up"):
        unpack_trees(dict(packed, node_counts=counts))
    with pytest.raises(ValueError, match="node records"):
        unpack_trees(dict(packed, nodes=packed["nodes"]["value"]))
    with pytest.raises(ValueError, match="whole iterations"):
        unpack_trees(dict(packed, trees_per_iteration=3))
    with pytest.raises(ValueError, match="different trees"):
        unpack_trees(dict(packed, raw_bitsets=packed["raw_bitsets"][:0], raw_counts=packed["raw_counts"][:0]))


def test_a_child_in_the_next_tree_is_refused(fitted) -> None:
    mine, _ = fitted
    (first,), (second,) = mine._predictors[:2]
    nodes = first.nodes.copy()
    inner = np.flatnonzero(~nodes["is_leaf"].astype(bool))
    # Past its own tree, to a node of the next tree one level deeper: the depths alone would pass it.
    (deeper,) = np.flatnonzero(second.nodes["depth"] == nodes["depth"][inner[-1]] + 1)[:1]
    nodes["left"][inner[-1]] = len(nodes) + deeper

    class Tree:
        pass

    stray = Tree()
    stray.nodes = nodes
    FlatTrees([[first], [second]], 30)
    with pytest.raises(ValueError, match="do not form a tree"):
        FlatTrees([[stray], [second]], 30)
