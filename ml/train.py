"""``traffic train``: fit baselines and scikit-learn models, select per horizon, calibrate intervals, register.

Validation is used twice, on disjoint days so the two uses do not contaminate
each other: the validation period's days alternate between a *selection* half
(even day numbers since 1970-01-01: the candidate with the lowest masked MAE
there wins each horizon) and a *calibration* half (odd days: the winner's
residuals there calibrate the split-conformal intervals). Coverage is then
measured on the selection half, which the intervals never saw. The training
period alone fits the models and the feature context.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from config.hdfs import hdfs_options_for
from config.settings import default_registry_root
from ml.conformal import fit_binned_conformal
from ml.dataset import STEP_MS, TRAIN_END_MS, MetrLA, load_metrla
from ml.exceptions import DataError
from ml.features import FEATURE_NAMES, HORIZONS_MIN, FeatureContext, fit_context
from ml.metrics import interval_coverage, interval_width, masked_mae, masked_rmse
from ml.models import ModelSpec, candidate_specs
from ml.registry import ModelBundle, ModelRegistry
from ml.training_set import ExampleMeta, examples, read_feature_table

__all__ = ["TrainResult", "train", "validation_halves", "quick_subset", "register", "run"]

_DAY_MS = 24 * 60 * 60 * 1000
QUICK_SENSORS = 12
QUICK_DAYS = 3


@dataclass
class TrainResult:
    bundle: ModelBundle
    version: str
    table: list[dict] = field(default_factory=list)  # one row per (horizon, candidate)
    seconds: float = 0.0


def validation_halves(step_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks (selection, calibration) of validation rows: even vs odd day numbers."""
    odd = (np.asarray(step_ms, dtype=np.int64) // _DAY_MS) % 2 == 1
    return ~odd, odd


def quick_subset(data: MetrLA) -> MetrLA:
    """A few sensors and days around the train/validation boundary, for tests and smoke runs."""
    start = TRAIN_END_MS - QUICK_DAYS * _DAY_MS
    end = TRAIN_END_MS + 2 * _DAY_MS
    return data.between(start, end).only(list(data.sensor_ids[:QUICK_SENSORS]))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fit(spec: ModelSpec, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):  # noqa: ANN202
    if spec.make is None:
        return None
    rows = np.flatnonzero(np.isfinite(y))
    if spec.max_rows is not None and len(rows) > spec.max_rows:
        rows = np.sort(rng.choice(rows, spec.max_rows, replace=False))
    base = x[rows, FEATURE_NAMES.index(spec.base_feature)] if spec.base_feature else 0.0
    return spec.make().fit(x[rows], y[rows] - base)


def train(
    data: MetrLA | None = None,
    features: tuple[np.ndarray, np.ndarray, ExampleMeta] | None = None,
    ctx: FeatureContext | None = None,
    quick: bool = False,
    coverage: float = 0.9,
    progress: Callable[[str], None] = _stderr,
    seed: int = 0,
) -> tuple[ModelBundle, list[dict]]:
    """Fit, select and calibrate a bundle from raw ``data`` or precomputed ``features`` (X, Y, meta)."""
    if ctx is None:
        if data is None:
            raise DataError("training needs the raw data (for the feature context) or a context")
        ctx = fit_context(data)
    if features is None:
        if data is None:
            raise DataError("training needs the raw data or a feature table")
        progress("features: building training and validation windows")
        x_tr, y_tr, _ = examples(data, ctx, "train")
        x_va, y_va, meta_va = examples(data, ctx, "val")
    else:
        x, y, meta = features
        from ml.dataset import split_of

        split = split_of(meta.step_ms)
        x_tr, y_tr = x[split == "train"], y[split == "train"]
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
    rng = np.random.default_rng(seed)
    table: list[dict] = []
    estimators, bases, names, intervals, metrics = {}, {}, {}, {}, {}
    for j, h in enumerate(HORIZONS_MIN):
        best = None
        for spec in candidate_specs(h, quick=quick):
            started = time.perf_counter()
            est = _fit(spec, x_tr, y_tr[:, j], rng)
            fit_s = time.perf_counter() - started
            probe = ModelBundle({h: est}, {h: spec.base_feature}, {}, ctx)
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
                best = (row, spec, est, yhat)
        row, spec, est, yhat = best
        row["selected"] = True
        conformal = fit_binned_conformal(
            y_va[calibrate, j], yhat[calibrate], coverage=coverage, min_bin_rows=200 if quick else 5000
        )
        lower, upper = conformal.bounds(yhat[select])
        estimators[h], bases[h], names[h], intervals[h] = est, spec.base_feature, spec.name, conformal
        metrics[str(h)] = {
            "model": spec.name,
            "val_mae": row["val_mae"],
            "val_rmse": row["val_rmse"],
            "val_select_mae": row["val_select_mae"],
            "val_select_coverage": interval_coverage(y_va[select, j], lower, upper),
            "val_select_width": interval_width(y_va[select, j], lower, upper),
        }
        progress(
            f"h={h:>2} min  selected {spec.name}; {coverage:.0%} intervals cover "
            f"{metrics[str(h)]['val_select_coverage']:.1%} of the selection days"
        )
    bundle = ModelBundle(
        estimators, bases, intervals, ctx, coverage=coverage, model_names=names,
        metadata={
            "validation_metrics": metrics,
            "candidates": table,
            "quick": quick,
            "training_rows": int(len(x_tr)),
            "validation_rows": int(len(x_va)),
            "selection": "per horizon, lowest masked MAE on validation days with an even day number",
            "calibration": "split conformal per predicted-speed bin on validation days with an odd day number",
            "step_ms": STEP_MS,
        },
    )
    return bundle, table


def register(parser: argparse._SubParsersAction) -> None:
    p = parser.add_parser("train")
    p.add_argument("--data", help="METR-LA .npz or .h5 (local or hdfs://); default: the bundled data")
    p.add_argument(
        "--features",
        help="train on a Parquet feature table (file or directory, local or hdfs://) from the batch pipeline; "
        "the feature context comes from context.npz beside it, else is fitted on --data",
    )
    p.add_argument("--registry",
                   help="registry root, local or hdfs:// (default: $TRAFFIC_MODEL_REGISTRY or <work>/models)")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_SENSORS} sensors, {QUICK_DAYS + 2} days, tiny models")
    p.add_argument("--coverage", type=float, default=0.9, help="nominal interval coverage (default 0.9)")
    p.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.coverage < 1.0:
        raise DataError(f"--coverage must be between 0 and 1, got {args.coverage}")
    started = time.perf_counter()
    registry = ModelRegistry(args.registry or default_registry_root())
    features = None
    ctx = None
    if args.features:
        context_file = Path(args.features) / "context.npz" if "://" not in args.features else None
        if context_file is not None and context_file.exists():
            ctx = FeatureContext.from_bytes(context_file.read_bytes())
        else:
            ctx = fit_context(load_metrla(args.data, hdfs_options_for([args.data]) or None))
        features = read_feature_table(args.features, sensor_ids=ctx.sensor_ids)
        data = None
    else:
        data = load_metrla(args.data, hdfs_options_for([args.data]) or None)
        if args.quick:
            data = quick_subset(data)
    bundle, table = train(data, features, ctx, quick=args.quick, coverage=args.coverage)
    elapsed = time.perf_counter() - started
    bundle.metadata["training_seconds"] = round(elapsed, 1)
    version = registry.register(bundle)
    _print_table(table)
    print(f"registered model {version} in {registry.root} ({elapsed:.0f} s)")
    return 0
