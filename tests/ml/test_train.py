"""A quick training run end to end through the `traffic train` command."""

from __future__ import annotations

import json

import numpy as np

from cli.main import main
from ml.dataset import load_metrla
from ml.features import FEATURE_NAMES
from ml.registry import ModelRegistry
from ml.train import quick_subset, validation_halves
from ml.training_set import examples


def test_quick_train_registers_a_selected_calibrated_model(tmp_path, capsys) -> None:
    root = tmp_path / "models"
    assert main(["train", "--quick", "--registry", str(root)]) == 0
    out = capsys.readouterr()
    assert "registered model" in out.out
    assert "hist_gradient_boosting" in out.out and "last_value" in out.out and "hgb_graph" in out.out
    assert "h=15 min" in out.err  # progress lines

    registry = ModelRegistry(root)
    bundle = registry.load()
    metadata = json.loads((root / bundle.version / "metadata.json").read_text())
    assert set(metadata["validation_metrics"]) == {"15", "30", "60"}
    selected = [row for row in metadata["candidates"] if row.get("selected")]
    assert len(selected) == 3
    for row in selected:  # the winner has the lowest selection-half MAE of its horizon
        rivals = [r["val_select_mae"] for r in metadata["candidates"] if r["horizon_min"] == row["horizon_min"]]
        assert row["val_select_mae"] == min(rivals)
        learned = row["model"] not in ("last_value", "historical_average")
        assert metadata["intervals"][str(row["horizon_min"])]["kind"] == ("scaled" if learned else "binned")

    data = quick_subset(load_metrla())
    x, y, _ = examples(data, bundle.context, "val")
    predictions = bundle.predict(x)
    last = x[:, FEATURE_NAMES.index("speed_last")]
    # Measured on this quick run (2026-12-04): coverage 0.911 / 0.907 / 0.895 of the nominal 0.90, and MAE
    # 0.948 / 0.933 / 0.779 of the last-value forecast's. Coverage may stray 0.03 from nominal (~6 standard
    # errors of a 0.9 proportion over ~6,700 windows); the model must beat last value by the margins below,
    # each about 0.02-0.04 looser than measured.
    max_mae_ratio = {15: 0.97, 30: 0.96, 60: 0.82}
    for j, h in enumerate((15, 30, 60)):
        yhat, lower, upper = predictions[h]
        assert np.all(lower <= yhat) and np.all(yhat <= upper)
        ok = np.isfinite(y[:, j])
        coverage = np.mean((lower[ok] <= y[ok, j]) & (y[ok, j] <= upper[ok]))
        assert abs(coverage - bundle.coverage) <= 0.03, (h, coverage)
        ratio = np.abs(yhat[ok] - y[ok, j]).mean() / np.abs(last[ok] - y[ok, j]).mean()
        assert ratio <= max_mae_ratio[h], (h, ratio)


def test_validation_halves_split_whole_days() -> None:
    day = 24 * 60 * 60 * 1000
    steps = np.array([0, day - 1, day, 2 * day + 5]) + 10 * day
    select, calibrate = validation_halves(steps)
    assert select.tolist() == [True, True, False, True]
    assert np.array_equal(calibrate, ~select)


def test_train_on_a_missing_file_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["train", "--data", str(tmp_path / "nope.npz"), "--registry", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("traffic: error:") and "does not exist" in err and "\n" not in err


def test_train_from_a_feature_table_directory(tmp_path, capsys) -> None:
    from ml.features import fit_context
    from ml.training_set import write_feature_table

    data = quick_subset(load_metrla())
    ctx = fit_context(data)
    table_dir = tmp_path / "features"
    table_dir.mkdir()
    for i, split in enumerate(("train", "val")):
        write_feature_table(table_dir / f"part-{i}.parquet", *examples(data, ctx, split))
    (table_dir / "context.npz").write_bytes(ctx.to_bytes())
    root = tmp_path / "models"
    assert main(["train", "--features", str(table_dir), "--quick", "--registry", str(root)]) == 0
    assert "registered model" in capsys.readouterr().out
    bundle = ModelRegistry(root).load()
    assert bundle.context.sensor_ids == ctx.sensor_ids
    assert np.array_equal(bundle.context.profile, ctx.profile)
    assert bundle.metadata["training_rows"] == len(examples(data, ctx, "train")[0])


def test_unknown_candidates_are_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["train", "--quick", "--registry", str(tmp_path), "--candidates", "ridge,gpt"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown --candidates gpt" in err and "hgb_graph" in err and "\n" not in err


def test_too_small_max_rows_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["train", "--quick", "--registry", str(tmp_path), "--max-rows", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--max-rows must be at least 1000" in err and "\n" not in err
