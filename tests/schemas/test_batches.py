"""A Columns batch crosses a pickle (a runner's stage boundary) unchanged: values, dtypes, order, nulls."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from apache_beam.coders import PickleCoder

from schemas.batches import Columns, OneText, compact_text, expand_text


def _batch(n: int) -> Columns:
    rng = np.random.default_rng(n)
    speed = rng.uniform(0, 70, n)
    speed[::3] = np.nan
    return Columns("score", {
        "sensor_id": np.array([f"7{i:05d}" for i in range(n)]),
        "event_time": np.arange(n, dtype=np.int64) * 300_000,
        "horizon_min": np.full(n, 15, np.int32),
        "actual_speed_mph": speed,
        "inside_interval": np.array([None, True, False] * n, object)[:n],
        "status": np.array(["SCORED", "MISSING"] * n, object)[:n],
        "matrix": rng.integers(0, 9, (n, 3)),
        "flag": rng.random(n) < 0.5,
    }, frozenset({"actual_speed_mph"}))


@pytest.mark.parametrize("n", [0, 1, 52, 621])
def test_a_batch_survives_the_state_and_element_coder(n: int) -> None:
    batch = _batch(n)
    coder = PickleCoder()
    for back in (pickle.loads(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)), coder.decode(coder.encode(batch))):
        assert back.kind == batch.kind and back.nullable == batch.nullable
        assert list(back.data) == list(batch.data)
        for name, column in batch.data.items():
            assert back[name].dtype == column.dtype and back[name].shape == column.shape, name
            assert back[name].flags.writeable, name
        np.testing.assert_array_equal(back["matrix"], batch["matrix"])
        assert back.records() == batch.records()


def test_a_sliced_column_travels_as_its_values() -> None:
    batch = _batch(40)
    strided = Columns(batch.kind, {"every_other": np.arange(80)[::2], "sensor_id": batch["sensor_id"]})
    back = pickle.loads(pickle.dumps(strided))
    assert back["every_other"].tolist() == list(range(0, 80, 2))


def test_batches_concatenate_in_order_and_only_alike() -> None:
    a = Columns("score", {"sensor_id": np.array(["1", "2"]), "x": np.array([1.0, np.nan])}, frozenset({"x"}))
    b = Columns("score", {"sensor_id": np.array(["333"]), "x": np.array([3.0])}, frozenset({"x"}))
    both = Columns.concat([a, b])
    assert both["sensor_id"].tolist() == ["1", "2", "333"]
    assert np.array_equal(both["x"], [1.0, np.nan, 3.0], equal_nan=True)
    assert both.nullable == frozenset({"x"}) and Columns.concat([a]) is a
    for other in (Columns("prediction", dict(b.data), b.nullable), Columns("score", {"sensor_id": b["sensor_id"]}),
                  Columns("score", dict(b.data))):
        with pytest.raises(ValueError, match="cannot concatenate"):
            Columns.concat([a, other])


def test_a_text_column_of_one_value_travels_as_that_value() -> None:
    n = 621
    version = "20261206T014903Z-da05fb"
    batch = Columns("prediction", {"sensor_id": np.array([f"7{i % 207:05d}" for i in range(n)]),
                                   "model_version": np.full(n, version), "x": np.arange(n, dtype=np.float64)})
    mixed = Columns("prediction", {**batch.data, "model_version": np.array([version] * (n - 1) + ["other"])})
    one, two = pickle.dumps(batch, pickle.HIGHEST_PROTOCOL), pickle.dumps(mixed, pickle.HIGHEST_PROTOCOL)
    assert len(two) - len(one) >= n * 4 * len(version) - 200  # the mixed column travels row by row, this one not
    for original, sent in ((batch, one), (mixed, two)):
        back = pickle.loads(sent)
        assert list(back.data) == list(original.data)
        for name, column in original.data.items():
            assert back[name].dtype == column.dtype and back[name].flags.writeable, name
            np.testing.assert_array_equal(back[name], column)
    back = pickle.loads(one)
    back["model_version"][0] = "changed"  # its own array, not a shared one
    assert back["model_version"][1] == version


def test_a_batch_pickled_before_one_value_columns_still_reads() -> None:
    batch = _batch(52)  # no text column of one value: what older savepoints hold
    read, args = batch.__reduce__()
    assert args[-1] == {}
    back = read(*args[:-1])  # the six arguments of the older format
    assert list(back.data) == list(batch.data) and back.records() == batch.records()


def test_compact_text_keeps_a_one_value_text_column_as_its_value_and_nothing_else() -> None:
    n = 500
    columns = {"model_version": np.full(n, "20261206T014903Z-da05fb"), "sensor_id": np.array(["a", "b"] * (n // 2)),
               "one_number": np.zeros(n), "one_row": np.array(["x"]), "same_ends": np.array(["a", "b", "a"])}
    compact = compact_text(columns)
    assert compact["model_version"] == OneText("<U23", n, "20261206T014903Z-da05fb")
    for name in ("sensor_id", "one_number", "one_row", "same_ends"):  # mixed, not text, one row: as they are
        assert compact[name] is columns[name]
    back = expand_text(compact)
    for name, column in columns.items():
        assert back[name].dtype == column.dtype and back[name].flags.writeable, name
        np.testing.assert_array_equal(back[name], column)
    sizes = [len(pickle.dumps(value, pickle.HIGHEST_PROTOCOL)) for value in (compact, columns)]
    assert sizes[0] < sizes[1] - n * 4 * 20
    assert expand_text(columns["sensor_id"]) is columns["sensor_id"] and expand_text(7) == 7


def test_one_text_compares_whole_values_in_strided_and_padded_columns() -> None:
    strided = np.array(["v", "w"] * 4)[::2]  # a view with a stride: every row "v"
    assert not strided.flags.c_contiguous and OneText.of(strided) == OneText("<U1", 4, "v")
    assert OneText.of(np.array(["v", "w", "x", "w", "v"])[::2]) is None  # same ends, another value inside
    assert OneText.of(np.array(["a", "ab", "a"])) is None  # a shorter value is NUL-padded, not a prefix match
    assert OneText.of(np.array(["ab", "ab", "ab"], dtype="<U5")) == OneText("<U5", 3, "ab")
