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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.exceptions import MLError

__all__ = ["BinnedConformal", "conformal_quantile", "fit_binned_conformal"]


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

    def bounds(self, yhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        yhat = np.asarray(yhat, dtype=np.float64)
        b = np.searchsorted(np.asarray(self.edges), yhat, side="right")
        lo = yhat + np.asarray(self.lower)[b]
        hi = yhat + np.asarray(self.upper)[b]
        return np.clip(lo, 0.0, None), np.maximum(hi, 0.0)

    def to_dict(self) -> dict:
        return {
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
    n_bins = int(max(1, min(n_bins, len(y) // max(min_bin_rows, 1))))
    edges = np.unique(np.quantile(yhat, np.linspace(0, 1, n_bins + 1)[1:-1])) if n_bins > 1 else np.zeros(0)
    alpha = 1.0 - coverage
    resid = y - yhat
    b = np.searchsorted(edges, yhat, side="right")
    lower, upper = [], []
    for i in range(len(edges) + 1):
        r = resid[b == i]
        lower.append(-conformal_quantile(-r, 1 - alpha / 2))
        upper.append(conformal_quantile(r, 1 - alpha / 2))
    return BinnedConformal(float(coverage), tuple(float(e) for e in edges), tuple(lower), tuple(upper))
