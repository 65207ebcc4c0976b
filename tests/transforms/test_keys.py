"""Sensor shards: stable, in range, and spread over the network."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ml.dataset import network_sensor_ids
from transforms.keys import DEFAULT_SHARDS, factorize, sensor_shard, shard_groups


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


@pytest.mark.parametrize("dtype", [object, str])
def test_factorize_is_np_unique_with_its_inverse(dtype) -> None:
    rng = np.random.default_rng(3)
    ids = np.array(["773869", "767541", "ü-1", "", "7", "767542"], dtype=object)
    values = ids[rng.integers(0, len(ids), 500)].astype(dtype)
    distinct, codes = factorize(values)
    want, inverse = np.unique(values.astype(str), return_inverse=True)
    assert distinct.tolist() == want.tolist() and distinct.dtype == values.dtype
    assert np.array_equal(codes, inverse.reshape(-1))
    empty, none = factorize(np.array([], dtype=dtype))
    assert len(empty) == 0 and len(none) == 0


def test_shard_groups_put_each_row_in_its_sensors_shard_in_order() -> None:
    ids = np.array(list(network_sensor_ids()[:9]) * 3, dtype=object)
    groups = dict(shard_groups(ids))
    assert sorted(np.concatenate(list(groups.values())).tolist()) == list(range(len(ids)))
    for shard, rows in groups.items():
        assert all(sensor_shard(ids[r]) == shard for r in rows) and np.all(np.diff(rows) > 0)
