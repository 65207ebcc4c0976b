"""Registry round trip: register, LATEST, load, identical predictions; refusals with one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge

from ml.conformal import fit_binned_conformal
from ml.dataset import TRAIN_END_MS, load_metrla
from ml.exceptions import ModelRegistryError
from ml.features import FEATURE_NAMES, fit_context
from ml.registry import ModelBundle, ModelRegistry
from ml.training_set import examples

DAY_MS = 24 * 60 * 60 * 1000


@pytest.fixture(scope="module")
def bundle_and_rows() -> tuple[ModelBundle, np.ndarray]:
    data = load_metrla()
    data = data.between(TRAIN_END_MS - 2 * DAY_MS, TRAIN_END_MS + DAY_MS).only(list(data.sensor_ids[:8]))
    ctx = fit_context(data)
    x, y, _ = examples(data, ctx, "all", stride=3)
    ok = np.isfinite(y[:, 0])
    last = x[:, FEATURE_NAMES.index("speed_last")]
    estimators = {
        15: HistGradientBoostingRegressor(max_iter=5, loss="absolute_error").fit(x[ok], y[ok, 0] - last[ok]),
        30: RandomForestRegressor(n_estimators=3, max_depth=4, random_state=0).fit(x[ok], y[ok, 0] - last[ok]),
        60: Ridge(alpha=1000.0).fit(x[ok], y[ok, 0] - last[ok]),
    }
    intervals = {h: fit_binned_conformal(y[:, 0], last, min_bin_rows=50) for h in estimators}
    bundle = ModelBundle(
        estimators, dict.fromkeys(estimators, "speed_last"), intervals, ctx,
        model_names={15: "hgb", 30: "rf", 60: "ridge"}, metadata={"validation_metrics": {"15": {"val_mae": 1.0}}},
    )
    return bundle, x


def test_register_latest_load_predict_identical(bundle_and_rows, tmp_path) -> None:
    bundle, x = bundle_and_rows
    registry = ModelRegistry(tmp_path / "models")
    assert registry.latest_version() is None and registry.versions() == []
    version = registry.register(bundle)
    assert registry.latest_version() == version
    assert registry.versions() == [version]
    loaded = registry.load()
    assert loaded.version == version and loaded.model_names == bundle.model_names
    before, after = bundle.predict(x), loaded.predict(x)
    for h in (15, 30, 60):
        for a, b in zip(before[h], after[h], strict=True):
            assert np.array_equal(a, b)
        yhat, lower, upper = after[h]
        assert np.all(lower <= yhat) and np.all(yhat <= upper)


def test_metadata_records_features_libraries_and_metrics(bundle_and_rows, tmp_path) -> None:
    bundle, _ = bundle_and_rows
    registry = ModelRegistry(tmp_path)
    version = registry.register(bundle)
    metadata = json.loads((tmp_path / version / "metadata.json").read_text())
    assert metadata["feature_names"] == list(FEATURE_NAMES)
    assert set(metadata["libraries"]) >= {"python", "numpy", "scikit-learn"}
    assert metadata["validation_metrics"]["15"]["val_mae"] == 1.0
    assert metadata["coverage"] == 0.9
    assert (tmp_path / version / "model.skops").stat().st_size > 0
    assert (tmp_path / version / "context.npz").stat().st_size > 0


def test_latest_moves_to_the_newest_version(bundle_and_rows, tmp_path) -> None:
    bundle, _ = bundle_and_rows
    registry = ModelRegistry(tmp_path)
    first = registry.register(ModelBundle(bundle.estimators, bundle.base_features, bundle.intervals, bundle.context))
    second = registry.register(ModelBundle(bundle.estimators, bundle.base_features, bundle.intervals, bundle.context))
    assert first != second and registry.latest_version() == second
    assert registry.load(first).version == first


def test_empty_registry_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(ModelRegistryError, match="has no model yet"):
        ModelRegistry(tmp_path / "empty").load()


def test_untrusted_types_are_refused(bundle_and_rows, tmp_path, monkeypatch) -> None:
    bundle, _ = bundle_and_rows
    registry = ModelRegistry(tmp_path)
    registry.register(bundle)
    monkeypatch.setattr("ml.registry.TRUSTED_TYPES", ())
    with pytest.raises(ModelRegistryError, match="untrusted types"):
        registry.load()


def test_the_refusal_names_exactly_the_types_outside_the_list(bundle_and_rows, tmp_path, monkeypatch) -> None:
    from ml.registry import TRUSTED_TYPES

    bundle, _ = bundle_and_rows
    registry = ModelRegistry(tmp_path)
    version = registry.register(bundle)
    tree = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    monkeypatch.setattr("ml.registry.TRUSTED_TYPES", tuple(t for t in TRUSTED_TYPES if t != tree))
    with pytest.raises(ModelRegistryError) as refused:
        registry.load()
    assert str(refused.value) == f"model {version} contains untrusted types: {tree}"


@pytest.mark.integration
@pytest.mark.hdfs
def test_registry_round_trip_on_hdfs(bundle_and_rows, hdfs_service, monkeypatch) -> None:
    import uuid

    from apache_beam.io.filesystems import FileSystems

    monkeypatch.setattr(FileSystems, "_pipeline_options", FileSystems._pipeline_options)  # restored afterwards
    bundle, x = bundle_and_rows
    options = {"hdfs_host": hdfs_service["host"], "hdfs_port": hdfs_service["http_port"],
               "hdfs_user": hdfs_service["user"]}
    root = f"hdfs://tests/models-{uuid.uuid4().hex[:8]}"
    registry = ModelRegistry(root, hdfs_options=options)
    try:
        _hdfs_round_trip(registry, bundle, x)
    finally:
        if FileSystems.exists(root):
            FileSystems.delete([root])


def _hdfs_round_trip(registry: ModelRegistry, bundle: ModelBundle, x: np.ndarray) -> None:
    assert registry.latest_version() is None
    first = registry.register(ModelBundle(bundle.estimators, bundle.base_features, bundle.intervals, bundle.context))
    second = registry.register(ModelBundle(bundle.estimators, bundle.base_features, bundle.intervals, bundle.context))
    assert registry.latest_version() == second
    assert registry.versions() == sorted([first, second])
    loaded = registry.load()
    assert loaded.version == second
    expected = bundle.predict(x)
    for h, got in loaded.predict(x).items():
        for a, b in zip(got, expected[h], strict=True):
            assert np.array_equal(a, b)


def test_a_bundle_on_the_first_feature_list_round_trips_and_takes_todays_rows(bundle_and_rows, tmp_path) -> None:
    from ml.features import BASE_FEATURE_NAMES

    bundle, x = bundle_and_rows
    cols = [FEATURE_NAMES.index(n) for n in BASE_FEATURE_NAMES]
    last = x[:, FEATURE_NAMES.index("speed_last")]
    est = Ridge(alpha=10.0).fit(x[:, cols], np.sin(last))
    old = ModelBundle({15: est}, {15: "speed_last"}, {15: bundle.intervals[15]}, bundle.context,
                      feature_columns={15: BASE_FEATURE_NAMES})
    expected = np.clip(last + est.predict(x[:, cols]), 0, 100)
    np.testing.assert_allclose(old.predict_point(x, 15), expected, rtol=1e-6)
    registry = ModelRegistry(tmp_path / "models")
    version = registry.register(old)
    # A model registered before per-horizon columns existed: only the list it was trained on.
    path = tmp_path / "models" / version / "metadata.json"
    metadata = json.loads(path.read_text())
    del metadata["feature_columns"]
    metadata["feature_names"] = list(BASE_FEATURE_NAMES)
    path.write_text(json.dumps(metadata))
    loaded = registry.load(version)
    assert loaded.feature_columns[15] == BASE_FEATURE_NAMES
    assert np.array_equal(loaded.predict_point(x, 15), old.predict_point(x, 15))


def test_a_model_needing_unknown_features_is_refused(bundle_and_rows) -> None:
    bundle, _ = bundle_and_rows
    with pytest.raises(ModelRegistryError, match="does not compute: no_such_feature"):
        ModelBundle({15: None}, {15: "speed_last"}, {15: bundle.intervals[15]}, bundle.context,
                    feature_columns={15: ("speed_last", "no_such_feature")})


@pytest.mark.parametrize("candidate", ["ridge", "mlp", "hgb_mlp_chain"])
def test_a_rows_forecast_does_not_depend_on_the_rows_predicted_with_it(candidate) -> None:
    """The handler predicts a catch-up's steps in one call, grouped as the runner batches them: each step must come
    out to the last bit as it would alone, or two backfills of the same data would differ (a BLAS ridge sums a row
    differently with the row count, ``ml.rowwise_ridge``)."""
    from ml_bundles import quick_examples

    from ml.train import train

    quick = quick_examples()
    bundle, _ = train(quick.data, quick.table, quick.context, quick=True, candidates=(candidate,), max_rows=4000,
                      progress=lambda _: None)
    assert candidate in bundle.model_names.values()
    n = bundle.context.n_sensors
    rows = quick.x_val[: 16 * n]
    together = bundle.predict(rows)
    for size in (n, 3 * n, 1):
        apart = [bundle.predict(rows[i : i + size]) for i in range(0, len(rows) if size > 1 else n, size)]
        for h in together:
            for part, whole in enumerate(together[h]):
                alone = np.concatenate([a[h][part] for a in apart])
                np.testing.assert_array_equal(alone, whole[: len(alone)])
