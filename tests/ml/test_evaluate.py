"""`traffic evaluate`: JSON keyed by split and horizon, the markdown report and plots, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from cli.main import main
from ml.conformal import fit_binned_conformal
from ml.dataset import TRAIN_END_MS, MetrLA, load_metrla
from ml.features import FEATURE_NAMES, fit_context
from ml.registry import ModelBundle, ModelRegistry
from ml.training_set import examples

DAY_MS = 24 * 60 * 60 * 1000


def _save_npz(data: MetrLA, path) -> None:
    np.savez(
        path,
        speed=data.speed,
        timestamps=data.times_ms.astype("datetime64[ms]").astype("datetime64[m]"),
        sensor_ids=np.array(data.sensor_ids),
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[str, str]:
    """A small data file (6 sensors, 2 training + 2 validation days) and a registry holding a small model."""
    root = tmp_path_factory.mktemp("evaluate")
    data = load_metrla()
    data = data.between(TRAIN_END_MS - 2 * DAY_MS, TRAIN_END_MS + 2 * DAY_MS).only(list(data.sensor_ids[:6]))
    _save_npz(data, root / "small.npz")
    ctx = fit_context(data)
    x, y, _ = examples(data, ctx, "train")
    last = x[:, FEATURE_NAMES.index("speed_last")]
    estimators, intervals = {}, {}
    for j, h in enumerate((15, 30, 60)):
        ok = np.isfinite(y[:, j])
        estimators[h] = HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(x[ok], y[ok, j] - last[ok])
        intervals[h] = fit_binned_conformal(y[:, j], last + estimators[h].predict(x), min_bin_rows=100)
    bundle = ModelBundle(estimators, dict.fromkeys(estimators, "speed_last"), intervals, ctx,
                         model_names=dict.fromkeys(estimators, "hist_gradient_boosting"))
    ModelRegistry(root / "models").register(bundle)
    return str(root / "small.npz"), str(root / "models")


def test_json_is_keyed_by_split_and_horizon(setup, tmp_path, capsys) -> None:
    data, registry = setup
    assert main(["evaluate", "--data", data, "--registry", registry, "--json", "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["val"]  # the file does not reach the test period
    assert set(result["val"]) == {"15", "30", "60"}
    for metrics in result["val"].values():
        assert {"mae", "rmse", "mape", "coverage", "width", "n", "model", "baselines"} <= set(metrics)
        assert 0 < metrics["mae"] < metrics["rmse"]
        assert 0.0 <= metrics["coverage"] <= 1.0 and metrics["width"] > 0
        assert set(metrics["baselines"]) == {"last_value", "historical_average"}


def test_report_has_the_published_anchors_and_plots(setup, tmp_path, capsys) -> None:
    data, registry = setup
    assert main(["evaluate", "--data", data, "--registry", registry, "--out", str(tmp_path)]) == 0
    assert "report:" in capsys.readouterr().out
    report = (tmp_path / "report.md").read_text()
    assert "Graph WaveNet (published) | 2.69 / 5.15 / 6.9" in report
    assert "DCRNN (published)" in report and "historical average (published)" in report
    for name in ("error_by_horizon.png", "error_by_time_of_day.png", "predicted_vs_actual.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_data_file_is_a_one_line_error(setup, tmp_path, capsys) -> None:
    _, registry = setup
    assert main(["evaluate", "--data", str(tmp_path / "nope.npz"), "--registry", registry]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("traffic: error:") and "does not exist" in err and "\n" not in err


def test_empty_registry_is_a_one_line_error(setup, tmp_path, capsys) -> None:
    data, _ = setup
    assert main(["evaluate", "--data", data, "--registry", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no model yet" in err and "\n" not in err


def test_compare_shows_another_version_beside_this_one(setup, tmp_path, capsys) -> None:
    data, registry = setup
    models = ModelRegistry(registry)
    first = models.latest_version()
    bundle = models.load(first)
    bundle.version = ""
    bundle.model_names = dict.fromkeys(bundle.horizons_min, "copy")
    second = models.register(bundle)
    args = ["evaluate", "--data", data, "--registry", registry, "--version", second, "--compare", first]
    assert main([*args, "--json", "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    for metrics in result["val"].values():
        compared = metrics["compared"]
        assert compared["version"] == first and compared["model"] == "hist_gradient_boosting"
        assert compared["mae"] == pytest.approx(metrics["mae"])  # the same model on the same windows
        assert {"rmse", "mape", "coverage", "width"} <= set(compared)
    report = (tmp_path / "report.md").read_text()
    assert f"hist_gradient_boosting (model {first})" in report and f"| model {first} (validation) |" in report
