"""Road-graph weights for a network: from a user's edge list or adjacency, or built from sensor locations.

Every graph here is an (N, N) weight matrix in the network's sensor order,
diagonal 1, where ``w[i, j] > 0`` links sensor i to sensor j (i upstream of
j when the graph is directed). The features read both directions
(``ml.features.fit_context``); the dashboard and incidents use each sensor's
strongest links (``ml.road_graph.road_links``).

- **Edge list** (CSV ``from,to`` and one of ``weight`` or ``cost``): a
  ``weight`` is used as is; a ``cost`` (a distance, as in DCRNN's
  ``distances_la_2012.csv``) becomes ``exp(-(cost / sigma)^2)`` with sigma the
  standard deviation of all costs, and weights under 0.1 are dropped: the
  thresholded Gaussian kernel DCRNN built METR-LA's graph with. Neither column:
  every edge weighs 1.
- **Built from locations** (no graph given): the same kernel on great-circle
  distances, each sensor linked to its ``k`` nearest sensors (default 8), with
  sigma the standard deviation of those nearest distances; the result is
  symmetric, since locations alone do not say which way traffic flows.
"""

from __future__ import annotations

import numpy as np

from ml.exceptions import DataError

__all__ = ["KERNEL_THRESHOLD", "NEAREST", "from_edges", "from_locations", "haversine_km"]

KERNEL_THRESHOLD = 0.1
NEAREST = 8
_EARTH_RADIUS_KM = 6371.0088


def haversine_km(locations: np.ndarray) -> np.ndarray:
    """(N, N) great-circle distances in km between (latitude, longitude) rows in degrees."""
    lat, lon = np.radians(locations[:, 0])[:, None], np.radians(locations[:, 1])[:, None]
    a = np.sin((lat - lat.T) / 2) ** 2 + np.cos(lat) * np.cos(lat.T) * np.sin((lon - lon.T) / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _kernel(distance: np.ndarray, sigma: float) -> np.ndarray:
    weights = np.exp(-np.square(distance / sigma)) if sigma > 0 else (distance == 0).astype(np.float64)
    weights[weights < KERNEL_THRESHOLD] = 0.0
    return weights


def from_locations(locations: np.ndarray, nearest: int = NEAREST) -> np.ndarray:
    """A symmetric thresholded Gaussian kernel over each sensor's ``nearest`` sensors (diagonal 1)."""
    n = len(locations)
    if n < 2:
        raise DataError("a road graph needs at least two sensors")
    k = max(1, min(nearest, n - 1))
    distance = haversine_km(np.asarray(locations, dtype=np.float64))
    np.fill_diagonal(distance, np.inf)
    order = np.argsort(distance, axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(n), k)
    near = distance[rows, order.ravel()]
    weights = np.zeros((n, n))
    weights[rows, order.ravel()] = _kernel(near, float(np.std(near)))
    weights = np.maximum(weights, weights.T)
    np.fill_diagonal(weights, 1.0)
    return weights


def from_edges(sensor_ids: tuple[str, ...], sources: list[str], targets: list[str],
               weights: np.ndarray | None = None, costs: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(adjacency, edges skipped because a sensor is not in the network) from directed edges."""
    index = {sid: i for i, sid in enumerate(sensor_ids)}
    keep = np.array([s in index and t in index for s, t in zip(sources, targets, strict=True)], dtype=bool)
    if costs is not None:
        costs = np.asarray(costs, dtype=np.float64)
        if not np.all(np.isfinite(costs)) or np.any(costs < 0):
            raise DataError("the graph's costs must be finite and not negative")
        values = _kernel(costs, float(np.std(costs[keep])) if keep.any() else 0.0)
    elif weights is not None:
        values = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise DataError("the graph's weights must be finite and not negative")
    else:
        values = np.ones(len(sources))
    adjacency = np.zeros((len(sensor_ids), len(sensor_ids)))
    for source, target, value in zip(np.asarray(sources)[keep], np.asarray(targets)[keep], values[keep],
                                     strict=True):
        adjacency[index[source], index[target]] = max(adjacency[index[source], index[target]], value)
    np.fill_diagonal(adjacency, 1.0)
    return adjacency, int((~keep).sum())
