"""Split-conformal prediction intervals, conditional on bins of the predicted speed.

Errors of a speed forecast are far larger in congestion (predicted 20-40 mph)
than in free flow (predicted 60-70 mph), so one global residual quantile would
over-cover free flow and under-cover congestion. ``BinnedConformal`` therefore
groups calibration rows by predicted speed (quantile bins, at least
``min_bin_rows`` rows each) and, within each bin, takes the finite-sample
conformal quantiles of the signed residual ``y - yhat`` at ``alpha/2`` and
``1 - alpha/2`` (asymmetric: speeds fall faster than they recover). The
interval is ``[yhat + lo, yhat + hi]``. Coverage holds per bin when calibration
and future rows are exchangeable within the bin (Vovk's Mondrian conformal).

``ScaledConformal`` (normalised conformal) makes the width adapt to the
situation, not only to the predicted speed: a small model ``scale_model``
predicts the typical absolute error from the features (congestion state, time of
day, recent volatility, upstream deviations, the forecast itself); the conformal
quantiles are taken of ``(y - yhat) / scale`` per predicted-speed bin, and the
interval is ``[yhat + lo * scale, yhat + hi * scale]``. Validity needs only that
the scale model was not fitted on the calibration rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.exceptions import MLError

__all__ = [
    "MIN_SCALE_MPH",
    "BinnedConformal",
    "Intervals",
    "ScaledConformal",
    "conformal_quantile",
    "fit_binned_conformal",
    "fit_scaled_conformal",
    "intervals_from_dict",
    "scale_inputs",
]

MIN_SCALE_MPH = 0.5  # the scale model's floor: no interval collapses to a point


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ceil((n+1) level)/n empirical quantile of ``scores`` (inf when too few)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(scores)
    k = int(np.ceil((n + 1) * level))
    if n == 0 or k > n:
        return float("inf")
    if k < 1:
        return float("-inf")
    return float(scores[k - 1])


@dataclass(frozen=True)
class BinnedConformal:
    """Interval offsets per bin of predicted speed: bin i covers edges[i] <= yhat < edges[i+1]."""

    coverage: float
    edges: tuple[float, ...]  # inner edges; len(lower) == len(edges) + 1
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    scale_model = None  # binned intervals need no model

    def bounds(self, yhat: np.ndarray, x: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Interval of each forecast ``yhat``; ``x`` (the estimator's input rows) is not needed here."""
        yhat = np.asarray(yhat, dtype=np.float64)
        b = np.searchsorted(np.asarray(self.edges), yhat, side="right")
        lo = yhat + np.asarray(self.lower)[b]
        hi = yhat + np.asarray(self.upper)[b]
        return np.clip(lo, 0.0, None), np.maximum(hi, 0.0)

    def to_dict(self) -> dict:
        return {
            "kind": "binned",
            "coverage": self.coverage,
            "edges": list(self.edges),
            "lower": list(self.lower),
            "upper": list(self.upper),
        }

    @classmethod
    def from_dict(cls, d: dict) -> BinnedConformal:
        try:
            return cls(float(d["coverage"]), tuple(d["edges"]), tuple(d["lower"]), tuple(d["upper"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MLError(f"malformed interval parameters: {exc}") from None


def _bin_offsets(
    score: np.ndarray, by: np.ndarray, coverage: float, n_bins: int, min_bin_rows: int
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Inner quantile edges of ``by`` and, per bin, the conformal lower / upper quantiles of ``score``."""
    n_bins = int(max(1, min(n_bins, len(score) // max(min_bin_rows, 1))))
    edges = np.unique(np.quantile(by, np.linspace(0, 1, n_bins + 1)[1:-1])) if n_bins > 1 else np.zeros(0)
    alpha = 1.0 - coverage
    b = np.searchsorted(edges, by, side="right")
    lower, upper = [], []
    for i in range(len(edges) + 1):
        r = score[b == i]
        lower.append(-conformal_quantile(-r, 1 - alpha / 2))
        upper.append(conformal_quantile(r, 1 - alpha / 2))
    return tuple(float(e) for e in edges), tuple(lower), tuple(upper)


def fit_binned_conformal(
    y: np.ndarray, yhat: np.ndarray, coverage: float = 0.9, n_bins: int = 12, min_bin_rows: int = 2000
) -> BinnedConformal:
    """Calibrate on rows with an observed target (NaN targets are ignored)."""
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(yhat)
    y, yhat = y[ok], yhat[ok]
    if len(y) == 0:
        raise MLError("no calibration rows with an observed target")
    edges, lower, upper = _bin_offsets(y - yhat, yhat, coverage, n_bins, min_bin_rows)
    return BinnedConformal(float(coverage), edges, lower, upper)

def scale_inputs(x: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """The scale model's input: the point model's feature columns and the forecast itself."""
    return np.column_stack([np.asarray(x, dtype=np.float32), np.asarray(yhat, dtype=np.float32)])


@dataclass(frozen=True)
class ScaledConformal:
    """Normalised split conformal: bin offsets in units of ``scale_model``'s predicted absolute error."""

    coverage: float
    edges: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    scale_model: Any = None

    def scale(self, yhat: np.ndarray, x: np.ndarray) -> np.ndarray:
        if self.scale_model is None:
            raise MLError("scaled intervals need their scale model")
        s = np.asarray(self.scale_model.predict(scale_inputs(x, yhat)), dtype=np.float64)
        return np.maximum(s, MIN_SCALE_MPH)

    def bounds(self, yhat: np.ndarray, x: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if x is None:
            raise MLError("scaled intervals need the feature rows")
        yhat = np.asarray(yhat, dtype=np.float64)
        s = self.scale(yhat, x)
        b = np.searchsorted(np.asarray(self.edges), yhat, side="right")
        lo = yhat + np.asarray(self.lower)[b] * s
        hi = yhat + np.asarray(self.upper)[b] * s
        return np.clip(lo, 0.0, None), np.maximum(hi, 0.0)

    def to_dict(self) -> dict:
        return {
            "kind": "scaled",
            "coverage": self.coverage,
            "edges": list(self.edges),
            "lower": list(self.lower),
            "upper": list(self.upper),
        }


Intervals = BinnedConformal | ScaledConformal


def intervals_from_dict(d: dict, scale_model: Any = None) -> Intervals:
    """Interval parameters from registry metadata (``kind`` absent: the binned intervals of older models)."""
    kind = d.get("kind", "binned") if isinstance(d, dict) else None
    if kind == "binned":
        return BinnedConformal.from_dict(d)
    if kind != "scaled":
        raise MLError(f"unknown interval kind {kind!r}")
    if scale_model is None:
        raise MLError("scaled intervals without their scale model in model.skops")
    try:
        return ScaledConformal(
            float(d["coverage"]), tuple(d["edges"]), tuple(d["lower"]), tuple(d["upper"]), scale_model
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MLError(f"malformed interval parameters: {exc}") from None


def fit_scaled_conformal(
    y: np.ndarray,
    yhat: np.ndarray,
    x: np.ndarray,
    scale_model: Any,
    coverage: float = 0.9,
    n_bins: int = 6,
    min_bin_rows: int = 2000,
) -> ScaledConformal:
    """Calibrate an already fitted ``scale_model`` on rows (y, yhat, x) it was not fitted on."""
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(yhat)
    if not ok.any():
        raise MLError("no calibration rows with an observed target")
    probe = ScaledConformal(float(coverage), (), (0.0,), (0.0,), scale_model)
    f = yhat[ok]
    s = probe.scale(f, np.asarray(x)[ok])
    edges, lower, upper = _bin_offsets((y[ok] - f) / s, f, coverage, n_bins, min_bin_rows)
    return ScaledConformal(float(coverage), edges, lower, upper, scale_model)
