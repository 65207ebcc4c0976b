"""ml/network_graph.py: road graphs from sensor locations and from edge lists."""

from __future__ import annotations

import numpy as np
import pytest

from ml.exceptions import DataError
from ml.network_graph import KERNEL_THRESHOLD, from_edges, from_locations, haversine_km
from ml.road_graph import road_links


def test_haversine_matches_a_known_distance() -> None:
    # Los Angeles City Hall to Santa Monica Pier: about 24 km as the crow flies.
    d = haversine_km(np.array([[34.0537, -118.2428], [34.0094, -118.4973]]))
    assert d[0, 0] == 0 and d[0, 1] == pytest.approx(23.9, abs=0.5) and d[0, 1] == d[1, 0]


def test_a_graph_from_locations_links_near_sensors_symmetrically() -> None:
    # Six sensors on a line 1 km apart (about 0.009 degrees of latitude) and one 50 km away.
    lat = np.array([34.0 + 0.009 * i for i in range(6)] + [34.45])
    locations = np.column_stack([lat, np.full(7, -118.0)])
    w = from_locations(locations, nearest=2)
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(np.diag(w), 1.0)
    assert w[0, 1] > w[0, 2] > 0  # nearer is stronger
    assert w[0, 5] == 0  # beyond the 2 nearest
    assert np.all((w == 0) | (w >= KERNEL_THRESHOLD))
    links = road_links(w)
    assert {(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)} <= set(links)  # the line is a chain on the map


def test_edges_with_costs_become_a_thresholded_gaussian_kernel() -> None:
    ids = ("a", "b", "c")
    costs = np.array([100.0, 300.0, 2000.0, 50.0])
    adjacency, skipped = from_edges(ids, ["a", "b", "a", "z"], ["b", "c", "c", "a"], costs=costs)
    sigma = np.std(costs[:3])
    assert skipped == 1  # the edge of a sensor the network does not have
    assert adjacency[0, 1] == pytest.approx(np.exp(-(100 / sigma) ** 2))
    assert adjacency[1, 0] == 0  # directed as given
    assert adjacency[0, 2] == 0  # under the threshold
    np.testing.assert_array_equal(np.diag(adjacency), 1.0)


def test_negative_weights_are_refused() -> None:
    with pytest.raises(DataError, match="weights must be finite and not negative"):
        from_edges(("a", "b"), ["a"], ["b"], weights=np.array([-1.0]))


def test_one_sensor_cannot_make_a_graph() -> None:
    with pytest.raises(DataError, match="at least two sensors"):
        from_locations(np.array([[34.0, -118.0]]))
