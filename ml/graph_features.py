"""Spatio-temporal columns of the feature function: diffusion of the deviation history over the road graph.

The road graph is directed: ``w_down[i, j] > 0`` when sensor j lies downstream of i,
``w_up[i, j] > 0`` when j lies upstream (both random-walk normalised, rows sum to 1).
For every step of the 12-step history the deviation of each sensor from its
training-period time-of-day profile is diffused 1, 2 and 3 hops forward
(downstream) and backward (upstream): ``D_k = D_{k-1} P^T``. From each diffused
history a few summaries are kept (the latest value, the mean of the last 3 and
of all 12 steps, the change over the last 6 steps), plus how the sensor's own
deviation behaves and the speed difference to its upstream and downstream
neighbours. Everything is computed from steps t-11 .. t only; the caller
(``ml.features.build_features_batch``) passes the imputed history and profile.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GRAPH_FEATURE_NAMES", "graph_columns"]

_HOPS = (1, 2, 3)
_DIRECTIONS = ("up", "down")
_SUMMARIES = ("last", "mean3", "mean12", "change6")

GRAPH_FEATURE_NAMES: tuple[str, ...] = (
    *(f"diff_{d}{k}_{s}" for d in _DIRECTIONS for k in _HOPS for s in _SUMMARIES),
    "up_minus_down",
    "up_minus_own",
    "own_minus_down",
    "dev_change3",
    "dev_change6",
    "dev_min_12",
    "dev_max_12",
    "dev_std_12",
    "drop_lead_up",
)


def _summaries(d: np.ndarray) -> list[np.ndarray]:
    """d (B, K, N) -> latest, mean of the last 3, mean of all, change over the last 6 steps, each (B, N)."""
    return [d[:, -1], d[:, -3:].mean(1), d.mean(1), d[:, -1] - d[:, -7]]


def graph_columns(
    filled: np.ndarray, dev: np.ndarray, w_up: np.ndarray, w_down: np.ndarray
) -> list[np.ndarray]:
    """The ``GRAPH_FEATURE_NAMES`` columns, each (B, N), from the imputed speeds and deviations (B, K, N)."""
    columns: list[np.ndarray] = []
    for w in (w_up, w_down):
        diffused = dev
        for _ in _HOPS:
            diffused = diffused @ w.T  # (B, K, N) @ (N, N).T: sensor i mixes the sensors weighted in w[i]
            columns += _summaries(diffused)
    last = filled[:, -1]
    up_last = last @ w_up.T
    down_last = last @ w_down.T
    own = dev
    # How far a slowdown upstream leads this sensor: upstream deviation 3 steps ago minus this sensor's now.
    up_dev_lag3 = dev[:, -4] @ w_up.T
    columns += [
        up_last - down_last,
        up_last - last,
        last - down_last,
        own[:, -1] - own[:, -4],
        own[:, -1] - own[:, -7],
        own.min(1),
        own.max(1),
        own.std(1),
        up_dev_lag3 - own[:, -1],
    ]
    return columns
