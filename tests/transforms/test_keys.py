"""Sensor shards: stable, in range, and spread over the network."""

from __future__ import annotations

import subprocess
import sys

from ml.dataset import network_sensor_ids
from transforms.keys import DEFAULT_SHARDS, sensor_shard


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
