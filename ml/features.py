"""The one feature function used by training, batch backfills and streaming inference.

``build_features(history, step_ms, ctx)`` turns the last ``HISTORY_STEPS``
readings of every sensor (steps t-11 .. t, oldest first, NaN = missing) into one
row of ``FEATURE_NAMES`` per sensor. It receives nothing after t, so no feature
can leak a target. Everything fitted (time-of-day x day-type speed profiles,
sensor constants, the normalised road graph, the network ridge of
``ml.network_ridge``) lives in a :class:`FeatureContext` computed from the
training period only (``fit_context``) and stored as ``.npz``.

``feature_columns`` is the same computation over a stack of histories, one
array per feature (what a columnar table stores); ``build_features_batch``
stacks those columns into rows (what a model reads), and ``build_features`` is
that applied to a stack of one, so the feature tables, the training-set builder
and the per-step streaming path share every line.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ml.dataset import DAY_MS, STEP_MS, MetrLA, day_parity, load_adjacency
from ml.exceptions import DataError
from ml.feature_context import FeatureContext
from ml.graph_features import GRAPH_FEATURE_NAMES, graph_columns
from ml.network_ridge import NetworkRidge, fit_network_ridge, fits_network, ridge_inputs, ridge_targets

__all__ = [
    "BASE_FEATURE_NAMES",
    "FEATURE_NAMES",
    "HISTORY_STEPS",
    "HORIZONS_MIN",
    "HORIZON_STEPS",
    "RIDGE_FEATURE_NAMES",
    "steps_supported",
    "window_target_steps",
    "SLOTS_PER_DAY",
    "FeatureContext",
    "build_features",
    "build_features_batch",
    "feature_columns",
    "fit_context",
    "history_from_speeds",
    "slot_and_daytype",
]

HISTORY_STEPS = 12
HORIZONS_MIN: tuple[int, ...] = (15, 30, 60)
HORIZON_STEPS: dict[int, int] = {h: h * 60_000 // STEP_MS for h in HORIZONS_MIN}  # at METR-LA's 5-minute step
SLOTS_PER_DAY = 24 * 60 * 60 * 1000 // STEP_MS  # at METR-LA's 5-minute step
_LAGS = (1, 2, 3, 6, 11)

# The features of the first models (before issue 17); bundles trained on them keep exactly these columns.
BASE_FEATURE_NAMES: tuple[str, ...] = (
    "speed_last",
    *(f"speed_lag{k}" for k in _LAGS),
    "mean_3",
    "mean_6",
    "mean_12",
    "std_12",
    "min_12",
    "max_12",
    "slope_3",
    "slope_6",
    "slope_11",
    "n_missing",
    "last_missing",
    "steps_since_obs",
    "tod_sin",
    "tod_cos",
    "dow_sin",
    "dow_cos",
    "weekend",
    "profile_t",
    "profile_std_t",
    *(f"profile_h{h}" for h in HORIZONS_MIN),
    *(f"profile_delta_h{h}" for h in HORIZONS_MIN),
    "dev_last",
    "dev_mean_3",
    "dev_mean_12",
    "up_last",
    "up_dev",
    "up_slope_3",
    "down_last",
    "down_dev",
    "down_slope_3",
    "hop2_dev",
    "network_dev",
    "network_slope_3",
    "sensor_mean",
    "sensor_std",
    "degree_in",
    "degree_out",
)
# The network-wide ridge's forecast of the deviation change at each horizon (``ml.network_ridge``).
RIDGE_FEATURE_NAMES: tuple[str, ...] = tuple(f"ridge_dev_change_h{h}" for h in HORIZONS_MIN)
FEATURE_NAMES: tuple[str, ...] = (*BASE_FEATURE_NAMES, *GRAPH_FEATURE_NAMES, *RIDGE_FEATURE_NAMES)


def steps_supported(step_ms: int) -> str | None:
    """Why a step length cannot be used, or None: the horizons (minutes) and the day must be whole steps."""
    if step_ms <= 0 or DAY_MS % step_ms or any((h * 60_000) % step_ms for h in HORIZONS_MIN):
        return (f"a step of {step_ms / 60_000:g} min does not divide the horizons ({', '.join(map(str, HORIZONS_MIN))} "
                "min) and the day into whole steps")
    return None


def window_target_steps(step_ms: int) -> int:
    """Steps after t a window needs for its farthest target (12 at 5-minute steps, the protocol's 12 outputs)."""
    return max(HORIZONS_MIN) * 60_000 // step_ms


def slot_and_daytype(times_ms: np.ndarray, step_ms: int = STEP_MS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slot of the day (of ``step_ms``), day type (1 = Saturday/Sunday) and day of week (0 = Monday)."""
    times_ms = np.asarray(times_ms, dtype=np.int64)
    slot = (times_ms % DAY_MS) // step_ms
    dow = (times_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday
    return slot.astype(np.int64), (dow >= 5).astype(np.int64), dow.astype(np.int64)


def history_from_speeds(speed_window: np.ndarray) -> np.ndarray:
    """Loader speeds (0 = missing) to the float64 history ``build_features`` takes (NaN = missing)."""
    history = np.asarray(speed_window, dtype=np.float64).copy()
    history[~np.isfinite(history) | (history <= 0)] = np.nan
    return history


def fit_context(data: MetrLA, adjacency: np.ndarray | None = None) -> FeatureContext:
    """Fit the profiles and sensor constants on the steps of ``data`` whose split is 'train'."""
    train = data.split.of(data.times_ms) == "train"
    if not train.any():
        raise DataError("the data has no steps in the training period; cannot fit the feature context")
    reason = steps_supported(data.step_ms)
    if reason:
        raise DataError(reason)
    slots_per_day = DAY_MS // data.step_ms
    speed = history_from_speeds(data.speed[train])
    times = data.times_ms[train]
    slot, daytype, _ = slot_and_daytype(times, data.step_ms)
    n = speed.shape[1]
    observed = np.isfinite(speed)
    filled = np.where(observed, speed, 0.0)
    sensor_mean = np.divide(filled.sum(0), observed.sum(0), out=np.full(n, np.nan), where=observed.sum(0) > 0)
    overall = float(np.nanmean(speed)) if observed.any() else 60.0
    sensor_mean = np.where(np.isfinite(sensor_mean), sensor_mean, overall)
    sq = np.where(observed, (speed - sensor_mean) ** 2, 0.0).sum(0)
    sensor_std = np.sqrt(np.divide(sq, observed.sum(0), out=np.zeros(n), where=observed.sum(0) > 0))

    key = daytype * slots_per_day + slot
    total = np.zeros((2 * slots_per_day, n))
    total_sq = np.zeros((2 * slots_per_day, n))
    count = np.zeros((2 * slots_per_day, n))
    np.add.at(total, key, filled)
    np.add.at(total_sq, key, filled**2)
    np.add.at(count, key, observed.astype(np.float64))
    # Smooth over +-1 slot (circular) so sparse slots borrow from their neighbours.
    total, total_sq, count = (
        _smooth_slots(a.reshape(2, slots_per_day, n)) for a in (total, total_sq, count)
    )
    prior = 3.0  # shrink thin cells toward the sensor mean
    profile = (total + prior * sensor_mean) / (count + prior)
    var = np.divide(total_sq, count, out=np.zeros_like(total), where=count > 0) - np.divide(
        total, count, out=np.zeros_like(total), where=count > 0
    ) ** 2
    profile_std = np.sqrt(np.clip((var * count + prior * sensor_std**2) / (count + prior), 0.0, None))

    adjacency = load_adjacency(data.sensor_ids) if adjacency is None else np.asarray(adjacency, dtype=np.float64)
    a = adjacency.copy()
    np.fill_diagonal(a, 0.0)
    w_down = _row_normalise(a)
    w_up = _row_normalise(a.T)
    sym = a + a.T
    hop2 = sym @ sym
    np.fill_diagonal(hop2, 0.0)
    ctx = FeatureContext(
        sensor_ids=tuple(data.sensor_ids),
        profile=profile.transpose(2, 0, 1).copy(),
        profile_std=profile_std.transpose(2, 0, 1).copy(),
        sensor_mean=sensor_mean,
        sensor_std=sensor_std,
        w_up=w_up,
        w_down=w_down,
        w_hop2=_row_normalise(hop2),
        degree_in=a.sum(0),
        degree_out=a.sum(1),
        train_start_ms=int(times[0]),
        train_end_ms=int(times[-1]) + data.step_ms,
    )
    return dataclasses.replace(ctx, ridge=_fit_ridge(data, ctx))


def _row_normalise(w: np.ndarray) -> np.ndarray:
    sums = w.sum(axis=1, keepdims=True)
    return np.divide(w, sums, out=np.zeros_like(w), where=sums > 0)


def _smooth_slots(a: np.ndarray) -> np.ndarray:
    return a + 0.5 * (np.roll(a, 1, axis=1) + np.roll(a, -1, axis=1))


def build_features(history: np.ndarray, step_ms: int, ctx: FeatureContext) -> np.ndarray:
    """Features (N, len(FEATURE_NAMES)) at step t from ``history`` (HISTORY_STEPS, N), steps t-11..t, NaN = missing."""
    history = np.asarray(history, dtype=np.float64)
    if history.shape != (HISTORY_STEPS, ctx.n_sensors):
        raise DataError(f"history has shape {history.shape}, expected ({HISTORY_STEPS}, {ctx.n_sensors})")
    return build_features_batch(history[None], np.array([step_ms], dtype=np.int64), ctx)[0]


def build_features_batch(histories: np.ndarray, steps_ms: np.ndarray, ctx: FeatureContext) -> np.ndarray:
    """``build_features`` over a stack: histories (B, HISTORY_STEPS, N), steps_ms (B,) -> (B, N, F) float32."""
    return np.stack(feature_columns(histories, steps_ms, ctx), axis=-1).astype(np.float32)


def feature_columns(histories: np.ndarray, steps_ms: np.ndarray, ctx: FeatureContext) -> list[np.ndarray]:
    """The ``FEATURE_NAMES`` columns of a stack of histories (B, HISTORY_STEPS, N), each (B, N) float64 (the
    network-wide ones are read-only broadcast views: copy before writing).

    ``build_features_batch`` is these columns side by side, rounded to float32.
    """
    x = np.asarray(histories, dtype=np.float64)
    steps_ms = np.asarray(steps_ms, dtype=np.int64)
    b, k, n = x.shape
    if k != HISTORY_STEPS or n != ctx.n_sensors or steps_ms.shape != (b,):
        raise DataError(f"histories {x.shape} / steps {steps_ms.shape} do not match ({HISTORY_STEPS}, {ctx.n_sensors})")
    x, observed, hist_profile, filled, last_idx = _imputed(x, steps_ms, ctx)
    last = filled[:, -1]

    def tail_mean(m: int) -> np.ndarray:
        seg, obs = x[:, -m:], observed[:, -m:]
        cnt = obs.sum(1)
        s = np.where(obs, seg, 0.0).sum(1)
        return np.where(cnt > 0, s / np.maximum(cnt, 1), filled[:, -m:].mean(1))

    mean3, mean6, mean12 = tail_mean(3), tail_mean(6), tail_mean(12)
    slot, daytype, dow = slot_and_daytype(steps_ms, ctx.step_ms)
    tod = 2 * np.pi * slot / ctx.profile.shape[2]
    dw = 2 * np.pi * dow / 7
    prof_t = hist_profile[:, -1]
    prof_std_t = _profile_at(ctx.profile_std, steps_ms[:, None])[:, 0]
    prof_h = [_profile_at(ctx.profile, (steps_ms + h * 60_000)[:, None])[:, 0] for h in HORIZONS_MIN]
    dev = filled - hist_profile
    dev_last = dev[:, -1]
    slope3 = last - filled[:, -4]

    def graph(w: np.ndarray, v: np.ndarray) -> np.ndarray:
        return v @ w.T  # (B, N) @ (N, N).T: row i mixes the sensors weighted in w[i]

    network_dev = np.broadcast_to(dev_last.mean(1, keepdims=True), (b, n))
    network_slope = np.broadcast_to(slope3.mean(1, keepdims=True), (b, n))
    ones = np.ones((b, n))
    columns = [
        last,
        *(filled[:, -1 - lag] for lag in _LAGS),
        mean3,
        mean6,
        mean12,
        filled.std(1),
        filled.min(1),
        filled.max(1),
        slope3,
        last - filled[:, -7],
        last - filled[:, 0],
        (~observed).sum(1).astype(np.float64),
        (~observed[:, -1]).astype(np.float64),
        np.where(last_idx[:, -1] >= 0, k - 1 - last_idx[:, -1], k).astype(np.float64),
        np.sin(tod)[:, None] * ones,
        np.cos(tod)[:, None] * ones,
        np.sin(dw)[:, None] * ones,
        np.cos(dw)[:, None] * ones,
        daytype[:, None] * ones,
        prof_t,
        prof_std_t,
        *prof_h,
        *(p - prof_t for p in prof_h),
        dev_last,
        dev[:, -3:].mean(1),
        dev.mean(1),
        graph(ctx.w_up, last),
        graph(ctx.w_up, dev_last),
        graph(ctx.w_up, slope3),
        graph(ctx.w_down, last),
        graph(ctx.w_down, dev_last),
        graph(ctx.w_down, slope3),
        graph(ctx.w_hop2, dev_last),
        network_dev,
        network_slope,
        ctx.sensor_mean[None, :] * ones,
        ctx.sensor_std[None, :] * ones,
        ctx.degree_in[None, :] * ones,
        ctx.degree_out[None, :] * ones,
        *graph_columns(filled, dev, ctx.w_up, ctx.w_down),
        *_ridge_columns(dev, steps_ms, ctx),
    ]
    return columns


def _ridge_columns(dev: np.ndarray, steps_ms: np.ndarray, ctx: FeatureContext) -> list[np.ndarray]:
    """The ``RIDGE_FEATURE_NAMES`` columns: a window in the training period reads the fit of the other half of
    its days, any other the mean of both (``ml.network_ridge``); NaN with a context fitted before the ridge."""
    if ctx.ridge is None:
        return [np.broadcast_to(np.nan, dev[:, -1].shape)] * len(RIDGE_FEATURE_NAMES)
    in_train = (steps_ms >= ctx.train_start_ms) & (steps_ms < ctx.train_end_ms)
    out = ctx.ridge.predict(ridge_inputs(dev), np.where(in_train, day_parity(steps_ms), -1))
    return list(out.transpose(1, 0, 2))


def _fit_ridge(data: MetrLA, ctx: FeatureContext) -> NetworkRidge | None:
    """The network ridge on every training window whose history and farthest target lie in the training period."""
    if not fits_network(data.speed.shape[1]):
        return None
    k, step, times = HISTORY_STEPS, data.step_ms, data.times_ms
    ahead = [h * 60_000 // step for h in HORIZONS_MIN]
    train = data.split.of(times) == "train"
    t = np.arange(k - 1, len(times) - ahead[-1])
    whole = times[t + ahead[-1]] - times[t - k + 1] == (k - 1 + ahead[-1]) * step  # no gap in the window
    t = t[train[t - k + 1] & train[t + ahead[-1]] & whole]
    inputs, targets = [], []
    for chunk in np.array_split(t, len(t) // 512 + 1):  # small chunks stay in the cache (4x faster than 2048)
        _, _, hist_profile, filled, _ = _imputed(data.speed[chunk[:, None] + np.arange(1 - k, 1)].astype(np.float64),
                                                 times[chunk], ctx)
        dev = filled - hist_profile
        future = data.speed[chunk[:, None] + np.array(ahead)].astype(np.float64)  # (B, H, N)
        future_profile = _profile_at(ctx.profile, times[chunk][:, None] + np.array(ahead) * step)
        inputs.append(ridge_inputs(dev))
        targets.append(ridge_targets(np.where(future > 0, future, np.nan) - future_profile, dev[:, -1]))
    if not inputs:
        return None
    return fit_network_ridge(np.concatenate(inputs), np.concatenate(targets), day_parity(times[t]))


def _imputed(x: np.ndarray, steps_ms: np.ndarray, ctx: FeatureContext) -> tuple[np.ndarray, ...]:
    """Histories (B, K, N) -> readings (NaN = missing), observed, the profile at each step, the imputed
    history (the last observation carried forward, the profile before the first one), the last observed index."""
    k = x.shape[1]
    x = np.where(x > 0, x, np.nan)  # 0, negatives and NaN all mean missing
    observed = np.isfinite(x)
    offsets = np.arange(-(k - 1), 1) * ctx.step_ms
    hist_profile = _profile_at(ctx.profile, steps_ms[:, None] + offsets[None, :])  # (B, K, N)
    idx = np.where(observed, np.arange(k)[None, :, None], -1)
    last_idx = np.maximum.accumulate(idx, axis=1)
    gathered = np.take_along_axis(np.where(observed, x, 0.0), np.clip(last_idx, 0, None), axis=1)
    filled = np.where(last_idx >= 0, gathered, hist_profile)
    return x, observed, hist_profile, filled, last_idx


def _profile_at(profile: np.ndarray, times_ms: np.ndarray) -> np.ndarray:
    """profile (N, 2, S) looked up at times (B, M) -> (B, M, N); a day has S steps."""
    slot, daytype, _ = slot_and_daytype(times_ms, DAY_MS // profile.shape[2])
    return profile[:, daytype, slot].transpose(1, 2, 0)
