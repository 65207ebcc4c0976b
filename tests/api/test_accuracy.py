"""The drift rules (api.accuracy.drift_alarms) and the validation MAE they compare with."""

from __future__ import annotations

import json
from pathlib import Path

from api.accuracy import drift_alarms, validation_mae
from api.settings import ApiSettings


def _row(h: int, mae: float, coverage: float, scored: int = 100, version: str = "v1") -> dict:
    return {"horizon_min": h, "model_version": version, "mae": mae, "coverage": coverage, "scored": scored,
            "missing": 0}


def test_coverage_and_mae_rules_fire_only_out_of_range() -> None:
    settings = ApiSettings(require_vendor=False)  # coverage < 0.8, MAE > 1.5 x validation, >= 30 scores
    reference = {"v1": {15: 2.0, 30: 2.5, 60: 3.0}}
    rows = [_row(15, 2.9, 0.85), _row(30, 3.8, 0.79), _row(60, 4.6, 0.9)]
    fired = {(a["horizon_min"], a["rule"]) for a in drift_alarms(rows, settings, reference)}
    assert fired == {(30, "coverage"), (30, "mae"), (60, "mae")}  # 15: 2.9 < 3.0 and 85 % >= 80 %
    assert drift_alarms([_row(30, 9.0, 0.1, scored=29)], settings, reference) == []  # too few scores
    assert {a["rule"] for a in drift_alarms([_row(15, 9.0, 0.9, version="v2")], settings, reference)} == set()
    stricter = ApiSettings(require_vendor=False, drift_coverage_min=0.9, drift_mae_factor=1.2)
    assert {(a["horizon_min"], a["rule"]) for a in drift_alarms(rows, stricter, reference)} == {
        (15, "coverage"), (15, "mae"), (30, "coverage"), (30, "mae"), (60, "mae")}


def test_validation_mae_comes_from_the_registry_metadata(tmp_path: Path) -> None:
    (tmp_path / "v7").mkdir()
    (tmp_path / "v7" / "metadata.json").write_text(json.dumps(
        {"validation_metrics": {"15": {"val_mae": 2.5}, "60": {"val_mae": 3.25}}}))
    cache: dict = {}
    assert validation_mae(tmp_path, "v7", cache) == {15: 2.5, 60: 3.25}
    assert validation_mae(tmp_path, "missing", cache) == {}
    assert set(cache) == {"v7", "missing"}
