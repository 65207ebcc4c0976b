"""Scoring in batch mode: ``traffic batch backfill`` over validation hours scores every prediction once,
and over the protocol's rows its numbers are ``traffic evaluate``'s (ml.evaluate.evaluate) for the same rows.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from small_models import register_ridge_bundle

from ml.dataset import TRAIN_END_MS, load_metrla
from ml.evaluate import evaluate
from ml.features import HORIZONS_MIN
from ml.registry import ModelBundle
from ml.training_set import window_ends
from pipelines.batch_cli import run

SENSORS = 5
HOURS = 4
START_MS = TRAIN_END_MS + 2 * 24 * 3600 * 1000  # validation readings the model never trained on
END_MS = START_MS + HOURS * 3600 * 1000


def iso(ms: int) -> str:
    return str(np.datetime64(ms, "ms"))


@pytest.fixture(scope="module")
def backfill(tmp_path_factory) -> tuple[ModelBundle, list[dict], list[dict]]:
    root = str(tmp_path_factory.mktemp("registry"))
    bundle = register_ridge_bundle(root, SENSORS)
    out = tmp_path_factory.mktemp("backfill")
    assert run(["backfill", "--registry", root, "--start", iso(START_MS), "--end", iso(END_MS),
                "--output", str(out)]) == 0
    return bundle, pq.read_table(out / "predictions").to_pylist(), pq.read_table(out / "scores").to_pylist()


def _key(r: dict) -> tuple:
    return r["sensor_id"], int(r["event_time"]), int(r["horizon_min"]), r["model_version"]


def test_every_prediction_has_exactly_one_score(backfill) -> None:
    bundle, predictions, scores = backfill
    counts = Counter(_key(s) for s in scores)
    assert set(counts) == {_key(p) for p in predictions}
    assert set(counts.values()) == {1}
    data = load_metrla().only(bundle.context.sensor_ids).between(START_MS, END_MS)
    speed = {(s, int(t)): float(data.speed[i, j]) for i, t in enumerate(data.times_ms)
             for j, s in enumerate(data.sensor_ids)}
    by_key = {_key(p): p for p in predictions}
    for score in scores:
        actual = speed.get((score["sensor_id"], int(score["target_time"])), 0.0)
        if actual > 0:
            assert score["status"] == "SCORED"
            assert score["actual_speed_mph"] == actual
            assert score["error_mph"] == by_key[_key(score)]["predicted_speed_mph"] - actual
        else:  # past the end of the hours read, or a missing reading: never an error of zero
            assert score["status"] == "MISSING"
            assert score["error_mph"] is None and score["inside_interval"] is None
    statuses = Counter(s["status"] for s in scores)
    # The last hour's targets lie after END_MS: those forecasts cannot be checked here.
    assert statuses["MISSING"] >= SENSORS * (3 + 6 + 12)
    assert statuses["SCORED"] > statuses["MISSING"]


def test_scores_equal_traffic_evaluate_on_the_same_rows(backfill) -> None:
    bundle, _, scores = backfill
    data = load_metrla().only(bundle.context.sensor_ids).between(START_MS, END_MS)
    expected, _ = evaluate(bundle, data)
    rows = {int(t) for t in data.times_ms[window_ends(data, "val")]}
    assert len(rows) == data.n_steps - 11 - 12
    for h in HORIZONS_MIN:
        mine = [s for s in scores if s["horizon_min"] == h and int(s["event_time"]) in rows
                and s["status"] == "SCORED"]
        want = expected["val"][str(h)]
        assert len(mine) == want["n"] > 0
        mae = float(np.mean([abs(s["error_mph"]) for s in mine]))
        coverage = float(np.mean([s["inside_interval"] for s in mine]))
        # evaluate predicts all rows in one matrix product, the pipeline one step at a time: the float32
        # features' sums round differently in the 7th digit (the backfill test's 1e-9 is per prediction).
        assert mae == pytest.approx(want["mae"], abs=1e-6), h
        assert coverage == pytest.approx(want["coverage"], abs=1e-12), h
    assert all(int(s["target_time"]) - int(s["event_time"]) == s["horizon_min"] * 60_000 for s in scores)
