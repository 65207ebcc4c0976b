"""A network's step length comes from its data: a 15-minute network (real METR-LA readings averaged over
three 5-minute steps) gets 15-minute features and targets 1, 2 and 4 steps ahead; steps that do not divide
the horizons are refused with one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cli.main import main
from ml.dataset import load_metrla
from ml.features import FEATURE_NAMES, HORIZONS_MIN, build_features, fit_context, history_from_speeds
from ml.network import load_network
from ml.training_set import examples, window_ends

QUARTER_MS = 15 * 60_000
SENSORS = 8


def quarter_hour_readings(days: int = 10):
    """(times_ms, sensor ids, speeds (T, N), 0 = missing): 5-minute METR-LA means over each quarter hour."""
    data = load_metrla()
    start = int(np.datetime64("2012-04-02", "ms").astype(np.int64))
    part = data.only(list(data.sensor_ids[30:30 + SENSORS])).between(start, start + days * 86_400_000)
    speed = history_from_speeds(part.speed).reshape(-1, 3, SENSORS)
    counts = np.isfinite(speed).sum(1)
    means = np.where(counts > 0, np.nansum(speed, 1) / np.maximum(counts, 1), 0.0)
    return part.times_ms[::3], part.sensor_ids, means


@pytest.fixture(scope="module")
def quarter_network(tmp_path_factory):
    times, ids, speed = quarter_hour_readings()
    root = tmp_path_factory.mktemp("quarter")
    pd.DataFrame({"sensor_id": np.tile(ids, len(times)), "time": np.repeat(times, len(ids)),
                  "speed": speed.ravel()}).to_csv(root / "readings.csv", index=False)
    located = pd.read_csv(load_network().root / "sensors.csv", dtype={"sensor_id": str})
    located[located.sensor_id.isin(ids)].to_csv(root / "sensors.csv", index=False)
    assert main(["network", "import", "--name", "quarter", "--readings", str(root / "readings.csv"),
                 "--locations", str(root / "sensors.csv"), "--output", str(root / "net")]) == 0
    return load_network(root / "net"), times, ids, speed


def test_the_step_is_read_from_the_data(quarter_network) -> None:
    network, times, _ids, _speed = quarter_network
    assert network.step_ms == QUARTER_MS
    data = network.readings()
    assert data.step_ms == QUARTER_MS and data.n_steps == len(times)


def test_features_and_targets_run_at_the_networks_step(quarter_network) -> None:
    network = quarter_network[0]
    data = network.readings()
    ctx = fit_context(data, network.adjacency())
    assert ctx.step_ms == QUARTER_MS and ctx.profile.shape[2] == 96  # quarter hours in a day
    x, y, meta = examples(data, ctx, "train")
    ends = window_ends(data, "train")
    assert len(x) == len(ends) * SENSORS
    # Targets 15, 30 and 60 minutes ahead are 1, 2 and 4 steps at this step.
    t = ends[5]
    rows = meta.step_ms == data.times_ms[t]
    want = history_from_speeds(data.speed)[[t + 1, t + 2, t + 4]].T
    np.testing.assert_array_equal(y[rows], want)
    # The features of a window are build_features on its 12 quarter hours (3 hours of history).
    hist = history_from_speeds(data.speed[t - 11: t + 1])
    np.testing.assert_allclose(x[rows], build_features(hist, int(data.times_ms[t]), ctx), rtol=1e-6, atol=1e-4)
    # Time of day moves by a quarter hour per step: tod of the next window is one 96th of a turn on.
    tod = FEATURE_NAMES.index("tod_sin"), FEATURE_NAMES.index("tod_cos")
    angle = [np.arctan2(*x[meta.step_ms == data.times_ms[k]][0, list(tod)]) for k in (t, t + 1)]
    assert (angle[1] - angle[0]) % (2 * np.pi) == pytest.approx(2 * np.pi / 96)


def test_a_step_that_does_not_divide_the_horizons_is_refused(tmp_path, capsys) -> None:
    times, ids, speed = quarter_hour_readings(days=3)
    ten = times[0] + np.arange(len(times)) * 10 * 60_000  # the same values every 10 minutes
    pd.DataFrame({"sensor_id": np.tile(ids, len(ten)), "time": np.repeat(ten, len(ids)),
                  "speed": speed.ravel()}).to_csv(tmp_path / "readings.csv", index=False)
    located = pd.read_csv(load_network().root / "sensors.csv", dtype={"sensor_id": str})
    located[located.sensor_id.isin(ids)].to_csv(tmp_path / "sensors.csv", index=False)
    code = main(["network", "import", "--name", "ten", "--readings", str(tmp_path / "readings.csv"),
                 "--locations", str(tmp_path / "sensors.csv"), "--output", str(tmp_path / "net")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert f"a step of 10 min does not divide the horizons ({', '.join(map(str, HORIZONS_MIN))} min)" in err
