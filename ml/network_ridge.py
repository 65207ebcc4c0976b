"""A network-wide ridge of how every sensor's deviation will change, as three columns of the feature function.

The road-graph columns see a sensor's neighbours, 1-3 hops away. Congestion also
travels between sensors the graph does not join (ramps, parallel freeways, the
same commute everywhere at once). This ridge learns that from the data: for each
horizon h, every sensor's change of deviation over h (its reading at t+h minus
its time-of-day profile, minus its deviation at t) as a linear function of every
sensor's deviation at t and its change over the last 3 and the last 11 steps
(``3 N`` inputs from steps t-11 .. t only, standardised). One multi-output ridge
for all horizons: a network step is one matrix product.

The trees must not read an in-sample fit (docs/model-experiments.md, sixth
round: the columns then hurt at 60 min). So the ridge is cross-fitted on the
training period's days split by the parity of the day number: a window whose
step lies in the training period reads the fit of the other half of the days,
every other window (validation, test, live) the mean of the two fits, which is
one linear map. Targets a reading does not cover count as no change.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = [
    "MAX_RIDGE_SENSORS", "NetworkRidge", "RIDGE_ALPHA", "fit_network_ridge", "fits_network", "ridge_inputs",
    "ridge_targets",
]

# Its coefficients grow with the square of the network: (2, 3 N, 3 N) float64 is 6 MB at METR-LA's 207 sensors and
# 144 MB at 1,000. A larger network gets no ridge (its columns are NaN: missing to the trees, the training mean to
# the perceptrons).
MAX_RIDGE_SENSORS = 1000
RIDGE_ALPHA = 1000.0  # on standardised inputs; 100 / 1,000 / 10,000 scored within 0.018 of one another (row 30)


def ridge_inputs(dev: np.ndarray) -> np.ndarray:
    """dev (B, K, N), the imputed deviation history -> (B, 3 N): the latest deviation, its change over the last
    3 steps and over the whole history (the inputs of every sensor, in that order)."""
    last = dev[:, -1]
    return np.concatenate([last, last - dev[:, -4], last - dev[:, 0]], axis=1)


def ridge_targets(future_dev: np.ndarray, dev_last: np.ndarray) -> np.ndarray:
    """future_dev (B, H, N), the deviation at each horizon's target (NaN = no reading), dev_last (B, N) ->
    (B, H N): the changes the ridge learns, 0 where the target has no reading."""
    change = future_dev - dev_last[:, None, :]
    return np.where(np.isfinite(change), change, 0.0).reshape(len(change), -1)


def fits_network(n_sensors: int) -> bool:
    """Whether a network of ``n_sensors`` gets a ridge (``MAX_RIDGE_SENSORS``)."""
    return n_sensors <= MAX_RIDGE_SENSORS


@dataclass(frozen=True, eq=False)
class NetworkRidge:
    """Two fits (one per half of the training days) of ``(inputs - mean) / scale @ coef[f] + intercept[f]``.

    mean / scale: (3 N,); coef: (2, 3 N, H N); intercept: (2, H N). Outputs are horizon-major: horizon j's
    column of sensor i is output ``j N + i``.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    @cached_property
    def _mean_fit(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean of the two fits (one linear map), computed once: a live step reads it."""
        return self.coef.mean(0), self.intercept.mean(0)

    @property
    def n_horizons(self) -> int:
        return self.coef.shape[2] * 3 // self.coef.shape[1]

    def predict(self, inputs: np.ndarray, fold: np.ndarray) -> np.ndarray:
        """inputs (B, 3 N); fold (B,): 0 or 1 = the window's day fell in that half of the training days (it reads
        the other half's fit), -1 = outside the training period (the mean of the two) -> (B, H, N)."""
        z = (inputs - self.mean) / self.scale
        fits = {0: (self.coef[1], self.intercept[1]), 1: (self.coef[0], self.intercept[0]), -1: self._mean_fit}
        # One vector-matrix product a window: a product over many rows sums in an order that depends on how many
        # there are, and a window's columns must not depend on the windows computed beside it (streaming computes
        # one step or a few, the tables many). About 0.1 ms a window (ad hoc, 207 sensors).
        rows = [z[b] @ fits[int(f)][0] + fits[int(f)][1] for b, f in enumerate(fold)]
        out = np.stack(rows) if rows else np.empty((0, self.coef.shape[2]))
        return out.reshape(len(z), self.n_horizons, self.coef.shape[2] // self.n_horizons)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"ridge_mean": self.mean, "ridge_scale": self.scale, "ridge_coef": self.coef,
                "ridge_intercept": self.intercept}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> NetworkRidge | None:
        """The ridge stored by ``to_arrays`` (the keys are removed from ``arrays``), None if it holds none."""
        keys = ("ridge_mean", "ridge_scale", "ridge_coef", "ridge_intercept")
        if not all(k in arrays for k in keys):
            return None
        return cls(*(arrays.pop(k) for k in keys))


def fit_network_ridge(inputs: np.ndarray, targets: np.ndarray, fold: np.ndarray,
                      alpha: float = RIDGE_ALPHA) -> NetworkRidge | None:
    """Fit on rows of the training windows: inputs (T, 3 N), targets (T, H N), fold (T,) 0 / 1 by the day
    (``ml.dataset.day_parity``). None when either half of the days has no window (a training period shorter than
    two days)."""
    if not ((fold == 0).any() and (fold == 1).any()):
        return None
    mean = inputs.mean(0)
    scale = inputs.std(0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    coefs, intercepts = [], []
    for f in (0, 1):
        z = (inputs[fold == f] - mean) / scale
        y = targets[fold == f]
        z_mean, y_mean = z.mean(0), y.mean(0)
        zc = z - z_mean
        gram = zc.T @ zc
        gram[np.diag_indices_from(gram)] += alpha
        coef = np.linalg.solve(gram, zc.T @ (y - y_mean))
        coefs.append(coef)
        intercepts.append(y_mean - z_mean @ coef)
    return NetworkRidge(mean, scale, np.stack(coefs), np.stack(intercepts))
