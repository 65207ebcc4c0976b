"""The road network as a sparse graph of sensor-to-sensor links, from METR-LA's adjacency.

DCRNN's adjacency is a thresholded Gaussian kernel of driving distance: a
sensor is linked to every sensor within a few miles of road, ~7 per sensor.
Drawn or used as is, it is a mesh. The road itself is the strongest link of
each sensor in each direction: its nearest sensor downstream (strongest
out-link) and upstream (strongest in-link). The union of those links, taken
undirected, is :func:`road_links`: 225 links over the 207 sensors, most
sensors with exactly two (a chain along a freeway). Incidents (a "run of
connected sensors") and the dashboard's road lines both use these links.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ml.dataset import load_adjacency

__all__ = ["bundled_road_links", "components", "load_road_links", "road_links"]


def road_links(adjacency: np.ndarray, min_weight: float = 0.0) -> tuple[tuple[int, int], ...]:
    """Undirected links ``(i, j)`` with ``i < j``: each sensor's strongest out- and in-link above ``min_weight``.

    A symmetric graph (one built from locations) has no up- or downstream: there each sensor's two strongest
    links stand in for them.
    """
    weights = np.array(adjacency, dtype=np.float64, copy=True)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"adjacency must be square, got shape {weights.shape}")
    np.fill_diagonal(weights, 0.0)
    links: set[tuple[int, int]] = set()
    symmetric = np.allclose(weights, weights.T)
    for i in range(weights.shape[0]):
        if symmetric:  # no direction (a graph built from locations): the two strongest links, one each way
            strongest = np.argsort(-weights[i], kind="stable")[:2]
            candidates = [(int(j), weights[i, j]) for j in strongest]
        else:
            candidates = [(int(np.argmax(weights[i])), weights[i].max()),
                          (int(np.argmax(weights[:, i])), weights[:, i].max())]
        for j, weight in candidates:
            if weight > min_weight and j != i:
                links.add((min(i, j), max(i, j)))
    return tuple(sorted(links))


def load_road_links(sensor_ids: Sequence[str], path: Path | None = None) -> tuple[tuple[str, str], ...]:
    """The road links between ``sensor_ids`` (by id), from the bundled (or given) adjacency file."""
    ids = tuple(str(s) for s in sensor_ids)
    return tuple((ids[i], ids[j]) for i, j in road_links(load_adjacency(ids, path)))


def bundled_road_links(sensor_ids: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """:func:`load_road_links` from the bundled METR-LA graph; no links (each sensor alone) when it lacks a sensor."""
    from ml.exceptions import DataError

    try:
        return load_road_links(sensor_ids)
    except DataError:
        return ()


def components(members: Iterable[int], neighbours: dict[int, tuple[int, ...]]) -> list[list[int]]:
    """Connected components of ``members`` over ``neighbours``, each sorted, ordered by their first member."""
    todo = set(members)
    found: list[list[int]] = []
    while todo:
        start = min(todo)
        todo.discard(start)
        group, stack = [start], [start]
        while stack:
            for other in neighbours.get(stack.pop(), ()):
                if other in todo:
                    todo.discard(other)
                    group.append(other)
                    stack.append(other)
        found.append(sorted(group))
    return sorted(found, key=lambda g: g[0])
