"""Blends and horizon chains: what they compute, the blend's memo, and a registry round trip that keeps them shared."""

from __future__ import annotations

import numpy as np
import pytest
from ml_bundles import assert_same_predictions, round_trip, tiny_context
from sklearn.linear_model import LinearRegression

from ml.conformal import fit_binned_conformal
from ml.dataset import STEP_MS
from ml.ensemble import MEMO_ENTRIES, ColumnBlend, HorizonChain
from ml.features import FEATURE_NAMES
from ml.registry import ModelBundle


class _Counting:
    """A test double estimator: predicts the sum of its columns and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.asarray(x, dtype=np.float64).sum(1)


def _rows(n: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)


def test_blend_is_the_weighted_mean_of_its_members_on_their_columns() -> None:
    x = _rows()
    a, b = _Counting(), _Counting()
    blend = ColumnBlend([a, b], [np.array([0, 1]), np.array([2])], [3.0, 1.0])
    expected = 0.75 * (x[:, 0].astype(np.float64) + x[:, 1]) + 0.25 * x[:, 2]
    np.testing.assert_allclose(blend.predict(x), expected, rtol=1e-6)


def test_blend_memo_answers_equal_rows_once_and_new_rows_again() -> None:
    x = _rows()
    member = _Counting()
    blend = ColumnBlend([member], [np.arange(3)], [1.0])
    first = blend.predict(x)
    first[:] = -1.0  # a caller changing its copy must not change the memo
    again = blend.predict(x.copy())  # equal values, another array: served from the memo
    assert member.calls == 1
    np.testing.assert_allclose(again, x[:, :3].astype(np.float64).sum(1), rtol=1e-6)
    changed = x.copy()
    changed[7, 1] += 1.0
    blend.predict(changed)
    assert member.calls == 2
    assert "_memo" not in blend.__getstate__()


def test_the_memo_answers_each_of_the_latest_inputs_and_forgets_older_ones() -> None:
    member = _Counting()
    blend = ColumnBlend([member], [np.arange(3)], [1.0])
    inputs = [_rows(seed=20 + k) for k in range(MEMO_ENTRIES + 1)]
    for x in inputs[:MEMO_ENTRIES]:
        blend.predict(x)
    for x in inputs[:MEMO_ENTRIES]:  # each of the latest MEMO_ENTRIES inputs: from the memo
        np.testing.assert_allclose(blend.predict(x.copy()), x[:, :3].astype(np.float64).sum(1), rtol=1e-6)
    assert member.calls == MEMO_ENTRIES
    blend.predict(inputs[MEMO_ENTRIES])  # one more input pushes the oldest out
    np.testing.assert_allclose(blend.predict(inputs[0]), inputs[0][:, :3].astype(np.float64).sum(1), rtol=1e-6)
    assert member.calls == MEMO_ENTRIES + 2


def test_a_chain_remembers_its_prediction_so_its_trees_run_once_per_step() -> None:
    x = _rows()
    upstream, model = _Counting(), _Counting()
    chain = HorizonChain(upstream, model, np.array([0, 2]))
    first = chain.predict(x)
    first[:] = -1.0  # a caller changing its copy must not change the memo
    again = chain.predict(x.copy())
    assert model.calls == upstream.calls == 1
    s = x.astype(np.float64).sum(1)
    np.testing.assert_allclose(again, x[:, 0].astype(np.float64) + x[:, 2] + s.astype(np.float32), rtol=1e-5)
    changed = x.copy()
    changed[5, 3] += 1.0
    chain.predict(changed)
    assert model.calls == upstream.calls == 2
    assert "_memo" not in chain.__getstate__()


def test_chain_feeds_the_upstream_forecast_as_its_last_column() -> None:
    x = _rows()
    upstream = ColumnBlend([_Counting()], [np.array([4])], [1.0])
    cols = np.array([0, 2])
    inputs = HorizonChain.inputs(x, cols, upstream.predict(x))
    assert inputs.shape == (len(x), 3)
    np.testing.assert_array_equal(inputs[:, :2], x[:, cols])
    np.testing.assert_allclose(inputs[:, 2], x[:, 4], rtol=1e-6)
    model = LinearRegression().fit(inputs, 2.0 * inputs[:, 2] + inputs[:, 0])
    chain = HorizonChain(upstream, model, cols)
    np.testing.assert_allclose(chain.predict(x), 2.0 * x[:, 4] + x[:, 0], atol=1e-4)


def test_a_chained_bundle_round_trips_and_shares_its_upstream(tmp_path) -> None:
    rng = np.random.default_rng(1)
    ctx = tiny_context()
    x = _rows(200, seed=2)
    y = rng.normal(size=200)
    up_model = LinearRegression().fit(x[:, :5], y)
    upstream = ColumnBlend([up_model], [np.arange(5)], [1.0])
    cols = np.arange(len(FEATURE_NAMES))
    chain_model = LinearRegression().fit(HorizonChain.inputs(x, cols, upstream.predict(x)), 2 * y)
    estimators = {15: upstream, 30: HorizonChain(upstream, chain_model, cols)}
    intervals = {h: fit_binned_conformal(y, np.zeros(200), min_bin_rows=50) for h in estimators}
    bundle = ModelBundle(estimators, {15: None, 30: None}, intervals, ctx)
    loaded = round_trip(bundle, tmp_path / "models")
    assert loaded.estimators[30].upstream is loaded.estimators[15]  # one set of 15-minute trees per step
    assert_same_predictions(bundle.predict(x), loaded.predict(x), rtol=1e-6)


class _Recording:
    """A test double regressor: remembers the rows (and any row weights) it was fitted on, predicts 0."""

    def fit(self, x: np.ndarray, y: np.ndarray, **given) -> _Recording:
        self.x = np.asarray(x)
        self.given = given
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x))


def test_a_chain_is_fitted_on_rows_its_upstream_did_not_see() -> None:
    from ml.models import ModelSpec
    from ml.train import _fit_chain

    n = 5000
    x = _rows(n, seed=3)
    x[:, 0] = np.arange(n)  # row ids, to find the fitted rows again
    y = np.ones(n)
    y[::10] = np.nan  # unobserved targets are never fitted on
    upstream = ColumnBlend([_Counting()], [np.array([1])], [1.0])
    up_used = np.arange(2000)
    spec = ModelSpec("hgb_chain", "speed_last", _Recording, max_rows=1000, features=FEATURE_NAMES, upstream="up")
    times = np.arange(n) * STEP_MS
    chain, used = _fit_chain(spec, x, y, (upstream, up_used), np.random.default_rng(0), times)
    fitted_rows = chain.model.x[:, 0].astype(int)
    assert len(fitted_rows) == 1000
    assert fitted_rows.min() >= 2000 and np.all(fitted_rows % 10 != 0)
    np.testing.assert_allclose(chain.model.x[:, -1], x[fitted_rows, 1], rtol=1e-6)  # the upstream forecast column
    assert set(up_used) <= set(used) and set(fitted_rows) <= set(used)  # the scale model avoids both
    assert chain.model.given == {}  # no half-life: every row alike, no weights passed
    assert _fit_chain(spec, x, y, None, np.random.default_rng(0), times)[0] is None  # no upstream fitted: no chain


def test_a_chain_with_a_half_life_weights_its_rows_by_their_step_times() -> None:
    from ml.models import ModelSpec
    from ml.train import _fit_chain

    n = 5000
    x = _rows(n, seed=4)
    x[:, 0] = np.arange(n)
    y = np.ones(n)
    times = np.arange(n) * STEP_MS
    upstream = ColumnBlend([_Counting()], [np.array([1])], [1.0])
    spec = ModelSpec("hgb_mlp", "speed_last", _Recording, max_rows=1000, features=FEATURE_NAMES, upstream="up",
                     half_life_days=2.0)
    chain, _ = _fit_chain(spec, x, y, (upstream, np.arange(2000)), np.random.default_rng(0), times)
    rows = chain.model.x[:, 0].astype(int)
    weights = chain.model.given["sample_weight"]
    np.testing.assert_allclose(weights, spec.row_weights(times[rows]))
    # the newest fitted row weighs most, and each row half as much per two days (one half-life) older
    age_days = (times[rows].max() - times[rows]) / (24 * 3600 * 1000)
    np.testing.assert_allclose(np.log2(weights / weights.max()), -age_days / 2.0, atol=1e-9)
    assert weights.mean() == pytest.approx(1.0) and age_days.max() > 4  # more than two half-lives apart


def test_a_plain_candidate_with_a_half_life_is_weighted_the_same_way() -> None:
    from ml.models import ModelSpec
    from ml.train import _fit

    n = 3000
    x = _rows(n, seed=5)
    x[:, 0] = np.arange(n)
    y = np.ones(n)
    times = np.arange(n) * STEP_MS
    spec = ModelSpec("trees", "speed_last", _Recording, max_rows=1000, features=FEATURE_NAMES, half_life_days=2.0)
    model, rows = _fit(spec, x, y, np.random.default_rng(0), times)
    np.testing.assert_array_equal(model.x[:, 0].astype(int), rows)
    np.testing.assert_allclose(model.given["sample_weight"], spec.row_weights(times[rows]))
    plain, _ = _fit(ModelSpec("trees", "speed_last", _Recording, max_rows=1000, features=FEATURE_NAMES), x, y,
                    np.random.default_rng(0), times)
    assert plain.given == {}  # no half-life: no weights passed
