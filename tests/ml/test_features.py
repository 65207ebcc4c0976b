"""Features use readings at or before t only, and the context is fitted on the training period only."""

from __future__ import annotations

import numpy as np
import pytest

from ml.dataset import TRAIN_END_MS, MetrLA, load_metrla
from ml.exceptions import DataError
from ml.features import (
    FEATURE_NAMES,
    HISTORY_STEPS,
    FeatureContext,
    build_features,
    build_features_batch,
    feature_columns,
    fit_context,
    history_from_speeds,
)
from ml.training_set import examples, iter_example_chunks, read_feature_table, window_ends, write_feature_table

DAY_MS = 24 * 60 * 60 * 1000


@pytest.fixture(scope="module")
def small() -> MetrLA:
    """Two days either side of the train/validation boundary, 15 sensors."""
    data = load_metrla()
    return data.between(TRAIN_END_MS - 2 * DAY_MS, TRAIN_END_MS + 2 * DAY_MS).only(list(data.sensor_ids[:15]))


@pytest.fixture(scope="module")
def ctx(small: MetrLA) -> FeatureContext:
    return fit_context(small)


def _features_at(data: MetrLA, ctx: FeatureContext, t: int) -> np.ndarray:
    """The features of the window ending at step index t, through the training-set windowing."""
    for x, _, meta in iter_example_chunks(data, ctx, None, chunk_windows=64):
        rows = meta.step_ms == data.times_ms[t]
        if rows.any():
            return x[rows]
    raise AssertionError(f"no window ends at step {t}")


def _with_speed(data: MetrLA, speed: np.ndarray) -> MetrLA:
    return MetrLA(speed, data.times_ms, data.sensor_ids)


def test_features_ignore_every_reading_after_t(small: MetrLA, ctx: FeatureContext) -> None:
    rng = np.random.default_rng(1)
    for t in (HISTORY_STEPS - 1 + 5, small.n_steps // 2, small.n_steps - 13):
        before = _features_at(small, ctx, t)
        speed = small.speed.copy()
        speed[t + 1 :] = rng.uniform(1.0, 80.0, size=speed[t + 1 :].shape)  # rewrite the whole future
        speed[t + 1 :: 7] = 0.0  # and make some of it missing
        after = _features_at(_with_speed(small, speed), ctx, t)
        assert np.array_equal(before, after), f"a feature at step {t} changed when only readings after t changed"


def test_features_change_when_readings_at_or_before_t_change(small: MetrLA, ctx: FeatureContext) -> None:
    t = small.n_steps // 2
    base = _features_at(small, ctx, t)
    for lag in range(HISTORY_STEPS):
        speed = small.speed.copy()
        speed[t - lag, 3] = 5.0 if speed[t - lag, 3] != 5.0 else 70.0
        changed = _features_at(_with_speed(small, speed), ctx, t)
        assert not np.array_equal(base, changed), f"no feature reacts to the reading at t-{lag}"


def test_targets_are_the_readings_15_30_60_minutes_ahead_with_zeros_missing(small: MetrLA, ctx: FeatureContext) -> None:
    x, y, meta = examples(small, ctx, "all")
    t = window_ends(small)[10]
    rows = np.flatnonzero(meta.step_ms == small.times_ms[t])
    for j, steps in enumerate((3, 6, 12)):
        expected = small.speed[t + steps].astype(float)
        expected[expected == 0] = np.nan
        np.testing.assert_array_equal(y[rows, j], expected)
    assert x.shape == (len(y), len(FEATURE_NAMES))


def test_build_features_is_the_batch_function_on_one_history(small: MetrLA, ctx: FeatureContext) -> None:
    t = 40
    history = history_from_speeds(small.speed[t - HISTORY_STEPS + 1 : t + 1])
    single = build_features(history, int(small.times_ms[t]), ctx)
    batch = build_features_batch(history[None], small.times_ms[t : t + 1], ctx)[0]
    assert single.shape == (len(small.sensor_ids), len(FEATURE_NAMES))
    assert np.array_equal(single, batch)
    assert np.isfinite(single).all()


def test_feature_columns_are_the_batch_rows_column_by_column(small: MetrLA, ctx: FeatureContext) -> None:
    ends = np.arange(40, 52)
    histories = np.stack([history_from_speeds(small.speed[t - HISTORY_STEPS + 1 : t + 1]) for t in ends])
    columns = feature_columns(histories, small.times_ms[ends], ctx)
    rows = build_features_batch(histories, small.times_ms[ends], ctx)
    assert len(columns) == len(FEATURE_NAMES)
    assert all(c.shape == (len(ends), len(small.sensor_ids)) and c.dtype == np.float64 for c in columns)
    assert np.array_equal(np.stack([c.astype(np.float32) for c in columns], axis=-1), rows)


def test_all_missing_history_still_gives_finite_features(ctx: FeatureContext) -> None:
    history = np.full((HISTORY_STEPS, len(ctx.sensor_ids)), np.nan)
    features = build_features(history, TRAIN_END_MS, ctx)
    assert np.isfinite(features).all()
    assert np.all(features[:, FEATURE_NAMES.index("n_missing")] == HISTORY_STEPS)


def test_history_from_speeds_turns_zeros_into_nan() -> None:
    history = history_from_speeds(np.array([[0.0, 55.5], [61.0, 0.0]]))
    assert np.isnan(history[0, 0]) and np.isnan(history[1, 1])
    assert history[0, 1] == 55.5


def test_wrong_history_shape_is_a_data_error(ctx: FeatureContext) -> None:
    with pytest.raises(DataError, match="expected"):
        build_features(np.zeros((HISTORY_STEPS - 1, len(ctx.sensor_ids))), TRAIN_END_MS, ctx)


def test_context_uses_only_training_steps(small: MetrLA, ctx: FeatureContext) -> None:
    speed = small.speed.copy()
    speed[small.times_ms >= TRAIN_END_MS] = 11.0  # rewrite the whole validation period
    refit = fit_context(_with_speed(small, speed))
    assert np.array_equal(refit.profile, ctx.profile)
    assert np.array_equal(refit.sensor_mean, ctx.sensor_mean)
    assert ctx.ridge is not None and np.array_equal(refit.ridge.coef, ctx.ridge.coef)
    assert np.array_equal(refit.ridge.intercept, ctx.ridge.intercept)
    assert ctx.train_end_ms <= TRAIN_END_MS


def test_the_network_ridge_learns_from_targets_in_the_training_period(small: MetrLA, ctx: FeatureContext) -> None:
    speed = small.speed.copy()
    train = np.flatnonzero(small.times_ms < TRAIN_END_MS)
    speed[train[len(train) // 2 :]] = 11.0  # the second half of the training period
    refit = fit_context(_with_speed(small, speed))
    assert not np.array_equal(refit.ridge.coef, ctx.ridge.coef)


def _ridge_columns(ctx: FeatureContext, history: np.ndarray, step_ms: int) -> np.ndarray:
    from ml.features import RIDGE_FEATURE_NAMES

    row = build_features(history, step_ms, ctx)
    return row[:, [FEATURE_NAMES.index(n) for n in RIDGE_FEATURE_NAMES]]


def _scrambled(ctx: FeatureContext, fit: int) -> FeatureContext:
    """``ctx`` with fit ``fit`` of the network ridge (the one of the days of that parity) replaced by noise."""
    from dataclasses import replace

    coef, intercept = ctx.ridge.coef.copy(), ctx.ridge.intercept.copy()
    coef[fit] = np.random.default_rng(fit).normal(size=coef[fit].shape)
    intercept[fit] += 5.0
    return replace(ctx, ridge=replace(ctx.ridge, coef=coef, intercept=intercept))


def test_a_training_window_reads_the_ridge_of_the_other_half_of_the_days(small: MetrLA, ctx: FeatureContext) -> None:
    from ml.dataset import day_parity

    t = int(np.flatnonzero(small.times_ms < ctx.train_end_ms)[HISTORY_STEPS + 30])
    step_ms = int(small.times_ms[t])
    history = history_from_speeds(small.speed[t - HISTORY_STEPS + 1 : t + 1])
    own = int(day_parity(np.array([step_ms]))[0])
    before = _ridge_columns(ctx, history, step_ms)
    assert np.isfinite(before).all()
    assert np.array_equal(_ridge_columns(_scrambled(ctx, own), history, step_ms), before)  # never its own days' fit
    assert not np.allclose(_ridge_columns(_scrambled(ctx, 1 - own), history, step_ms), before)


def test_a_window_after_the_training_period_reads_both_fits(small: MetrLA, ctx: FeatureContext) -> None:
    t = int(np.flatnonzero(small.times_ms >= TRAIN_END_MS)[HISTORY_STEPS])
    step_ms = int(small.times_ms[t])
    history = history_from_speeds(small.speed[t - HISTORY_STEPS + 1 : t + 1])
    before = _ridge_columns(ctx, history, step_ms)
    for fit in (0, 1):
        assert not np.allclose(_ridge_columns(_scrambled(ctx, fit), history, step_ms), before)


def test_a_context_without_the_ridge_gives_nan_ridge_columns_and_finite_others(small: MetrLA,
                                                                             ctx: FeatureContext) -> None:
    from dataclasses import replace

    t = small.n_steps - 13
    history = history_from_speeds(small.speed[t - HISTORY_STEPS + 1 : t + 1])
    row = build_features(history, int(small.times_ms[t]), replace(ctx, ridge=None))
    ridge = _ridge_columns(replace(ctx, ridge=None), history, int(small.times_ms[t]))
    assert np.isnan(ridge).all()
    assert np.isfinite(row).sum() == row.size - ridge.size


def test_context_round_trips_through_npz_bytes(ctx: FeatureContext) -> None:
    back = FeatureContext.from_bytes(ctx.to_bytes())
    assert back.sensor_ids == ctx.sensor_ids
    assert np.array_equal(back.profile, ctx.profile) and np.array_equal(back.w_up, ctx.w_up)
    assert (back.train_start_ms, back.train_end_ms) == (ctx.train_start_ms, ctx.train_end_ms)
    assert np.array_equal(back.ridge.coef, ctx.ridge.coef) and np.array_equal(back.ridge.scale, ctx.ridge.scale)


def test_a_context_stored_before_the_ridge_loads_without_it(ctx: FeatureContext) -> None:
    from dataclasses import replace

    back = FeatureContext.from_bytes(replace(ctx, ridge=None).to_bytes())
    assert back.ridge is None and np.array_equal(back.profile, ctx.profile)


def test_feature_table_round_trips_through_parquet(small: MetrLA, ctx: FeatureContext, tmp_path) -> None:
    x, y, meta = examples(small, ctx, "val", stride=50)
    path = tmp_path / "features.parquet"
    write_feature_table(path, x, y, meta)
    x2, y2, meta2 = read_feature_table(path, sensor_ids=small.sensor_ids)
    order = np.lexsort((meta.sensor_index, meta.step_ms))
    assert np.array_equal(x2, x[order])
    np.testing.assert_array_equal(y2, y[order])
    assert np.array_equal(meta2.sensor_index, meta.sensor_index[order])


def test_graph_features_follow_the_direction_of_the_road(ctx: FeatureContext) -> None:
    """A slowdown at one sensor reaches the diffused deviations of the sensors it is upstream of, and
    no others: w_up rows weigh upstream sensors, so only sensors that have it upstream see it in diff_up1."""
    n = ctx.n_sensors
    history = np.tile(ctx.profile[:, 0, 100][None, :], (HISTORY_STEPS, 1))
    step_ms = TRAIN_END_MS - DAY_MS
    src = int(np.argmax((ctx.w_up > 0).sum(0)))  # a sensor that is upstream of at least one other
    before = build_features(history, step_ms, ctx)
    slowed = history.copy()
    slowed[-1, src] = 10.0
    after = build_features(slowed, step_ms, ctx)
    up1 = FEATURE_NAMES.index("diff_up1_last")
    changed = np.flatnonzero(after[:, up1] != before[:, up1])
    assert set(changed.tolist()) == set(np.flatnonzero(ctx.w_up[:, src] > 0).tolist())
    assert np.all(after[changed, up1] < before[changed, up1])  # the drop arrives as a negative deviation
    down1 = FEATURE_NAMES.index("diff_down1_last")
    assert set(np.flatnonzero(after[:, down1] != before[:, down1]).tolist()) == set(
        np.flatnonzero(ctx.w_down[:, src] > 0).tolist()
    )
    assert after.shape == (n, len(FEATURE_NAMES))


def test_the_first_models_features_are_an_unchanged_prefix() -> None:
    from ml.features import BASE_FEATURE_NAMES, RIDGE_FEATURE_NAMES
    from ml.graph_features import GRAPH_FEATURE_NAMES

    assert FEATURE_NAMES[: len(BASE_FEATURE_NAMES)] == BASE_FEATURE_NAMES
    assert len(BASE_FEATURE_NAMES) == 47 and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert FEATURE_NAMES[len(BASE_FEATURE_NAMES) :] == (*GRAPH_FEATURE_NAMES, *RIDGE_FEATURE_NAMES)
