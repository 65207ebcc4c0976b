"""The road links drawn on the map and followed by incidents."""

from __future__ import annotations

import numpy as np

from ml.dataset import network_sensor_ids
from ml.road_graph import bundled_road_links, components, road_links


def test_road_links_follow_the_strongest_link_each_way() -> None:
    adjacency = np.array([[1, 0.9, 0.2, 0], [0, 1, 0.8, 0.1], [0, 0, 1, 0.7], [0.05, 0, 0, 1]], float)
    assert road_links(adjacency) == ((0, 1), (0, 3), (1, 2), (2, 3))
    assert road_links(adjacency, min_weight=0.1) == ((0, 1), (1, 2), (2, 3))
    assert components([0, 2, 3], {0: (1,), 1: (0, 2), 2: (1, 3), 3: (2,)}) == [[0], [2, 3]]


def test_the_metr_la_links_read_as_roads() -> None:
    """Mostly chains: most sensors have two links (up- and downstream); every link joins two known sensors."""
    ids = network_sensor_ids()
    links = bundled_road_links(ids)
    degree: dict[str, int] = {}
    for a, b in links:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    assert len(links) == 225 and set(ids) - set(degree) == {"717804"}  # no link in its adjacency row or column
    assert sum(d == 2 for d in degree.values()) > 0.75 * len(ids)
    assert bundled_road_links(("773869", "not-a-sensor")) == ()
