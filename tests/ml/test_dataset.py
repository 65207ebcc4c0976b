"""The METR-LA loader: the bundled copy, .npz and .h5 files written here, slicing, and its errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.dataset import (
    BUNDLED_DIR,
    STEP_MS,
    TRAIN_END_MS,
    VAL_END_MS,
    MetrLA,
    load_adjacency,
    load_metrla,
    load_sensor_locations,
    split_of,
)
from ml.exceptions import DataError
from schemas.exceptions import TrafficError

T0 = int(np.datetime64("2012-03-01T00:00", "ms").astype(np.int64))


@pytest.fixture(scope="module")
def bundled() -> MetrLA:
    return load_metrla()


def test_bundled_copy_has_the_documented_shape(bundled: MetrLA) -> None:
    assert bundled.speed.shape == (27_422, 207)
    assert bundled.speed.dtype == np.float64
    assert bundled.times_ms[0] == T0
    assert bundled.times_ms[-1] == int(np.datetime64("2012-06-04T05:05", "ms").astype(np.int64))
    assert np.all(np.diff(bundled.times_ms) == STEP_MS)
    assert len(set(bundled.sensor_ids)) == 207 and bundled.sensor_ids[0] == "773869"


def test_zero_means_missing_and_about_8_percent_is_missing(bundled: MetrLA) -> None:
    assert not np.isnan(bundled.speed).any() and (bundled.speed >= 0).all()
    missing = float((bundled.speed == 0).mean())
    assert 0.05 < missing < 0.11


def test_training_scaler_statistics_are_close_to_the_published_ones(bundled: MetrLA) -> None:
    # the published mean/std cover the full data's training windows; the bundled copy holds them all
    train = bundled.speed[bundled.times_ms < TRAIN_END_MS]
    assert train.mean() == pytest.approx(54.405928, abs=0.05)
    assert train.std() == pytest.approx(19.493739, abs=0.05)


def test_between_is_half_open(bundled: MetrLA) -> None:
    day = bundled.between(T0, T0 + 24 * 3600 * 1000)
    assert day.n_steps == 288 and day.times_ms[0] == T0 and day.times_ms[-1] == T0 + 287 * STEP_MS
    assert bundled.between(T0 + 1, T0 + STEP_MS).n_steps == 0
    assert bundled.between(None, T0 + STEP_MS).n_steps == 1
    np.testing.assert_array_equal(day.speed, bundled.speed[:288])


def test_only_keeps_the_requested_columns_in_order(bundled: MetrLA) -> None:
    subset = bundled.only(["717490", "773869"])
    assert subset.sensor_ids == ("717490", "773869")
    np.testing.assert_array_equal(subset.speed[:, 1], bundled.speed[:, 0])
    with pytest.raises(DataError, match="unknown sensor ids: nope"):
        bundled.only(["773869", "nope"])


def _small(bundled: MetrLA, steps: int = 48, sensors: int = 5) -> MetrLA:
    return MetrLA(bundled.speed[:steps, :sensors].copy(), bundled.times_ms[:steps].copy(), bundled.sensor_ids[:sensors])


def test_npz_written_here_loads_back(tmp_path, bundled: MetrLA) -> None:
    small = _small(bundled)
    path = tmp_path / "slice.npz"
    np.savez(
        path,
        speed=small.speed,
        timestamps=small.times_ms.astype("datetime64[ms]").astype("datetime64[m]"),
        sensor_ids=np.array(small.sensor_ids),
    )
    loaded = load_metrla(path)
    np.testing.assert_array_equal(loaded.speed, small.speed)
    np.testing.assert_array_equal(loaded.times_ms, small.times_ms)
    assert loaded.sensor_ids == small.sensor_ids


def test_h5_written_with_pandas_loads_back(tmp_path, bundled: MetrLA) -> None:
    small = _small(bundled, steps=30, sensors=4)
    frame = pd.DataFrame(
        small.speed, index=pd.to_datetime(small.times_ms, unit="ms"), columns=[int(s) for s in small.sensor_ids]
    )
    path = tmp_path / "metr-la.h5"
    frame.to_hdf(path, key="df")
    loaded = load_metrla(str(path))
    np.testing.assert_array_equal(loaded.speed, small.speed)
    np.testing.assert_array_equal(loaded.times_ms, small.times_ms)
    assert loaded.sensor_ids == small.sensor_ids


def test_missing_file_is_a_one_line_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        load_metrla(tmp_path / "absent.npz")
    assert isinstance(info.value, TrafficError) and "\n" not in str(info.value)


def test_directory_and_unsupported_format(tmp_path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        load_metrla(tmp_path)
    (tmp_path / "speeds.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="unsupported format"):
        load_metrla(tmp_path / "speeds.csv")


def test_npz_without_the_expected_keys(tmp_path) -> None:
    np.savez(tmp_path / "wrong.npz", speeds=np.zeros((2, 2)))
    with pytest.raises(DataError, match="lacks the key"):
        load_metrla(tmp_path / "wrong.npz")


def test_corrupt_npz(tmp_path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError):
        load_metrla(tmp_path / "bad.npz")


def test_corrupt_h5(tmp_path) -> None:
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 either")
    with pytest.raises(DataError, match="not a METR-LA HDFStore"):
        load_metrla(tmp_path / "bad.h5")


def test_h5_without_key_df(tmp_path) -> None:
    pd.DataFrame({"1": [1.0]}, index=pd.to_datetime([T0], unit="ms")).to_hdf(tmp_path / "other.h5", key="speeds")
    with pytest.raises(DataError, match="key 'df'"):
        load_metrla(tmp_path / "other.h5")


def test_shape_and_order_checks() -> None:
    with pytest.raises(DataError, match="expected"):
        MetrLA(np.zeros((3, 2)), np.arange(3, dtype=np.int64), ("a", "b", "c"))
    with pytest.raises(DataError, match="strictly increasing"):
        MetrLA(np.zeros((3, 1)), np.array([0, 2, 1], dtype=np.int64), ("a",))


def test_unreadable_remote_paths_are_data_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.io.filesystems import FileSystems

    # load_metrla sets Beam's process-wide filesystem options: restore them for the other tests
    monkeypatch.setattr(FileSystems, "_pipeline_options", FileSystems._pipeline_options)
    with pytest.raises(DataError, match="cannot read"):
        load_metrla("nosuchscheme://somewhere/metr-la.h5")
    hdfs_down = {"hdfs_host": "127.0.0.1", "hdfs_port": 1, "hdfs_user": "traffic"}
    with pytest.raises(DataError, match="cannot read hdfs://"):
        load_metrla("hdfs://data/metr-la.npz", hdfs_options=hdfs_down)


def test_locations_and_adjacency_follow_the_requested_order(bundled: MetrLA) -> None:
    ids = bundled.sensor_ids
    locations = load_sensor_locations(ids)
    assert locations.shape == (207, 2)
    assert (33.5 < locations[:, 0]).all() and (locations[:, 0] < 34.5).all()  # Los Angeles latitudes
    assert (-119 < locations[:, 1]).all() and (locations[:, 1] < -117.5).all()
    adjacency = load_adjacency(ids)
    assert adjacency.shape == (207, 207) and np.allclose(np.diag(adjacency), 1.0)
    reversed_ids = tuple(reversed(ids[:3]))
    np.testing.assert_array_equal(load_sensor_locations(reversed_ids), locations[[2, 1, 0]])
    np.testing.assert_array_equal(load_adjacency(reversed_ids), adjacency[np.ix_([2, 1, 0], [2, 1, 0])])
    with pytest.raises(DataError):
        load_sensor_locations(("nope",))
    with pytest.raises(DataError):
        load_adjacency(("nope",))


def test_split_follows_the_protocol(bundled: MetrLA) -> None:
    splits = split_of(bundled.times_ms)
    first_val = int(np.argmax(splits == "val"))
    assert bundled.times_ms[first_val] == TRAIN_END_MS == T0 + (23_974 + 11) * STEP_MS
    assert (splits[:first_val] == "train").all()
    # the bundled copy ends with the targets of the last validation window (t + 12 steps)
    assert bundled.times_ms[-1] == VAL_END_MS - STEP_MS + 12 * STEP_MS
    assert (splits == "test").sum() == 12
    assert split_of(np.array([VAL_END_MS - 1, VAL_END_MS])).tolist() == ["val", "test"]
    assert BUNDLED_DIR.joinpath("README.md").exists()
