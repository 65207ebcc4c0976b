"""Sensor shards: stable, in range, and spread over the network."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ml.dataset import network_sensor_ids
from transforms import keys
from transforms.keys import DEFAULT_SHARDS, sensor_shard, shard_groups


def test_every_sensor_has_one_shard_in_range_and_the_network_spreads_over_all_of_them():
    sensors = network_sensor_ids()
    shards = [sensor_shard(s) for s in sensors]
    assert all(0 <= s < DEFAULT_SHARDS for s in shards)
    assert set(shards) == set(range(DEFAULT_SHARDS))
    assert max(shards.count(s) for s in set(shards)) <= 3 * len(sensors) / DEFAULT_SHARDS


def test_shards_do_not_depend_on_the_process():
    # Python's hash() of a str changes per process; state written under one shard must be found again
    # after a restart from a savepoint, in another process.
    code = "from transforms.keys import sensor_shard; print([sensor_shard(s) for s in ('717447', '773869', 'x')])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PYTHONPATH": "."}).stdout.strip()
    assert other == str([sensor_shard(s) for s in ("717447", "773869", "x")])


@pytest.mark.parametrize("hashed_from", [0, 10**9], ids=["hash-first", "per-row"])
@pytest.mark.parametrize("dtype", [object, str])
def test_shard_groups_hold_each_row_once_under_its_sensors_shard_in_order(monkeypatch, hashed_from, dtype):
    monkeypatch.setattr(keys, "HASHED_FROM", hashed_from)
    sensors = np.random.default_rng(2).choice(np.array(network_sensor_ids(), dtype=dtype), 500)
    groups = list(shard_groups(sensors))
    assert [shard for shard, _ in groups] == sorted({sensor_shard(s) for s in sensors.tolist()})
    for shard, rows in groups:
        assert rows.tolist() == [i for i, s in enumerate(sensors.tolist()) if sensor_shard(s) == shard]
