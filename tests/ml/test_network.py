"""ml/network.py: the bundled METR-LA network, resolving networks by name or directory, the model's network."""

from __future__ import annotations

import numpy as np
import pytest

from config.settings import PlatformSettings
from ml.dataset import METR_LA_SPLIT, STEP_MS, TRAIN_END_MS, VAL_END_MS, load_adjacency, load_metrla
from ml.exceptions import DataError
from ml.network import BUNDLED_NETWORK, check_network, known_networks, load_network, network_dir
from ml.network_import import split_by_fractions
from ml.road_graph import bundled_road_links


def test_the_bundled_network_is_metr_la_with_its_protocol_split() -> None:
    network = load_network(BUNDLED_NETWORK)
    assert network.name == "metr-la" and network.step_ms == STEP_MS
    assert network.split == METR_LA_SPLIT
    assert (network.split.train_end_ms, network.split.val_end_ms) == (TRAIN_END_MS, VAL_END_MS)
    assert len(network.sensor_ids) == 207
    assert network.road_links() == bundled_road_links(network.sensor_ids)
    np.testing.assert_array_equal(network.adjacency(), load_adjacency(network.sensor_ids))
    data = network.readings()
    assert data.split == METR_LA_SPLIT and data.speed.shape == load_metrla().speed.shape


def test_the_standard_fractions_of_the_full_dataset_give_metr_las_protocol_boundaries() -> None:
    """70/10/20 of the full 34,272 steps' windows reproduce the fixed METR-LA timestamps exactly."""
    start = int(np.datetime64("2012-03-01T00:00", "ms").astype(np.int64))
    times = start + np.arange(34_272, dtype=np.int64) * STEP_MS
    assert split_by_fractions(times, 0.7, 0.1) == METR_LA_SPLIT


def test_the_split_labels_a_windows_last_input_step() -> None:
    times = np.array([TRAIN_END_MS - STEP_MS, TRAIN_END_MS, VAL_END_MS - STEP_MS, VAL_END_MS])
    assert list(METR_LA_SPLIT.of(times)) == ["train", "val", "val", "test"]


def test_unknown_networks_and_plain_directories_are_one_line_errors(tmp_path) -> None:
    settings = PlatformSettings(work_dir=tmp_path)
    with pytest.raises(DataError, match=r"no network 'nope'; known: metr-la \(add one with `traffic network import`\)"):
        network_dir("nope", settings)
    with pytest.raises(DataError, match="is not a network directory"):
        network_dir(str(tmp_path), settings)
    assert known_networks(settings) == ("metr-la",)


def test_a_broken_manifest_is_a_one_line_error(tmp_path) -> None:
    (tmp_path / "network.json").write_text('{"name": "x", "step_s": 300}')
    with pytest.raises(DataError, match=r"network.json is not a valid network manifest \(KeyError"):
        load_network(tmp_path)


def test_a_model_of_another_network_is_refused() -> None:
    class Bundle:
        version = "v1"
        metadata = {"network": "other"}

    with pytest.raises(DataError, match="model v1 was trained on network 'other', not 'metr-la'"):
        check_network(Bundle(), load_network())
    Bundle.metadata = {}  # bundles from before networks existed are METR-LA's
    check_network(Bundle(), load_network())


def test_the_setting_picks_the_default_network(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRAFFIC_NETWORK", "nope")
    with pytest.raises(DataError, match="no network 'nope'"):
        load_network()
