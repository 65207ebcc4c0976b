"""The perceptron candidate: one multi-output model for all horizons, its memo, its fit, the trees that read its
forecasts (``hgb_mlp``), registry round trips that keep it shared."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from ml_bundles import assert_same_predictions, quick_examples, round_trip, tiny_context
from scipy import sparse
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler

from ml.conformal import fit_binned_conformal
from ml.dataset import STEP_MS, load_metrla
from ml.ensemble import HorizonChain
from ml.features import FEATURE_NAMES, HORIZONS_MIN
from ml.models import (
    CANDIDATE_NAMES,
    HGB_MLP_HALF_LIFE_DAYS,
    HGB_MLP_ROWS,
    MLP_BAG,
    MLP_ROWS,
    MLP_UPSTREAM,
    ModelSpec,
    candidate_specs,
)
from ml.neural import (
    SENSOR_KEYS,
    HorizonOutput,
    MeanOutputs,
    SensorIdentity,
    SensorIndex,
    SharedOutputs,
    StackedOutputs,
    fit_bag,
    make_mlp,
    weight_keyword,
)
from ml.registry import ModelBundle
from ml.rowwise_mlp import IndexedOneHotMLPRegressor
from ml.train import _fit_chain, _fit_joint, _wanted, train
from ml.training_set import window_ends


class _Counting:
    """A test double multi-output estimator: output k is the sum of the columns times (k + 1); counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        s = np.asarray(x, dtype=np.float64).sum(1)
        return np.stack([s, 2 * s, 3 * s], axis=1)


def _rows(n: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)


def test_each_horizon_reads_its_column_and_one_step_runs_the_model_once() -> None:
    x = _rows()
    model = _Counting()
    shared = SharedOutputs(model)
    outputs = [HorizonOutput(shared, k) for k in range(3)]
    s = x.astype(np.float64).sum(1)
    for k, out in enumerate(outputs):
        got = out.predict(x.copy())  # equal values in another array: still the memo
        np.testing.assert_allclose(got, (k + 1) * s, rtol=1e-6)
        got[:] = -1.0  # a caller changing its copy must not change the memo
    assert model.calls == 1
    changed = x.copy()
    changed[3, 2] += 1.0
    outputs[0].predict(changed)
    assert model.calls == 2
    assert "_memo" not in shared.__getstate__()


def test_the_perceptron_learns_a_joint_nonlinear_target() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4000, 6)).astype(np.float32)
    y = np.stack([x[:, 0] * 3.0, np.abs(x[:, 1]) * 4.0, x[:, 2] * x[:, 3]], axis=1)
    model = make_mlp(quick=True, identity=False)  # 6 plain columns: no sensor constants to read an identity from
    model = model.set_params(mlp__max_iter=200, mlp__hidden_layer_sizes=(32,)).fit(x[:3000], y[:3000])
    pred = model.predict(x[3000:])
    assert pred.shape == (1000, 3)
    mae = np.abs(pred - y[3000:]).mean(0)
    spread = np.abs(y[3000:] - y[:3000].mean(0)).mean(0)
    assert np.all(mae < 0.5 * spread)  # far better than the mean, at every output


class _Recording:
    """A test double regressor: remembers the rows and targets it was fitted on, predicts zeros for 3 outputs."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Recording:
        self.x, self.y = np.asarray(x), np.asarray(y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), 3))


def test_the_joint_fit_learns_the_change_on_rows_with_every_target_observed() -> None:
    n = 3000
    x = _rows(n, seed=5)
    x[:, 0] = 50.0 + np.arange(n) % 7  # speed_last, the base
    x[:, 1] = np.arange(n)  # row ids
    y = np.stack([x[:, 0] + 1.0, x[:, 0] + 2.0, x[:, 0] + 3.0], axis=1).astype(np.float64)
    y[::4, 1] = np.nan
    spec = ModelSpec("mlp", "speed_last", _Recording, max_rows=1000, features=FEATURE_NAMES, joint=True)
    shared, used = _fit_joint(spec, x, y, np.random.default_rng(0), np.arange(n) * STEP_MS)
    fitted = shared.model
    rows = fitted.x[:, 1].astype(int)
    assert len(rows) == 1000 and np.all(rows % 4 != 0)
    np.testing.assert_array_equal(np.sort(rows), used)
    np.testing.assert_allclose(fitted.y, np.tile([1.0, 2.0, 3.0], (1000, 1)), atol=1e-4)  # change from speed_last


def test_the_perceptron_is_one_joint_candidate_at_every_horizon() -> None:
    assert "mlp" in CANDIDATE_NAMES and "hgb_mlp" in CANDIDATE_NAMES
    for quick in (False, True):
        for h in HORIZONS_MIN:
            (spec,) = [s for s in candidate_specs(h, quick=quick) if s.name == "mlp"]
            assert spec.joint and spec.features == FEATURE_NAMES and spec.base_feature == "speed_last"
            assert spec.bag == MLP_BAG >= 2  # a bag: the mean of perceptrons fitted on disjoint rows
            if not quick:  # each member gets MLP_ROWS of its own (a bigger bag is more rows, not thinner parts)
                assert spec.max_rows == MLP_BAG * MLP_ROWS and MLP_BAG == 3 and MLP_ROWS == 800_000


def test_the_trees_on_the_perceptron_take_a_million_rows_that_metr_la_leaves_them() -> None:
    """hgb_mlp and the chains on it fit on HGB_MLP_ROWS; on the bundled METR-LA the training rows with an observed
    target that neither the bag nor the 15-minute trees saw still fill the chains' cap at every horizon."""
    data = load_metrla()
    t = window_ends(data, "train")
    for h in HORIZONS_MIN:
        trees = [s for s in candidate_specs(h) if s.upstream == MLP_UPSTREAM]
        assert trees and all(s.max_rows == HGB_MLP_ROWS == 1_000_000 for s in trees)
        observed = int((data.speed[t + h * 60_000 // data.step_ms] > 0).sum())
        assert observed - MLP_BAG * MLP_ROWS - HGB_MLP_ROWS >= HGB_MLP_ROWS


def test_a_perceptron_bundle_round_trips_with_one_shared_model(tmp_path) -> None:
    ctx = tiny_context()
    x = _rows(300, seed=6)
    y = np.stack([x[:, 0], x[:, 1] - x[:, 2], 2 * x[:, 3]], axis=1).astype(np.float64)
    shared = SharedOutputs(make_mlp(quick=True).fit(x, y))
    estimators = {h: HorizonOutput(shared, k) for k, h in enumerate(HORIZONS_MIN)}
    intervals = {h: fit_binned_conformal(y[:, 0], np.zeros(300), min_bin_rows=50) for h in estimators}
    bundle = ModelBundle(estimators, dict.fromkeys(estimators, "speed_last"), intervals, ctx)
    loaded = round_trip(bundle, tmp_path / "models")
    first, *others = (loaded.estimators[h] for h in HORIZONS_MIN)
    assert all(o.shared is first.shared for o in others)  # one network forward pass per step for all horizons
    assert_same_predictions(bundle.predict(x), loaded.predict(x))


def test_trees_reading_the_perceptron_are_offered_at_every_horizon_and_bring_it_along() -> None:
    for quick in (False, True):
        for h in HORIZONS_MIN:
            (spec,) = [s for s in candidate_specs(h, quick=quick) if s.name == "hgb_mlp"]
            assert spec.upstream == MLP_UPSTREAM and spec.features == FEATURE_NAMES
            names = [s.name for s in candidate_specs(h, quick=quick)]
            assert names.index(MLP_UPSTREAM) < names.index("hgb_mlp")  # the upstream is fitted first
    for first_horizon in (True, False):
        assert MLP_UPSTREAM in _wanted({"hgb_mlp"}, first_horizon=first_horizon)


def test_the_chain_on_the_perceptron_reads_all_its_outputs_on_rows_it_did_not_see() -> None:
    n = 5000
    x = _rows(n, seed=7)
    x[:, 0] = np.arange(n)  # row ids
    y = np.ones(n)
    y[::10] = np.nan
    shared = SharedOutputs(_Counting())
    up_used = np.arange(3000)
    spec = ModelSpec("hgb_mlp", "speed_last", _Recording, max_rows=1000, features=FEATURE_NAMES,
                     upstream=MLP_UPSTREAM)
    chain, used = _fit_chain(spec, x, y, (shared, up_used), np.random.default_rng(0), np.zeros(n, np.int64))
    inputs = chain.model.x
    rows = inputs[:, 0].astype(int)
    assert inputs.shape == (1000, len(FEATURE_NAMES) + 3)
    assert rows.min() >= 3000 and np.all(rows % 10 != 0)
    s = x[rows].astype(np.float64).sum(1)
    np.testing.assert_allclose(inputs[:, -3:], np.stack([s, 2 * s, 3 * s], axis=1), rtol=1e-5)
    assert set(up_used) <= set(used) and set(rows) <= set(used)


def test_a_bundle_of_trees_on_the_perceptron_round_trips_with_one_shared_perceptron(tmp_path) -> None:
    ctx = tiny_context()
    x = _rows(400, seed=8)
    y = np.stack([x[:, 0], x[:, 1] - x[:, 2], 2 * x[:, 3]], axis=1).astype(np.float64)
    shared = SharedOutputs(make_mlp(quick=True).fit(x, y))
    cols = np.arange(len(FEATURE_NAMES))
    inputs = HorizonChain.inputs(x, cols, shared.predict(x))
    estimators = {h: HorizonChain(shared, LinearRegression().fit(inputs, y[:, k]), cols)
                  for k, h in enumerate(HORIZONS_MIN)}
    intervals = {h: fit_binned_conformal(y[:, 0], np.zeros(400), min_bin_rows=50) for h in estimators}
    bundle = ModelBundle(estimators, dict.fromkeys(estimators, "speed_last"), intervals, ctx)
    loaded = round_trip(bundle, tmp_path / "models")
    ups = [loaded.estimators[h].upstream for h in HORIZONS_MIN]
    assert isinstance(ups[0], SharedOutputs) and all(u is ups[0] for u in ups)
    assert_same_predictions(bundle.predict(x), loaded.predict(x))


class _Seeded(_Recording):
    """A test double with a seed parameter: predicts its seed at every output, so a bag's mean is visible."""

    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def get_params(self) -> dict:
        return {"random_state": self.random_state}

    def set_params(self, **params: int) -> _Seeded:
        self.random_state = params.get("random_state", self.random_state)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), 3), float(self.random_state))


def test_a_bag_fits_its_members_on_disjoint_parts_of_the_rows_with_their_own_seeds() -> None:
    n = 3000
    x = _rows(n, seed=9)
    x[:, 0] = 50.0  # speed_last, the base
    x[:, 1] = np.arange(n)  # row ids
    y = np.full((n, 3), 51.0)
    y[::5, 2] = np.nan
    spec = ModelSpec("mlp", "speed_last", _Seeded, max_rows=1500, features=FEATURE_NAMES, joint=True, bag=3)
    shared, used = _fit_joint(spec, x, y, np.random.default_rng(0), np.arange(n) * STEP_MS)
    bag = shared.model
    assert isinstance(bag, MeanOutputs) and [m.random_state for m in bag.models] == [0, 1, 2]
    seen = [m.x[:, 1].astype(int) for m in bag.models]
    assert [len(s) for s in seen] == [500, 500, 500]
    assert len(np.unique(np.concatenate(seen))) == 1500  # disjoint
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), used)  # every capped row, each in one member
    assert np.all(np.concatenate(seen) % 5 != 0)  # only rows with every target observed
    np.testing.assert_allclose(shared.predict(x[:4]), np.full((4, 3), 1.0))  # mean of seeds 0, 1, 2
    single = _fit_joint(ModelSpec("mlp", "speed_last", _Seeded, max_rows=1500, features=FEATURE_NAMES, joint=True),
                        x, y, np.random.default_rng(0), np.arange(n) * STEP_MS)[0]
    assert isinstance(single.model, _Seeded)  # bag=1: the model itself


class _Weighted(_Seeded):
    """``_Seeded`` that also remembers the row weights it was fitted with (None: none given)."""

    def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> _Weighted:
        self.weights = sample_weight
        return super().fit(x, y)


def test_a_bag_with_a_half_life_gives_each_member_the_weights_of_its_own_rows() -> None:
    n = 3000
    x = _rows(n, seed=11)
    x[:, 1] = np.arange(n)  # row ids
    y = np.ones((n, 3))
    times = np.arange(n) * STEP_MS
    spec = ModelSpec("mlp", "speed_last", _Weighted, max_rows=1500, features=FEATURE_NAMES, joint=True, bag=3,
                     half_life_days=2.0)
    shared, used = _fit_joint(spec, x, y, np.random.default_rng(0), times)
    expected = dict(zip(used, spec.row_weights(times[used]), strict=True))  # weighted over all the capped rows
    for member in shared.model.models:
        rows = member.x[:, 1].astype(int)
        np.testing.assert_allclose(member.weights, [expected[r] for r in rows])
    unweighted = replace(spec, half_life_days=None)
    assert all(m.weights is None for m in _fit_joint(unweighted, x, y, np.random.default_rng(0), times)[0].model.models)


def test_row_weights_reach_the_perceptron_inside_its_pipeline() -> None:
    """Rows weighted near zero barely move the fitted perceptron: its forecast moves towards the heavy rows' target
    (+5; the light rows' is -5), where unweighted it stays near their mean, 0 (in 10 quick passes the weighted bag
    reaches a mean of about 0.37 here, the unweighted one about 0.04)."""
    sensors = np.random.default_rng(12).integers(0, 6, size=1200)
    x = _sensor_rows(sensors, seed=12)
    heavy = np.arange(len(x)) % 2 == 0
    y = np.where(heavy, 5.0, -5.0)[:, None] * np.ones((1, 3))
    weights = np.where(heavy, 1.0, 1e-3)
    assert weight_keyword(make_mlp(quick=True), weights).keys() == {"mlp__sample_weight"}
    bag = fit_bag(lambda: make_mlp(quick=True), x, y, 2, np.random.default_rng(3), weights=weights)
    plain = fit_bag(lambda: make_mlp(quick=True), x, y, 2, np.random.default_rng(3))
    assert bag.predict(x).mean() > 0.2 > abs(plain.predict(x).mean())


def test_a_bag_of_perceptrons_round_trips_through_the_registry(tmp_path) -> None:
    ctx = tiny_context()
    x = _rows(400, seed=10)
    y = np.stack([x[:, 0], x[:, 1] - x[:, 2], 2 * x[:, 3]], axis=1).astype(np.float64)
    bag = fit_bag(lambda: make_mlp(quick=True), x, y, 2, np.random.default_rng(1))
    a, b = (m.predict(x) for m in bag.models)
    assert not np.allclose(a, b)  # different rows and seeds
    np.testing.assert_allclose(bag.predict(x), (a + b) / 2)
    shared = SharedOutputs(bag)
    estimators = {h: HorizonOutput(shared, k) for k, h in enumerate(HORIZONS_MIN)}
    intervals = {h: fit_binned_conformal(y[:, 0], np.zeros(400), min_bin_rows=50) for h in estimators}
    bundle = ModelBundle(estimators, dict.fromkeys(estimators, "speed_last"), intervals, ctx)
    assert_same_predictions(bundle.predict(x), round_trip(bundle, tmp_path / "models").predict(x))


def test_the_chain_on_the_perceptron_and_the_15_minute_trees_shares_one_upstream(tmp_path) -> None:
    assert all("hgb_mlp_chain" not in {s.name for s in candidate_specs(15, quick=q)} for q in (False, True))
    assert {MLP_UPSTREAM, "hgb_mlp", "hgb_mlp_chain"} <= _wanted({"hgb_mlp_chain"}, first_horizon=True)
    assert "hgb_mlp" not in _wanted({"hgb_mlp_chain"}, first_horizon=False)
    quick = quick_examples()
    bundle, table = train(quick.data, quick.table, quick.context, quick=True, candidates=("hgb_mlp_chain",),
                          progress=lambda _: None)
    assert {(r["horizon_min"], r["model"]) for r in table} == {
        (15, "mlp"), (15, "hgb_mlp"), (30, "mlp"), (30, "hgb_mlp_chain"), (60, "mlp"), (60, "hgb_mlp_chain")}
    # On this seeded quick slice the chains win at 30 and 60 min (and hgb_mlp at 15), so the bundle holds them.
    assert bundle.model_names == {15: "hgb_mlp", 30: "hgb_mlp_chain", 60: "hgb_mlp_chain"}
    # the perceptrons and their trees weighted the rows by recency, and the bundle says so
    assert bundle.metadata["row_weight_half_life_days"] == {"mlp": HGB_MLP_HALF_LIFE_DAYS,
                                                            "hgb_mlp": HGB_MLP_HALF_LIFE_DAYS,
                                                            "hgb_mlp_chain": HGB_MLP_HALF_LIFE_DAYS}
    for h in (30, 60):
        assert bundle.estimators[h].model.n_features_in_ == len(FEATURE_NAMES) + 4  # 3 perceptron + 1 15-min
    loaded = round_trip(bundle, tmp_path / "models")
    e15, e30, e60 = (loaded.estimators[h] for h in HORIZONS_MIN)
    assert isinstance(e30.upstream, StackedOutputs) and e30.upstream is e60.upstream  # one memo for both
    assert e30.upstream.members[1] is e15 and e30.upstream.members[0] is e15.upstream  # one perceptron
    assert_same_predictions(bundle.predict(quick.x_val), loaded.predict(quick.x_val))
    trees, perceptron = _CountingProxy(e15.model), _CountingProxy(e15.upstream.model)
    e15.model, e15.upstream.model = trees, perceptron
    step = quick.x_val[:40] + 1.0  # rows no model was asked for yet
    loaded.predict(step)
    assert trees.calls == 1 and perceptron.calls == 1  # one step: the 15-minute trees and the perceptron run once


class _CountingProxy:
    """Wraps a fitted estimator and counts its predictions."""

    def __init__(self, model: object) -> None:
        self.model, self.calls = model, 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.model.predict(x)


def test_stacked_outputs_put_each_members_columns_side_by_side_and_remember_them() -> None:
    x = _rows(50, seed=11)
    multi = _Counting()
    single = LinearRegression().fit(x, x[:, 0])
    stacked = StackedOutputs([SharedOutputs(multi), single])
    out = stacked.predict(x)
    assert out.shape == (50, 4)
    np.testing.assert_allclose(out[:, 3], single.predict(x))
    np.testing.assert_allclose(out[:, :3], _Counting().predict(x))
    stacked.predict(x.copy())
    assert multi.calls == 1 and "_memo" not in stacked.__getstate__()


_KEYS = tuple(FEATURE_NAMES.index(k) for k in SENSOR_KEYS)


def _sensor_rows(sensors: np.ndarray, seed: int) -> np.ndarray:
    """Feature rows whose sensor constants (``SENSOR_KEYS``) are those of sensor ``sensors[i]``, the rest noise."""
    x = _rows(len(sensors), seed=seed)
    x[:, _KEYS[0]] = 40.0 + 0.37 * sensors  # sensor_mean
    x[:, _KEYS[1]] = 5.0 + 0.11 * (sensors % 5)  # sensor_std: some sensors share it, none share both
    return x


def test_the_identity_is_a_one_hot_of_the_sensor_read_from_its_constants() -> None:
    sensors = np.random.default_rng(12).integers(0, 6, size=500)
    x = _sensor_rows(sensors, seed=12)
    identity = SensorIdentity(_KEYS).fit(x)
    z = identity.transform(x)
    assert sparse.issparse(z) and z.shape == (500, len(FEATURE_NAMES) + 6) and z.dtype == np.float32
    z = z.toarray()
    np.testing.assert_allclose(z[:, : len(FEATURE_NAMES)], StandardScaler().fit(x).transform(x), atol=1e-5)
    onehot = z[:, len(FEATURE_NAMES):]
    assert np.all(onehot.sum(1) == 1.0)
    column = onehot.argmax(1)
    assert all(len(set(column[sensors == s])) == 1 for s in range(6))  # one column per sensor, every row of it
    assert len(set(column)) == 6
    order = np.random.default_rng(13).permutation(500)[:40]  # other rows, another order: the same identity
    np.testing.assert_array_equal(identity.transform(x[order]).toarray(), z[order])
    stranger = _sensor_rows(np.array([99, 3]), seed=14)  # a sensor never seen: no identity, the features alone
    np.testing.assert_array_equal(identity.transform(stranger).toarray()[:, len(FEATURE_NAMES):].sum(1), [0.0, 1.0])


def test_the_sensor_index_is_the_identitys_one_hot_given_as_its_position() -> None:
    sensors = np.random.default_rng(16).integers(0, 6, size=300)
    x = _sensor_rows(sensors, seed=16)
    one_hot = SensorIdentity(_KEYS).fit(x).transform(x).toarray()
    indexed = SensorIndex(_KEYS).fit(x).transform(x)
    f = len(FEATURE_NAMES)
    assert indexed.shape == (300, f + 1) and indexed.dtype == np.float32
    np.testing.assert_array_equal(indexed[:, :f], one_hot[:, :f])
    np.testing.assert_array_equal(indexed[:, f], one_hot[:, f:].argmax(1))
    stranger = _sensor_rows(np.array([99, 3]), seed=17)
    np.testing.assert_array_equal(SensorIndex(_KEYS).fit(x).transform(stranger)[:, f], [-1, 3])


def test_with_the_identity_the_perceptron_learns_each_sensors_own_offset() -> None:
    rng = np.random.default_rng(15)
    offsets = rng.normal(scale=5.0, size=40)  # not a smooth function of the sensor's constants
    sensors = rng.integers(0, 40, size=8000)
    x = _sensor_rows(sensors, seed=15)
    y = np.stack([offsets[sensors] + x[:, 0], offsets[sensors], 2 * offsets[sensors]], axis=1)
    errors = {}
    for identity in (True, False):
        model = make_mlp(quick=True, identity=identity).set_params(mlp__max_iter=60, mlp__hidden_layer_sizes=(32,))
        model.fit(x[:6000], y[:6000])
        errors[identity] = np.abs(model.predict(x[6000:]) - y[6000:]).mean()
    assert errors[True] < 0.5 * errors[False]


def test_the_candidate_perceptrons_read_the_sensor_identity() -> None:
    for quick in (False, True):
        (spec,) = [s for s in candidate_specs(15, quick=quick) if s.name == "mlp"]
        (_, inputs), (_, mlp) = spec.make().steps
        assert isinstance(inputs, SensorIndex) and isinstance(mlp, IndexedOneHotMLPRegressor)
        assert [spec.features[c] for c in inputs.key_columns] == list(SENSOR_KEYS)


def test_a_bag_fitted_in_two_processes_is_the_bag_fitted_in_one() -> None:
    sensors = np.random.default_rng(31).integers(0, 6, size=600)
    x = _sensor_rows(sensors, seed=31)
    y = np.stack([x[:, 0], x[:, 1] - x[:, 2], 2 * x[:, 3]], axis=1).astype(np.float64)
    one = fit_bag(lambda: make_mlp(quick=True), x, y, 3, np.random.default_rng(2))
    two = fit_bag(lambda: make_mlp(quick=True), x, y, 3, np.random.default_rng(2), workers=2, pool_min_rows=0)
    assert len(two.models) == 3
    np.testing.assert_array_equal(two.predict(x), one.predict(x))
    assert not np.allclose(*(m.predict(x) for m in two.models[:2]))  # its members still differ


def test_a_column_the_context_could_not_compute_reads_as_its_training_mean() -> None:
    from ml.features import RIDGE_FEATURE_NAMES

    sensors = np.random.default_rng(41).integers(0, 6, size=400)
    x = _sensor_rows(sensors, seed=41)
    y = np.column_stack([x[:, 0], -x[:, 1], x[:, 2]])
    ridge = [FEATURE_NAMES.index(n) for n in RIDGE_FEATURE_NAMES]
    model = make_mlp(quick=True).fit(x, y)
    missing = x.copy()
    missing[:, ridge] = np.nan  # a context fitted without the ridge
    at_mean = x.copy()
    at_mean[:, ridge] = model.named_steps["scale"].scaler_.mean_[ridge]
    np.testing.assert_allclose(model.predict(missing), model.predict(at_mean), atol=1e-5)
    x[:, ridge] = np.nan
    assert np.isfinite(make_mlp(quick=True).fit(x, y).predict(x)).all()  # fitted without them too
