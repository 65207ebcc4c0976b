"""``traffic train``: fit baselines and scikit-learn models, select per horizon, calibrate intervals, register.

Validation is used twice, on disjoint days so the two uses do not contaminate
each other: the validation period's days alternate between a *selection* half
(even day numbers since 1970-01-01: the candidate with the lowest masked MAE
there wins each horizon) and a *calibration* half (odd days: the winner's
residuals there calibrate the split-conformal intervals). Coverage is then
measured on the selection half, which the intervals never saw. The training
period alone fits the models and the feature context.

The intervals of a learned winner are normalised conformal (``ml.conformal.ScaledConformal``):
a small scale model learns the typical absolute error from training rows the
point model did not see, and the odd validation days calibrate it. The binned
intervals of the earlier models are computed too, and their width recorded, so
the two can be compared.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from config.settings import default_registry_root
from ml.conformal import fit_binned_conformal, fit_scaled_conformal, scale_inputs
from ml.dataset import DAY_MS, TRAIN_END_MS, MetrLA, day_parity
from ml.ensemble import ColumnBlend, HorizonChain
from ml.exceptions import DataError
from ml.features import FEATURE_NAMES, HORIZONS_MIN, FeatureContext, fit_context
from ml.metrics import interval_coverage, interval_width, masked_mae, masked_rmse
from ml.models import (
    BLEND_HORIZONS,
    BLEND_WEIGHTS,
    BLENDS,
    CANDIDATE_NAMES,
    CHAIN_UPSTREAM,
    MLP_CHAIN_FIRST,
    MLP_UPSTREAM,
    N_JOBS,
    ModelSpec,
    candidate_specs,
    default_candidates,
    make_scale_model,
)
from ml.network import BUNDLED_NETWORK, Network, load_network
from ml.neural import HorizonOutput, SharedOutputs, StackedOutputs, fit_bag, weight_keyword
from ml.registry import MAX_SPEED_MPH, ModelBundle, ModelRegistry
from ml.train_args import QUICK_DAYS, QUICK_SENSORS, add_arguments, check_arguments
from ml.training_set import ExampleMeta, examples

__all__ = [
    "TrainResult",
    "add_arguments",
    "check_arguments",
    "fit_and_register",
    "quick_subset",
    "quick_window",
    "train",
    "validation_halves",
]

@dataclass
class TrainResult:
    bundle: ModelBundle
    version: str
    table: list[dict] = field(default_factory=list)  # one row per (horizon, candidate)
    seconds: float = 0.0


def validation_halves(step_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks (selection, calibration) of validation rows: even vs odd day numbers."""
    odd = day_parity(step_ms) == 1
    return ~odd, odd


def quick_window(sensor_ids: tuple[str, ...], train_end_ms: int = TRAIN_END_MS) -> tuple[int, int, tuple[str, ...]]:
    """(start_ms, end_ms, sensors) of ``--quick``: a few sensors and days around the train/validation boundary."""
    return train_end_ms - QUICK_DAYS * DAY_MS, train_end_ms + 2 * DAY_MS, tuple(sensor_ids[:QUICK_SENSORS])


def quick_subset(data: MetrLA) -> MetrLA:
    """The ``--quick`` slice of ``data`` (:func:`quick_window`), for tests and smoke runs."""
    start, end, sensors = quick_window(tuple(data.sensor_ids), data.split.train_end_ms)
    return data.between(start, end).only(list(sensors))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _rng(seed: int, *keys: object) -> np.random.Generator:
    """The row sampler of one fit, keyed by (seed, candidate, horizon, ...): a candidate draws the same rows
    whichever other candidates are fitted beside it, so the default set and ``--candidates all`` agree."""
    return np.random.default_rng([seed, *(zlib.crc32(str(k).encode()) for k in keys)])


def _columns(names: tuple[str, ...]) -> np.ndarray:
    return np.array([FEATURE_NAMES.index(n) for n in names], dtype=np.int64)


def _weighting(spec: ModelSpec, est: Any, times_ms: np.ndarray) -> dict[str, np.ndarray]:
    """``est.fit``'s keyword for ``spec``'s row weights from the fitted rows' step times; none when rows count
    alike."""
    return weight_keyword(est, spec.row_weights(times_ms))


def _fit(spec: ModelSpec, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
         times_ms: np.ndarray):  # noqa: ANN202
    """(the fitted estimator or None for a baseline, the training rows it saw); rows weighted as
    ``spec.row_weights`` says from their step times ``times_ms``."""
    rows = np.flatnonzero(np.isfinite(y))
    if spec.make is None:
        return None, rows[:0]
    if spec.max_rows is not None and len(rows) > spec.max_rows:
        rows = np.sort(rng.choice(rows, spec.max_rows, replace=False))
    base = x[rows, FEATURE_NAMES.index(spec.base_feature)] if spec.base_feature else 0.0
    est = spec.make()
    return est.fit(x[np.ix_(rows, _columns(spec.features))], y[rows] - base,
                   **_weighting(spec, est, times_ms[rows])), rows


def _fit_joint(spec: ModelSpec, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
               times_ms: np.ndarray):  # noqa: ANN202
    """One multi-output model for every horizon (columns of ``y``), on rows where all targets are observed (a bag:
    ``spec.bag`` members on disjoint parts of them, averaged); the rows weighted as ``spec.row_weights`` says from
    their step times ``times_ms``."""
    rows = np.flatnonzero(np.isfinite(y).all(1))
    if spec.max_rows is not None and len(rows) > spec.max_rows:
        rows = np.sort(rng.choice(rows, spec.max_rows, replace=False))
    base = x[rows, FEATURE_NAMES.index(spec.base_feature)].astype(np.float64)[:, None] if spec.base_feature else 0.0
    model = fit_bag(spec.make, x[np.ix_(rows, _columns(spec.features))], y[rows] - base, spec.bag, rng,
                    workers=N_JOBS, weights=spec.row_weights(times_ms[rows]))
    return SharedOutputs(model), rows


def _fit_chain(spec: ModelSpec, x: np.ndarray, y: np.ndarray, upstream: tuple[Any, np.ndarray] | None,
               rng: np.random.Generator, times_ms: np.ndarray):  # noqa: ANN202
    """A ``HorizonChain`` on training rows the upstream (15-minute) model did not see, or (None, no rows); the rows
    weighted as ``spec.row_weights`` says from their step times ``times_ms``."""
    if upstream is None or spec.make is None:
        return None, np.zeros(0, dtype=np.int64)
    up_est, up_used = upstream
    observed = np.flatnonzero(np.isfinite(y))
    rows = np.setdiff1d(observed, up_used)
    if len(rows) < 1000:  # a small data set: the upstream saw every row, so reuse them
        rows = observed
    if spec.max_rows is not None and len(rows) > spec.max_rows:
        rows = np.sort(rng.choice(rows, spec.max_rows, replace=False))
    cols = _columns(spec.features)
    xr = x[rows]
    base = xr[:, FEATURE_NAMES.index(spec.base_feature)].astype(np.float64) if spec.base_feature else 0.0
    model = spec.make()
    model.fit(HorizonChain.inputs(xr, cols, up_est.predict(xr)), y[rows] - base,
              **_weighting(spec, model, times_ms[rows]))
    return HorizonChain(up_est, model, cols), np.union1d(rows, up_used)  # the scale model must see neither

def _fit_scale(spec: ModelSpec, est: Any, x: np.ndarray, y: np.ndarray, used: np.ndarray, rng: np.random.Generator,
               quick: bool) -> Any:
    """The interval scale model: |y - yhat| of the point model on training rows it did not see."""
    observed = np.flatnonzero(np.isfinite(y))
    free = np.setdiff1d(observed, used)
    if len(free) < 1000:  # a small data set: the point model saw every row, so reuse them (calibration fixes the level)
        free = observed
    cap = 20_000 if quick else 300_000
    if len(free) > cap:
        free = np.sort(rng.choice(free, cap, replace=False))
    xs = x[np.ix_(free, _columns(spec.features))]
    base = x[free, FEATURE_NAMES.index(spec.base_feature)].astype(np.float64) if spec.base_feature else 0.0
    yhat = np.clip(base + est.predict(xs), 0.0, MAX_SPEED_MPH)
    return make_scale_model(quick).fit(scale_inputs(xs, yhat), np.abs(y[free] - yhat))


def _wanted(wanted: set[str], first_horizon: bool, horizon: int | None = None) -> set[str]:
    """The candidates to fit at one horizon: the asked ones, their blends' members and chains' upstreams (after the
    first horizon, a blend not offered at ``horizon`` brings no members, unless nothing else was asked)."""
    if horizon is not None and not first_horizon:
        wanted = {n for n in wanted if n not in BLENDS or horizon in BLEND_HORIZONS.get(n, HORIZONS_MIN)} or wanted
    while True:
        more = wanted | {m for name in BLENDS if name in wanted for m in BLENDS[name]}  # a blend needs its members
        if first_horizon and "hgb_chain" in more:  # a chain needs its 15-minute upstream
            more.add(CHAIN_UPSTREAM)
        if first_horizon and "hgb_mlp_chain" in more:  # reads hgb_mlp's 15-minute forecast
            more.add(MLP_CHAIN_FIRST)
        if more & {"hgb_mlp", "hgb_mlp_chain"}:  # fitted at the first horizon, used at every one
            more.add(MLP_UPSTREAM)
        if more == wanted:
            return wanted
        wanted = more


def _blends(fitted: list[tuple[ModelSpec, Any, np.ndarray, float]], names: list[str]) -> list[tuple]:
    """The blends ``names`` (of ``BLENDS``) as extra candidates; their fitted members are reused, not refitted."""
    by_name = {spec.name: (spec, est, used, fit_s) for spec, est, used, fit_s in fitted if est is not None}
    out = []
    for name in names:
        members = BLENDS[name]
        if not all(m in by_name for m in members):
            continue
        parts = [by_name[m] for m in members]
        if len({p[0].base_feature for p in parts}) != 1:
            continue
        weights = BLEND_WEIGHTS.get(name, (1.0,) * len(parts))
        blend = ColumnBlend([p[1] for p in parts], [_columns(p[0].features) for p in parts], weights)
        spec = ModelSpec(name, parts[0][0].base_feature, features=FEATURE_NAMES)
        used = np.unique(np.concatenate([p[2] for p in parts]))
        out.append((spec, blend, used, sum(p[3] for p in parts)))
    return out


def train(
    data: MetrLA | None = None,
    features: tuple[np.ndarray, np.ndarray, ExampleMeta] | None = None,
    ctx: FeatureContext | None = None,
    quick: bool = False,
    coverage: float = 0.9,
    progress: Callable[[str], None] = _stderr,
    seed: int = 0,
    candidates: tuple[str, ...] | None = None,
    max_rows: int | None = None,
    network: Network | None = None,
) -> tuple[ModelBundle, list[dict]]:
    """Fit, select and calibrate a bundle from raw ``data`` or precomputed ``features`` (X, Y, meta).

    ``network`` (default METR-LA) gives the road graph, the split of feature-table rows, and the bundle's
    ``network`` metadata.
    """
    network = network or load_network(BUNDLED_NETWORK)
    if ctx is None:
        if data is None:
            raise DataError("training needs the raw data (for the feature context) or a context")
        ctx = fit_context(data, network.adjacency(tuple(data.sensor_ids)))
    if features is None:
        if data is None:
            raise DataError("training needs the raw data or a feature table")
        progress("features: building training and validation windows")
        x_tr, y_tr, meta_tr = examples(data, ctx, "train")
        t_tr = meta_tr.step_ms
        x_va, y_va, meta_va = examples(data, ctx, "val")
    else:
        x, y, meta = features
        split = (data.split if data is not None else network.split).of(meta.step_ms)
        x_tr, y_tr, t_tr = x[split == "train"], y[split == "train"], meta.step_ms[split == "train"]
        va = split == "val"
        x_va, y_va, meta_va = x[va], y[va], meta.take(np.flatnonzero(va))
    if len(x_tr) == 0 or len(x_va) == 0:
        raise DataError(f"need training and validation windows, got {len(x_tr)} and {len(x_va)} rows")
    progress(f"features: {len(x_tr):,} training rows, {len(x_va):,} validation rows, {x_tr.shape[1]} features")
    select, calibrate = validation_halves(meta_va.step_ms)
    if not select.any() or not calibrate.any():  # a validation period shorter than two days
        order = np.argsort(meta_va.step_ms, kind="stable")
        select = np.zeros(len(x_va), bool)
        select[order[: len(order) // 2]] = True
        calibrate = ~select
    first: dict[str, tuple[Any, np.ndarray]] = {}  # the first horizon's fitted candidates: chain upstreams
    joint: dict[str, tuple[SharedOutputs, np.ndarray]] = {}  # multi-output models, fitted at the first horizon
    stacked: dict[str, tuple[StackedOutputs, np.ndarray]] = {}  # upstreams of chains that read several models
    table: list[dict] = []
    estimators, bases, names, intervals, metrics, columns, half_lives = {}, {}, {}, {}, {}, {}, {}
    for j, h in enumerate(HORIZONS_MIN):
        best = None
        wanted = _wanted(set(candidates or default_candidates(quick)), first_horizon=j == 0, horizon=h)
        blends = [name for name in BLENDS if name in wanted and h in BLEND_HORIZONS.get(name, HORIZONS_MIN)]
        specs = [s for s in candidate_specs(h, quick=quick) if s.name in wanted]
        if max_rows is not None:  # one cap for every learned candidate (a cheaper full-data run)
            specs = [replace(s, max_rows=min(s.max_rows or max_rows, max_rows)) for s in specs]
        if not specs:
            raise DataError(f"no candidate models left; choose among {', '.join(CANDIDATE_NAMES)}")
        fitted = []
        for spec in specs:
            started = time.perf_counter()
            if spec.joint:
                if spec.name not in joint:
                    joint[spec.name] = _fit_joint(spec, x_tr, y_tr, _rng(seed, spec.name), t_tr)
                est, used = HorizonOutput(joint[spec.name][0], j), joint[spec.name][1]
            elif spec.upstream is None:
                est, used = _fit(spec, x_tr, y_tr[:, j], _rng(seed, spec.name, h), t_tr)
            else:  # a chain: on the 15-minute upstream's forecast, or on every output of a multi-output model
                up = joint.get(spec.upstream) or first.get(spec.upstream)
                if spec.first_column is not None:  # one upstream (and memo) for every horizon's chain
                    extra = first.get(spec.first_column)
                    if up is None or extra is None:
                        continue
                    if spec.name not in stacked:
                        stacked[spec.name] = (StackedOutputs([up[0], extra[0]]), np.union1d(up[1], extra[1]))
                    up = stacked[spec.name]
                est, used = _fit_chain(spec, x_tr, y_tr[:, j], up, _rng(seed, spec.name, h), t_tr)
                if est is None:
                    continue
            fitted.append((spec, est, used, time.perf_counter() - started))
            if spec.half_life_days is not None:
                half_lives[spec.name] = spec.half_life_days
        fitted += _blends(fitted, blends)
        if j == 0:
            first = {spec.name: (est, used) for spec, est, used, _ in fitted if est is not None}
        for spec, est, used, fit_s in fitted:
            probe = ModelBundle({h: est}, {h: spec.base_feature}, {}, ctx, feature_columns={h: spec.features})
            yhat = probe.predict_point(x_va, h)
            row = {
                "horizon_min": h,
                "model": spec.name,
                "val_select_mae": masked_mae(y_va[select, j], yhat[select]),
                "val_calibrate_mae": masked_mae(y_va[calibrate, j], yhat[calibrate]),
                "val_mae": masked_mae(y_va[:, j], yhat),
                "val_rmse": masked_rmse(y_va[:, j], yhat),
                "fit_s": round(fit_s, 1),
            }
            table.append(row)
            progress(
                f"h={h:>2} min  {spec.name:<24} val MAE {row['val_mae']:.3f} "
                f"(selection days {row['val_select_mae']:.3f})  fit {fit_s:.1f} s"
            )
            if best is None or row["val_select_mae"] < best[0]["val_select_mae"]:
                best = (row, spec, est, yhat, used)
        row, spec, est, yhat, used = best
        row["selected"] = True
        min_bin_rows = 200 if quick else 5000
        binned = fit_binned_conformal(y_va[calibrate, j], yhat[calibrate], coverage=coverage, min_bin_rows=min_bin_rows)
        b_lower, b_upper = binned.bounds(yhat[select])
        conformal = binned
        if est is not None:
            started = time.perf_counter()
            scale = _fit_scale(spec, est, x_tr, y_tr[:, j], used, _rng(seed, "scale", spec.name, h), quick)
            x_cal = x_va[np.ix_(calibrate, _columns(spec.features))]
            conformal = fit_scaled_conformal(
                y_va[calibrate, j], yhat[calibrate], x_cal, scale, coverage=coverage, min_bin_rows=min_bin_rows
            )
            progress(f"h={h:>2} min  interval scale model fitted in {time.perf_counter() - started:.1f} s")
        lower, upper = conformal.bounds(yhat[select], x_va[np.ix_(select, _columns(spec.features))])
        estimators[h], bases[h], names[h], intervals[h] = est, spec.base_feature, spec.name, conformal
        columns[h] = spec.features
        metrics[str(h)] = {
            "model": spec.name,
            "val_mae": row["val_mae"],
            "val_rmse": row["val_rmse"],
            "val_select_mae": row["val_select_mae"],
            "val_select_coverage": interval_coverage(y_va[select, j], lower, upper),
            "val_select_width": interval_width(y_va[select, j], lower, upper),
            "val_select_binned_coverage": interval_coverage(y_va[select, j], b_lower, b_upper),
            "val_select_binned_width": interval_width(y_va[select, j], b_lower, b_upper),
        }
        progress(
            f"h={h:>2} min  selected {spec.name}; {coverage:.0%} intervals cover "
            f"{metrics[str(h)]['val_select_coverage']:.1%} of the selection days, "
            f"mean width {metrics[str(h)]['val_select_width']:.1f} mph "
            f"(binned intervals: {metrics[str(h)]['val_select_binned_width']:.1f} mph)"
        )
    bundle = ModelBundle(
        estimators, bases, intervals, ctx, coverage=coverage, model_names=names, feature_columns=columns,
        metadata={
            "validation_metrics": metrics,
            "candidates": table,
            "quick": quick,
            "training_rows": int(len(x_tr)),
            "validation_rows": int(len(x_va)),
            "selection": "per horizon, lowest masked MAE on validation days with an even day number",
            "calibration": "normalised split conformal (a scale model of the absolute error, fitted on training rows "
            "the point model did not see) per predicted-speed bin, on validation days with an odd day number",
            "step_ms": ctx.step_ms,
            "row_weight_half_life_days": half_lives,  # candidates fitted on recency-weighted rows (a blend: members)
            "network": network.name,
        },
    )
    return bundle, table


def _print_table(table: list[dict]) -> None:
    out = sys.stdout
    print("horizon | model                  | val MAE | val RMSE | fit s | selected", file=out)
    for row in table:
        mark = "*" if row.get("selected") else ""
        print(
            f"{row['horizon_min']:>4} min | {row['model']:<22} | {row['val_mae']:7.3f} | {row['val_rmse']:8.3f} "
            f"| {row['fit_s']:5.1f} | {mark}",
            file=out,
        )


def fit_and_register(
    args: argparse.Namespace,
    features: tuple[np.ndarray, np.ndarray, ExampleMeta],
    ctx: FeatureContext,
    started: float,
    extra_metadata: dict[str, Any] | None = None,
    network: Network | None = None,
) -> int:
    """Train on feature tables (X, Y, meta) with their context, register the bundle, print the table."""
    network = network or load_network(BUNDLED_NETWORK)
    registry = ModelRegistry(args.registry or network.home_under(default_registry_root()))
    bundle, table = train(None, features, ctx, quick=args.quick, coverage=args.coverage,
                          candidates=check_arguments(args), max_rows=args.max_rows, network=network)
    elapsed = time.perf_counter() - started
    bundle.metadata["training_seconds"] = round(elapsed, 1)
    bundle.metadata.update(extra_metadata or {})
    version = registry.register(bundle)
    _print_table(table)
    print(f"registered model {version} in {registry.root} ({elapsed:.0f} s)")
    return 0
