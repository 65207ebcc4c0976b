"""Candidate forecasters: two baselines and three scikit-learn models.

Every candidate predicts ``base + estimator(X)``: the learned models use the
last (imputed) reading ``speed_last`` as base and learn the change over the
horizon, which is what varies; the baselines are a base alone (the last value;
the historical average = the sensor's training-period profile at the target
time). ``ModelSpec.make()`` returns an unfitted estimator; ``max_rows`` caps the
training rows it sees (a seeded uniform subsample) so full training stays within
the time budget on two cores; ``half_life_days`` weights those rows by recency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ml.compiled_trees import CompiledTreesRegressor
from ml.exceptions import DataError
from ml.features import BASE_FEATURE_NAMES, FEATURE_NAMES, HORIZONS_MIN
from ml.neural import make_mlp
from ml.rowwise_ridge import RowwiseRidge

__all__ = [
    "BLEND_HORIZONS", "BLEND_WEIGHTS", "BLENDS", "CANDIDATE_NAMES", "CHAIN_UPSTREAM", "DEFAULT_CANDIDATES", "ModelSpec",
    "candidate_specs", "default_candidates", "make_scale_model", "MLP_UPSTREAM", "N_JOBS", "parse_candidates",
]

N_JOBS = 2  # the machine is shared: never more than two worker threads
HGB_GRAPH_ITERATIONS = 200
HGB_GRAPH_ROWS = 500_000
HGB_CHAIN_ITERATIONS = 200
# The trees that read the perceptron (hgb_mlp, hgb_mlp_chain) fit on 1,000,000 rows the perceptrons did not see: a probe
# on the shipped bag gained 0.008 / 0.010 MAE at 15 / 30 min from 300,000 to 1,000,000 rows and 0.0005 more at
# 1,500,000 (docs/model-experiments.md, eighth round).
HGB_MLP_ROWS = 1_000_000
MLP_UPSTREAM = "mlp"  # hgb_mlp: trees that read the perceptron's three forecasts (fitted on rows it did not see)
MLP_CHAIN_FIRST = "hgb_mlp"  # hgb_mlp_chain (30, 60 min): hgb_mlp's inputs plus hgb_mlp's 15-minute forecast
MLP_ROWS = 800_000  # per perceptron of the bag
# The perceptron is the mean of three, each on its own 800,000 rows: a third gained 0.008 / 0.006 / 0.020 over two
# (docs/model-experiments.md, sixth round); three on 533,334 rows each (the two's 1,600,000 split three ways) did not.
MLP_BAG = 3
# The perceptrons and the trees on them weight a training row by half for every this many days it is older than the
# newest training row (``ModelSpec.row_weights``): the validation period follows the training period, and what drifts
# between them (by sensor and time of day, docs/model-experiments.md, eleventh round) is closer to the recent rows.
# In the trees 60 days gained 0.003 / 0.006 / 0.005 MAE at 15 / 30 / 60 min, 30 days 0.002 / 0.005 / 0.003 and
# 15 days nothing (twelfth round); in the perceptrons too, 0.002 / 0.002 / 0.007 more, where 120 days in both
# gained less (thirteenth round).
HGB_MLP_HALF_LIFE_DAYS = 60.0
# The perceptrons read every feature, the network ridge's columns too: that gained 0.013 / 0.018 / 0.011 MAE over
# perceptrons without them under the same trees (docs/model-experiments.md, seventh round, row 34).


@dataclass(frozen=True)
class ModelSpec:
    """One candidate: a name, its base feature, its input columns, and how to build (and cap) its estimator."""

    name: str
    base_feature: str | None
    make: Callable[[], Any] | None = None
    max_rows: int | None = None
    features: tuple[str, ...] = BASE_FEATURE_NAMES
    upstream: str | None = None  # a chained model: this 15-minute candidate's forecast is one more input column
    joint: bool = False  # one multi-output model for every horizon, fitted once (``ml.neural.HorizonOutput``)
    bag: int = 1  # a joint model: the mean of this many members, each fitted on its own part of the capped rows
    first_column: str | None = None  # a chain that also reads this candidate's 15-minute forecast (one more column)
    half_life_days: float | None = None  # weight training rows by recency (``row_weights``); None: all alike

    @property
    def is_baseline(self) -> bool:
        return self.make is None

    def row_weights(self, times_ms: np.ndarray) -> np.ndarray | None:
        """Each training row's weight from its step time: 1/2 per ``half_life_days`` of age before the newest row,
        scaled to a mean of 1 (the trees' regularisation keeps its scale); None without a half-life."""
        if self.half_life_days is None or len(times_ms) == 0:
            return None
        age_days = (np.max(times_ms) - np.asarray(times_ms, np.float64)) / 86_400_000.0
        weights = np.exp2(-age_days / self.half_life_days)
        return weights / weights.mean()


# Averages of fitted candidates (``ml.ensemble.ColumnBlend``): name -> members. (Blends of the trees with 20% of
# the perceptron were tried and not selected: docs/model-experiments.md, third round.)
BLENDS: dict[str, tuple[str, ...]] = {
    "hgb_blend": ("hist_gradient_boosting", "hgb_graph"),
    "hgb_chain_blend": ("hgb_chain", "hist_gradient_boosting"),
    "hgb_mlp_blend": ("hgb_mlp", "hist_gradient_boosting"),
}
# Member weights (default: equal). hgb_mlp_blend: a quarter of the 47-feature trees, the best share on the odd
# (calibration) validation days in a probe (0.2 and 0.3 scored alike; 0.5 worse): docs/model-experiments.md, row 24.
BLEND_WEIGHTS: dict[str, tuple[float, ...]] = {"hgb_mlp_blend": (0.75, 0.25)}
# Blends offered at some horizons only (default: all). The chained blend runs 400 trees; the inference budget
# (25 ms per network step) has room for that at one horizon beside the 15-minute blend, and 60 min gains most.
# hgb_mlp_blend gained at 15 min only (row 24), and its 200 more trees cost about 3 ms per step.
BLEND_HORIZONS: dict[str, tuple[int, ...]] = {"hgb_chain_blend": (60,), "hgb_mlp_blend": (15,)}
# Horizon chaining (``ml.ensemble.HorizonChain``): the 30- and 60-minute ``hgb_chain`` models also read the
# 15-minute forecast of this candidate, and are fitted on training rows that candidate did not see.
CHAIN_UPSTREAM = "hgb_blend"
CANDIDATE_NAMES: tuple[str, ...] = (
    "last_value", "historical_average", "ridge", "random_forest", "hist_gradient_boosting", "hgb_graph", "hgb_blend",
    "hgb_chain", "hgb_chain_blend", "mlp", "hgb_mlp", "hgb_mlp_chain", "hgb_mlp_blend",
)
# What `traffic train` fits without ``--candidates``: the selected family (the perceptron bag, the trees that read
# it, at 15 min ``hgb_mlp`` and at 30 and 60 min ``hgb_mlp_chain``, which brings ``hgb_mlp`` along at 15 min) and
# the baselines the evaluation compares it with. ``hist_gradient_boosting``, the earlier selected model type, comes
# at 15 min only, as a member of ``hgb_mlp_blend``: at 30 and 60 min it cost about 55 s of the 15 minutes, which the
# network ridge's columns needed (docs/model-experiments.md, seventh round). The other candidates lost at every
# horizon in the full sweep and cost about half of its time; ``--candidates all`` still fits every one.
DEFAULT_CANDIDATES: tuple[str, ...] = (
    "last_value", "historical_average", "ridge", "mlp", "hgb_mlp_chain", "hgb_mlp_blend",
)


def default_candidates(quick: bool = False) -> tuple[str, ...]:
    """The candidates fitted without ``--candidates``: ``DEFAULT_CANDIDATES``, or every one for ``--quick`` (tiny
    models: a quick run is the smoke test of every candidate's code path)."""
    return CANDIDATE_NAMES if quick else DEFAULT_CANDIDATES


def parse_candidates(text: str | None) -> tuple[str, ...] | None:
    """``--candidates``: comma-separated names, or ``all`` for every one; None (the default set) without the flag."""
    if text is None:
        return None
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    if "all" in names:
        names = tuple(dict.fromkeys([*CANDIDATE_NAMES, *(c for c in names if c != "all")]))
    unknown = [c for c in names if c not in CANDIDATE_NAMES]
    if unknown or not names:
        choices = ", ".join(CANDIDATE_NAMES)
        raise DataError(f"unknown --candidates {', '.join(unknown) or '(none)'}; choose among all, {choices}")
    return names


def make_scale_model(quick: bool = False) -> CompiledTreesRegressor:
    """The interval scale model: predicts the point model's absolute error (see ``ml.conformal.ScaledConformal``)."""
    return CompiledTreesRegressor(
        loss="absolute_error", learning_rate=0.1, max_iter=10 if quick else 50, max_leaf_nodes=31,
        min_samples_leaf=200, early_stopping=False, random_state=0,
    )


def _ridge() -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("ridge", RowwiseRidge(alpha=1000.0))])


def _trees(max_iter: int) -> CompiledTreesRegressor:
    """The gradient-boosted trees every full-scale tree candidate uses (63 leaves, absolute error)."""
    return CompiledTreesRegressor(loss="absolute_error", learning_rate=0.1, max_iter=max_iter,
                                  max_leaf_nodes=63, min_samples_leaf=100, l2_regularization=1.0,
                                  early_stopping=False, random_state=0)


def _quick_trees() -> CompiledTreesRegressor:
    """The tiny gradient-boosted trees of every tree candidate in ``--quick`` runs (10 rounds)."""
    return CompiledTreesRegressor(loss="absolute_error", max_iter=10, early_stopping=False, random_state=0)


def candidate_specs(horizon_min: int, quick: bool = False) -> list[ModelSpec]:
    """The candidates for one horizon (``quick``: tiny models for tests and smoke runs)."""
    specs = [
        ModelSpec("last_value", "speed_last"),
        ModelSpec("historical_average", f"profile_h{horizon_min}"),
        ModelSpec("ridge", "speed_last", _ridge, max_rows=20_000 if quick else 500_000),
    ]
    if quick:
        specs += [
            ModelSpec(
                "random_forest",
                "speed_last",
                lambda: RandomForestRegressor(
                    n_estimators=5, max_depth=6, min_samples_leaf=20, n_jobs=N_JOBS, random_state=0
                ),
                max_rows=5_000,
            ),
            ModelSpec("hist_gradient_boosting", "speed_last", _quick_trees, max_rows=20_000),
            ModelSpec("hgb_graph", "speed_last", _quick_trees, max_rows=20_000, features=FEATURE_NAMES),
        ]
        if horizon_min != min(HORIZONS_MIN):
            specs.append(ModelSpec("hgb_chain", "speed_last", _quick_trees, max_rows=20_000, features=FEATURE_NAMES,
                                   upstream=CHAIN_UPSTREAM))
        specs.append(ModelSpec("mlp", "speed_last", lambda: make_mlp(quick=True), max_rows=5_000, bag=MLP_BAG,
                               features=FEATURE_NAMES, joint=True, half_life_days=HGB_MLP_HALF_LIFE_DAYS))
        specs.append(ModelSpec("hgb_mlp", "speed_last", _quick_trees, max_rows=20_000, features=FEATURE_NAMES,
                               upstream=MLP_UPSTREAM, half_life_days=HGB_MLP_HALF_LIFE_DAYS))
        if horizon_min != min(HORIZONS_MIN):
            specs.append(ModelSpec("hgb_mlp_chain", "speed_last", _quick_trees, max_rows=20_000,
                                   features=FEATURE_NAMES, upstream=MLP_UPSTREAM, first_column=MLP_CHAIN_FIRST,
                                   half_life_days=HGB_MLP_HALF_LIFE_DAYS))
        return specs
    specs += [
        ModelSpec(
            "random_forest",
            "speed_last",
            lambda: RandomForestRegressor(
                n_estimators=16,
                max_depth=16,
                min_samples_leaf=40,
                max_features=0.33,
                n_jobs=N_JOBS,
                random_state=0,
            ),
            max_rows=150_000,
        ),
        ModelSpec(
            "hist_gradient_boosting",
            "speed_last",
            lambda: _trees(200),
            max_rows=500_000,
        ),
        ModelSpec(
            "hgb_graph",
            "speed_last",
            lambda: _trees(HGB_GRAPH_ITERATIONS),
            max_rows=HGB_GRAPH_ROWS,
            features=FEATURE_NAMES,
        ),
    ]
    if horizon_min != min(HORIZONS_MIN):
        specs.append(ModelSpec(
            "hgb_chain",
            "speed_last",
            lambda: _trees(HGB_CHAIN_ITERATIONS),
            max_rows=HGB_GRAPH_ROWS,
            features=FEATURE_NAMES,
            upstream=CHAIN_UPSTREAM,
        ))
    specs.append(ModelSpec("mlp", "speed_last", make_mlp, max_rows=MLP_BAG * MLP_ROWS, features=FEATURE_NAMES,
                           joint=True, bag=MLP_BAG, half_life_days=HGB_MLP_HALF_LIFE_DAYS))
    specs.append(ModelSpec(
        "hgb_mlp",
        "speed_last",
        lambda: _trees(HGB_CHAIN_ITERATIONS),
        max_rows=HGB_MLP_ROWS,
        features=FEATURE_NAMES,
        upstream=MLP_UPSTREAM,
        half_life_days=HGB_MLP_HALF_LIFE_DAYS,
    ))
    if horizon_min != min(HORIZONS_MIN):
        specs.append(ModelSpec("hgb_mlp_chain", "speed_last", lambda: _trees(HGB_CHAIN_ITERATIONS),
                               max_rows=HGB_MLP_ROWS, features=FEATURE_NAMES, upstream=MLP_UPSTREAM,
                               first_column=MLP_CHAIN_FIRST, half_life_days=HGB_MLP_HALF_LIFE_DAYS))
    return specs
