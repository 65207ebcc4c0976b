"""Training tables built by the batch pipeline (DirectRunner) equal the in-process oracle, train the same model,
and are rebuilt exactly when they are stale for the data (pipelines/training_tables.py)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ml.dataset import BUNDLED_DIR, TRAIN_END_MS, load_metrla
from ml.exceptions import DataError
from ml.features import fit_context
from ml.train import train
from ml.training_set import examples
from pipelines.training_tables import (
    MANIFEST_FILE,
    TableRequest,
    ensure_tables,
    read_manifest,
    read_training_tables,
    stale_reason,
)

DAY_MS = 24 * 3600 * 1000
SENSORS = 4
START_MS, END_MS = TRAIN_END_MS - DAY_MS, TRAIN_END_MS + DAY_MS  # a day of training steps, a day of validation


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[str, TableRequest, Path]:
    """Tables for 4 sensors x 2 days around the train/validation boundary, from a copy of the bundled file."""
    tmp = tmp_path_factory.mktemp("tables")
    data_file = tmp / "speed.npz"
    shutil.copyfile(BUNDLED_DIR / "speed.npz", data_file)
    sensors = tuple(load_metrla(data_file).sensor_ids[:SENSORS])
    request = TableRequest(data=str(data_file), start_ms=START_MS, end_ms=END_MS, sensors=sensors)
    directory = str(tmp / "tables")
    manifest, was_built = ensure_tables(directory, request)
    assert was_built and manifest["feature_rows"] > 0
    return directory, request, data_file


def _oracle(data_file: Path, sensors: tuple[str, ...]):
    data = load_metrla(data_file).between(START_MS, END_MS).only(list(sensors))
    ctx = fit_context(data)
    parts = [examples(data, ctx, split) for split in ("train", "val")]
    return data, ctx, parts


def test_tables_equal_the_in_process_oracle(built) -> None:
    directory, request, data_file = built
    (x, y, meta), ctx = read_training_tables(f"{directory}/features")
    _, want_ctx, parts = _oracle(data_file, request.sensors)
    assert ctx is not None and ctx.sensor_ids == want_ctx.sensor_ids == request.sensors
    assert np.array_equal(ctx.profile, want_ctx.profile, equal_nan=True)
    ex = np.concatenate([p[0] for p in parts])
    ey = np.concatenate([p[1] for p in parts])
    assert len(parts[0][0]) > 0 and len(parts[1][0]) > 0  # the slice has training and validation windows
    assert x.shape == ex.shape
    assert np.array_equal(meta.step_ms, np.concatenate([p[2].step_ms for p in parts]))
    assert np.array_equal(meta.sensor_index, np.concatenate([p[2].sensor_index for p in parts]))
    assert np.max(np.abs(x.astype(np.float64) - ex.astype(np.float64))) <= 1e-9
    assert np.array_equal(np.isnan(y), np.isnan(ey))
    assert np.nanmax(np.abs(y - ey)) <= 1e-9


def test_the_manifest_counts_one_row_per_window_and_sensor(built) -> None:
    directory, request, data_file = built
    _, _, parts = _oracle(data_file, request.sensors)
    manifest = read_manifest(directory)
    assert manifest["rows"] == {"train": len(parts[0][0]), "val": len(parts[1][0]), "test": 0}
    assert manifest["feature_rows"] == sum(manifest["rows"].values())


def test_a_build_that_loses_rows_gets_no_manifest(built, tmp_path, monkeypatch) -> None:
    """The row check of build_tables: a run whose tables miss rows is refused (here one row fewer is reported)."""
    import pipelines.batch_cli

    _, request, _ = built
    real = pipelines.batch_cli.execute

    def losing(args):  # noqa: ANN001, ANN202 - the real run, with one feature row fewer in its counters
        run = real(args)
        return replace(run, counts={**run.counts, "feature_rows": run.counts["feature_rows"] - 1})

    monkeypatch.setattr(pipelines.batch_cli, "execute", losing)
    with pytest.raises(DataError, match="expected .* feature rows|feature rows, expected"):
        ensure_tables(str(tmp_path / "tables"), request)
    assert read_manifest(str(tmp_path / "tables")) is None
    assert stale_reason(str(tmp_path / "tables"), request) == "no tables (or no manifest) yet"


def test_training_on_the_tables_gives_the_in_process_model(built) -> None:
    directory, request, data_file = built
    features, ctx = read_training_tables(f"{directory}/features")
    data, _, parts = _oracle(data_file, request.sensors)
    candidates = ("last_value", "ridge", "hist_gradient_boosting")
    from_tables, table_rows = train(None, features, ctx, quick=True, candidates=candidates, progress=lambda _: None)
    in_process, oracle_rows = train(data, quick=True, candidates=candidates, progress=lambda _: None)
    assert [(r["horizon_min"], r["model"], r.get("selected")) for r in table_rows] == [
        (r["horizon_min"], r["model"], r.get("selected")) for r in oracle_rows]
    for got, want in zip(table_rows, oracle_rows, strict=True):
        assert abs(got["val_mae"] - want["val_mae"]) <= 1e-9
    x_val = parts[1][0]
    for h in (15, 30, 60):
        for a, b in zip(from_tables.predict(x_val)[h], in_process.predict(x_val)[h], strict=True):
            assert np.max(np.abs(a - b)) <= 1e-9


def test_up_to_date_tables_are_not_rebuilt(built) -> None:
    directory, request, _ = built
    before = read_manifest(directory)
    assert stale_reason(directory, request) is None
    manifest, was_built = ensure_tables(directory, request)
    assert not was_built and manifest == before


def test_another_range_sensor_list_or_feature_code_is_stale(built, tmp_path) -> None:
    directory, request, _ = built
    assert stale_reason(directory, replace(request, end_ms=END_MS + DAY_MS)) == "the time range changed"
    assert stale_reason(directory, replace(request, start_ms=START_MS - DAY_MS)) == "the time range changed"
    assert stale_reason(directory, replace(request, sensors=request.sensors[:2])) == "the sensor list changed"
    assert stale_reason(directory, replace(request, data=None)) == "the input data changed"
    copy = tmp_path / "tables"
    shutil.copytree(directory, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["key"]["feature_code"] = "an-older-version"
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert stale_reason(str(copy), request) == "the feature code changed"
    shutil.rmtree(copy / "features" / "val")
    (copy / MANIFEST_FILE).write_text(json.dumps({**manifest, "key": read_manifest(directory)["key"]}))
    assert stale_reason(str(copy), request) == "the val table has no Parquet file"
    (copy / MANIFEST_FILE).unlink()
    assert stale_reason(str(copy), request) == "no tables (or no manifest) yet"


def test_changed_data_file_rebuilds_the_tables(built) -> None:
    """Last in this module: it rewrites the fixture's data file (same bytes, a new modification time)."""
    directory, request, data_file = built
    before = read_manifest(directory)
    stat = data_file.stat()
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert stale_reason(directory, request) == "the input data changed"
    manifest, was_built = ensure_tables(directory, request)
    assert was_built and manifest["key"]["input"] != before["key"]["input"]
    assert manifest["feature_rows"] == before["feature_rows"]
    assert stale_reason(directory, request) is None
