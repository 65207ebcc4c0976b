"""Training's pure parts (the `traffic train` command's tests are tests/cli/test_train_cmd.py)."""

from __future__ import annotations

import numpy as np

from ml.dataset import TRAIN_END_MS, load_metrla
from ml.train import QUICK_SENSORS, quick_subset, quick_window, validation_halves


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
