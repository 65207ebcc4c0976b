"""Training's pure parts (the `traffic train` command's tests are tests/cli/test_train_cmd.py)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from ml_bundles import quick_examples

from ml.dataset import TRAIN_END_MS, load_metrla
from ml.exceptions import DataError
from ml.models import CANDIDATE_NAMES
from ml.train import quick_subset, quick_window, train, validation_halves
from ml.train_args import QUICK_SENSORS, check_arguments


def test_validation_halves_split_whole_days() -> None:
    day = 24 * 60 * 60 * 1000
    steps = np.array([0, day - 1, day, 2 * day + 5]) + 10 * day
    select, calibrate = validation_halves(steps)
    assert select.tolist() == [True, True, False, True]
    assert np.array_equal(calibrate, ~select)


def test_quick_window_is_the_quick_subset() -> None:
    data = load_metrla()
    start_ms, end_ms, sensors = quick_window(tuple(data.sensor_ids))
    subset = quick_subset(data)
    assert start_ms < TRAIN_END_MS < end_ms and len(sensors) == QUICK_SENSORS
    assert subset.sensor_ids == sensors
    assert subset.times_ms[0] == start_ms and subset.times_ms[-1] < end_ms


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"coverage": 0.9, "max_rows": None, "candidates": None, **kw})


def test_check_arguments_reads_the_candidates_flag() -> None:
    assert check_arguments(_args()) is None  # the default set
    assert check_arguments(_args(candidates="all")) == CANDIDATE_NAMES
    assert check_arguments(_args(candidates="last_value,ridge")) == ("last_value", "ridge")
    with pytest.raises(DataError, match="unknown --candidates gpt"):
        check_arguments(_args(candidates="ridge,gpt"))


def test_a_candidate_draws_the_same_rows_whichever_candidates_are_fitted_beside_it() -> None:
    quick = quick_examples()

    def ridge_rows(candidates: tuple[str, ...]) -> list[tuple]:
        _, rows = train(quick.data, quick.table, quick.context, quick=True, candidates=candidates, max_rows=2000,
                        progress=lambda _: None)
        return [(r["horizon_min"], r["val_mae"]) for r in rows if r["model"] == "ridge"]

    alone = ridge_rows(("ridge",))
    assert len(alone) == 3 and len(quick.x_train) > 2000  # a capped sample, not every row
    assert ridge_rows(("last_value", "hist_gradient_boosting", "ridge")) == alone
