"""Masked forecast metrics of the standard METR-LA protocol and interval scores.

A target of 0 (or NaN) is a missing reading and is ignored by every metric, as
in DCRNN and Graph WaveNet. MAPE is in percent over the remaining targets.
"""

from __future__ import annotations

import numpy as np

__all__ = ["observed_mask", "masked_mae", "masked_rmse", "masked_mape", "interval_coverage", "interval_width", "scores"]


def observed_mask(y: np.ndarray) -> np.ndarray:
    """True where the target is a real reading (finite and not 0)."""
    y = np.asarray(y, dtype=np.float64)
    return np.isfinite(y) & (y != 0)


def _pairs(y: np.ndarray, yhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    if y.shape != yhat.shape:
        raise ValueError(f"targets {y.shape} and predictions {yhat.shape} differ in shape")
    ok = observed_mask(y)
    return y[ok], yhat[ok]


def masked_mae(y: np.ndarray, yhat: np.ndarray) -> float:
    y, yhat = _pairs(y, yhat)
    return float(np.mean(np.abs(y - yhat))) if len(y) else float("nan")


def masked_rmse(y: np.ndarray, yhat: np.ndarray) -> float:
    y, yhat = _pairs(y, yhat)
    return float(np.sqrt(np.mean((y - yhat) ** 2))) if len(y) else float("nan")


def masked_mape(y: np.ndarray, yhat: np.ndarray) -> float:
    y, yhat = _pairs(y, yhat)
    return float(100.0 * np.mean(np.abs(y - yhat) / np.abs(y))) if len(y) else float("nan")


def interval_coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of observed targets with lower <= y <= upper."""
    y = np.asarray(y, dtype=np.float64)
    ok = observed_mask(y)
    if not ok.any():
        return float("nan")
    return float(np.mean((np.asarray(lower)[ok] <= y[ok]) & (y[ok] <= np.asarray(upper)[ok])))


def interval_width(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Mean upper - lower over the rows with an observed target."""
    ok = observed_mask(y)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.asarray(upper, dtype=np.float64)[ok] - np.asarray(lower, dtype=np.float64)[ok]))


def scores(y: np.ndarray, yhat: np.ndarray, lower: np.ndarray | None = None, upper: np.ndarray | None = None) -> dict:
    """MAE, RMSE, MAPE (and coverage, width when an interval is given) plus the number of scored targets."""
    out = {
        "mae": masked_mae(y, yhat),
        "rmse": masked_rmse(y, yhat),
        "mape": masked_mape(y, yhat),
        "n": int(observed_mask(y).sum()),
    }
    if lower is not None and upper is not None:
        out["coverage"] = interval_coverage(y, lower, upper)
        out["width"] = interval_width(y, lower, upper)
    return out
