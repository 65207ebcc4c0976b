"""WriteFeatureTables: network steps -> a Parquet file per day and split, features and targets of each window end.

The snapshots are built from a real METR-LA slice (3 sensors, 2 days across
midnight); some steps are missing and one target is 0 (missing), so the
targets' NaN rule and the day blocks' edges are exercised. The expectation is
computed step by step with ``build_features`` and the snapshots' own rows.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from ml.dataset import Split, load_metrla
from ml.features import FEATURE_NAMES, HISTORY_STEPS, HORIZONS_MIN, build_features, fit_context, history_from_speeds
from ml.training_set import FEATURE_TABLE_COLUMNS, TARGET_COLUMNS
from pipelines.tables import WriteFeatureTables, clear_feature_tables, read_context

DAY_MS = 86_400_000


def _slice():
    data = load_metrla()
    data = data.only(data.sensor_ids[:3])
    t0 = int(data.times_ms[0])
    start = t0 - t0 % DAY_MS + DAY_MS + DAY_MS // 2  # noon of the first whole day: the slice crosses midnight
    return data.between(start, start + DAY_MS)


def test_feature_tables_per_day_equal_build_features_and_the_steps_means(tmp_path) -> None:
    data = _slice()
    ctx = fit_context(data)
    step = data.step_ms
    ids = tuple(str(s) for s in data.sensor_ids)
    speeds = data.speed.astype(np.float64).copy()
    speeds[40, 1] = 0.0  # a zero mean: a missing target
    gone = {30, 150}  # network steps that never arrive
    snapshots = {int(data.times_ms[t]): history_from_speeds(speeds[t - HISTORY_STEPS + 1 : t + 1])
                 for t in range(HISTORY_STEPS - 1, data.n_steps) if t not in gone}
    snapshots = {t: np.where(np.isnan(h), 0.0, h) if t == int(data.times_ms[40]) else h for t, h in snapshots.items()}
    ends = frozenset(t for t in snapshots if t + 12 * step <= int(data.times_ms[-1]))
    split_at = int(data.times_ms[200])  # val from there on: one day holds rows of both splits
    split = Split(split_at, split_at + DAY_MS)
    out = tmp_path / "out"
    elements = [{"step_ms": t, "speeds": h} for t, h in snapshots.items()]
    with test_pipeline.TestPipeline() as p:
        written = p | beam.Create(elements) | WriteFeatureTables(ctx, ends, ids, str(out), split)
        assert_that(written | beam.Map(lambda kv: kv[0]), equal_to(["train", "train", "val"]))

    written_ctx = read_context(str(out / "features"))  # beside the tables, as training reads it
    assert written_ctx is not None and written_ctx.sensor_ids == ctx.sensor_ids
    assert np.array_equal(written_ctx.profile, ctx.profile)
    names = sorted(f.name for f in (out / "features" / "train").glob("*.parquet"))
    assert len(names) == 2 and all(n.startswith("part-") and ":" not in n for n in names)  # one per day
    meta = pq.ParquetFile(out / "features" / "train" / names[0]).metadata.row_group(0)
    with_stats = {meta.column(i).path_in_schema for i in range(meta.num_columns) if meta.column(i).is_stats_set}
    assert with_stats == {"sensor_id", "step_ms", "split"}  # the keys a reader filters on, not every feature
    tables = {s: pq.read_table(out / "features" / s).to_pandas().sort_values(["step_ms", "sensor_id"])
              for s in ("train", "val")}
    assert tuple(tables["train"].columns) == FEATURE_TABLE_COLUMNS
    for name, table in tables.items():
        want_ends = sorted(t for t in ends if (t < split_at) == (name == "train"))
        assert table["step_ms"].tolist() == [t for t in want_ends for _ in ids]
        assert set(table["split"]) == {name}
        for t in want_ends:
            rows = table[table["step_ms"] == t].set_index("sensor_id").loc[list(ids)]
            x = build_features(snapshots[t], t, ctx)
            assert np.max(np.abs(rows[list(FEATURE_NAMES)].to_numpy(np.float64) - x)) <= 1e-4  # float32 columns
            for h, column in zip(HORIZONS_MIN, TARGET_COLUMNS, strict=True):
                later = snapshots.get(t + h * 60_000)
                want = np.full(len(ids), np.nan) if later is None else later[-1].copy()
                want[~(want > 0)] = np.nan
                got = rows[column].to_numpy()
                assert np.array_equal(np.isnan(got), np.isnan(want)), (t, h)
                assert np.allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=0)
    t_missing = int(data.times_ms[40]) - 15 * 60_000  # its 15-min target is the zeroed mean
    assert np.isnan(tables["train"].set_index(["step_ms", "sensor_id"]).loc[(t_missing, ids[1]), "y_15"])


def test_clear_feature_tables_removes_an_earlier_runs_files_only(tmp_path) -> None:
    for split in ("train", "val"):
        (tmp_path / "features" / split).mkdir(parents=True)
        (tmp_path / "features" / split / "part-old.parquet").write_bytes(b"x")
    (tmp_path / "features" / "context.npz").write_bytes(b"kept")
    assert clear_feature_tables(str(tmp_path)) == 2
    assert not list((tmp_path / "features").rglob("*.parquet"))
    assert (tmp_path / "features" / "context.npz").exists()
    assert clear_feature_tables(str(tmp_path / "nothing-here")) == 0
