"""The batch pipeline end to end on DirectRunner over small real slices.

- features: the Beam path (validation, de-duplication, windows, network history, build_features,
  target join) writes exactly what ml.training_set.examples computes in-process for the same slice,
  split by split, from a Parquet input that also carries bad rows (which become dead letters);
- backfill: predictions equal bundle.predict(build_features(...)) for every step with a full history.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from small_models import register_ridge_bundle

from ml.dataset import STEP_MS, TRAIN_END_MS, load_metrla
from ml.features import FEATURE_NAMES, HORIZONS_MIN, build_features, fit_context, history_from_speeds
from ml.registry import ModelBundle
from ml.training_set import FEATURE_TABLE_COLUMNS, examples, read_feature_table
from pipelines.batch_cli import run
from pipelines.sources import SourceSpec, load_readings, write_readings_parquet

DAY_MS = 24 * 3600 * 1000
SENSORS = 5


def iso(ms: int) -> str:
    return str(np.datetime64(ms, "ms"))


@pytest.fixture(scope="module")
def features_run(tmp_path_factory) -> tuple[Path, object, list[str]]:
    """Parquet of 5 sensors x 36 h across the train/validation boundary, plus 4 bad rows; run `features`."""
    tmp = tmp_path_factory.mktemp("features")
    data = load_metrla()
    data = data.only(data.sensor_ids[:SENSORS]).between(TRAIN_END_MS - DAY_MS, TRAIN_END_MS + DAY_MS // 2)
    raw = tmp / "raw.parquet"
    write_readings_parquet(data, str(raw))
    table = pq.read_table(raw)
    t0 = int(data.times_ms[0])
    bad = pa.table({
        "sensor_id": ["999999", data.sensor_ids[0], data.sensor_ids[1], None],
        "event_time": [t0, t0 + STEP_MS, t0 + 2 * STEP_MS, t0],
        "speed_mph": [55.0, -3.0, float(data.speed[2, 1]), 60.0],  # unknown, negative, exact repeat, no sensor
    })
    pq.write_table(pa.concat_tables([table, bad]), raw)
    out = tmp / "out"
    rc = run(["features", "--data", str(raw), "--output", str(out), "--start", iso(t0), "--end",
              iso(int(data.times_ms[-1]) + STEP_MS)])
    assert rc == 0
    return out, data, [str(s) for s in data.sensor_ids]


def test_feature_tables_equal_the_in_process_training_set(features_run) -> None:
    out, clean, _ = features_run
    data = load_readings(SourceSpec(str(out.parent / "raw.parquet")))  # sensors sorted; bad rows left out
    assert np.array_equal(data.speed, clean.only(data.sensor_ids).speed)
    ctx = fit_context(data)
    seen = 0
    for split in ("train", "val"):
        x, y, meta = read_feature_table(out / "features" / split, sensor_ids=data.sensor_ids)
        ex, ey, emeta = examples(data, ctx, split)
        order = np.lexsort((emeta.sensor_index, emeta.step_ms))
        assert len(x) == len(ex) > 0
        assert np.array_equal(meta.step_ms, emeta.step_ms[order])
        assert np.array_equal(meta.sensor_index, emeta.sensor_index[order])
        assert np.max(np.abs(x.astype(np.float64) - ex[order].astype(np.float64))) <= 1e-9
        assert np.array_equal(np.isnan(y), np.isnan(ey[order]))
        assert np.nanmax(np.abs(y - ey[order])) <= 1e-9
        seen += len(x)
    test_files = list((out / "features" / "test").glob("*.parquet"))
    assert sum(pq.read_table(f).num_rows for f in test_files) == 0
    assert seen == len(examples(data, ctx, "all")[0])
    assert tuple(pq.read_schema(next((out / "features" / "train").glob("*.parquet"))).names) == FEATURE_TABLE_COLUMNS


def test_bad_rows_are_dead_letters_with_reasons(features_run) -> None:
    out, _, _ = features_run
    files = (out / "dead_letters").glob("readings*.jsonl")
    letters = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(d["reason"] for d in letters) == ["duplicate", "negative_speed", "undecodable", "unknown_sensor"]
    assert all(d["payload"] for d in letters)


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[str, ModelBundle]:
    root = str(tmp_path_factory.mktemp("registry"))
    bundle = register_ridge_bundle(root, SENSORS)
    return root, bundle


def test_backfill_predictions_equal_bundle_predict(registered, tmp_path) -> None:
    root, bundle = registered
    data = load_metrla().only(bundle.context.sensor_ids)
    start = int(data.times_ms[0]) + 3 * DAY_MS + 6 * 3600 * 1000  # after the training slice
    end = start + 3 * 3600 * 1000
    out = tmp_path / "backfill"
    assert run(["backfill", "--registry", root, "--start", iso(start), "--end", iso(end), "--output", str(out)]) == 0
    table = pq.read_table(out / "predictions").to_pandas()
    lo = int(np.searchsorted(data.times_ms, start))
    steps = range(lo + 11, int(np.searchsorted(data.times_ms, end)))
    assert len(table) == len(steps) * SENSORS * len(HORIZONS_MIN)
    assert set(table["model_version"]) == {bundle.version}
    got = table.set_index(["event_time", "sensor_id", "horizon_min"]).sort_index()
    worst = 0.0
    for t in steps:
        x = build_features(history_from_speeds(data.speed[t - 11 : t + 1]), int(data.times_ms[t]), bundle.context)
        pred = bundle.predict(x)
        for h in HORIZONS_MIN:
            rows = got.loc[(int(data.times_ms[t]), list(bundle.context.sensor_ids), h)]
            for column, want in zip(("predicted_speed_mph", "lower_mph", "upper_mph"), pred[h], strict=True):
                worst = max(worst, float(np.max(np.abs(rows[column].to_numpy() - want))))
    assert worst <= 1e-9
    assert (out / "alerts").is_dir()


@pytest.mark.integration
def test_backfill_to_kafka_produces_the_parquet_predictions(registered, tmp_path, kafka_bootstrap, fresh_topic) -> None:
    """--to-kafka: every prediction also reaches the real broker, Avro in the Confluent wire format, keyed by sensor."""
    from confluent_kafka import Consumer

    from schemas.codec import AvroCodec

    root, bundle = registered
    predictions_topic, alerts_topic = fresh_topic("batch-predictions"), fresh_topic("batch-alerts")
    start = int(load_metrla().times_ms[0]) + 3 * DAY_MS
    out = tmp_path / "backfill"
    assert run(["backfill", "--registry", root, "--start", iso(start), "--end", iso(start + 2 * 3600 * 1000),
                "--output", str(out), "--to-kafka", "--bootstrap", kafka_bootstrap,
                "--predictions-topic", predictions_topic, "--alerts-topic", alerts_topic]) == 0
    table = pq.read_table(out / "predictions").to_pandas()
    codec = AvroCodec("prediction")
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"test-{predictions_topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([predictions_topic])
    received = []
    try:
        for _ in range(60):
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                assert message.error() is None
                record = codec.decode(message.value())
                assert message.key() == record["sensor_id"].encode()
                received.append(record)
            if len(received) >= len(table):
                break
    finally:
        consumer.close()
    assert len(received) == len(table) == 13 * SENSORS * len(HORIZONS_MIN)
    got = sorted((r["sensor_id"], r["event_time"], r["horizon_min"], r["predicted_speed_mph"]) for r in received)
    want = sorted(zip(table["sensor_id"], table["event_time"], table["horizon_min"], table["predicted_speed_mph"],
                      strict=True))
    assert got == want


@pytest.mark.integration
@pytest.mark.hdfs
def test_features_from_and_to_hdfs(hdfs_service, tmp_path, monkeypatch) -> None:
    """Raw-reading Parquet on hdfs:// in, feature tables on hdfs:// out, equal to the in-process training set."""
    import io
    import uuid

    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setattr(FileSystems, "_pipeline_options", FileSystems._pipeline_options)  # restored afterwards
    FileSystems.set_options(PipelineOptions.from_dictionary(
        {"hdfs_host": hdfs_service["host"], "hdfs_port": hdfs_service["http_port"], "hdfs_user": hdfs_service["user"]}))
    data = load_metrla()
    data = data.only(data.sensor_ids[:3]).between(TRAIN_END_MS - DAY_MS, TRAIN_END_MS)
    local = tmp_path / "raw.parquet"
    write_readings_parquet(data, str(local))
    root = f"hdfs://tests/batch-{uuid.uuid4().hex[:8]}"
    with FileSystems.create(f"{root}/raw/part-0.parquet") as handle:
        handle.write(local.read_bytes())
    try:
        assert run(["features", "--data", f"{root}/raw/", "--output", f"{root}/out"]) == 0
        files = [m.path for m in FileSystems.match([f"{root}/out/features/train/*.parquet"])[0].metadata_list]
        tables = []
        for name in files:
            with FileSystems.open(name) as handle:
                tables.append(pq.read_table(io.BytesIO(handle.read())))
        got = pa.concat_tables(tables).to_pandas().sort_values(["step_ms", "sensor_id"])
        parquet_data = load_readings(SourceSpec(str(local)))
        x, y, meta = examples(parquet_data, fit_context(parquet_data), "train")
        want_ids = meta.sensor_id
        order = np.lexsort((want_ids, meta.step_ms))
        assert len(got) == len(x) > 0
        assert np.array_equal(got["step_ms"].to_numpy(), meta.step_ms[order])
        assert np.max(np.abs(got[list(FEATURE_NAMES)].to_numpy(np.float64) - x[order].astype(np.float64))) <= 1e-9
    finally:
        FileSystems.delete([root])


@pytest.mark.integration
@pytest.mark.flink
@pytest.mark.timeout(900)
def test_features_on_flink_equal_direct(flink_services, features_run, tmp_path) -> None:
    """--runner flink (job server + LOOPBACK workers) writes the same feature tables as DirectRunner."""
    direct_out, _, _ = features_run
    out = tmp_path / "flink"
    raw = direct_out.parent / "raw.parquet"
    data = load_readings(SourceSpec(str(raw)))
    assert run(["features", "--data", str(raw), "--output", str(out), "--runner", "flink",
                "--start", iso(int(data.times_ms[0])), "--end", iso(int(data.times_ms[-1]) + STEP_MS),
                "--", "--parallelism=1"]) == 0
    for split in ("train", "val"):
        x_direct, y_direct, meta_direct = read_feature_table(direct_out / "features" / split)
        x_flink, y_flink, meta_flink = read_feature_table(out / "features" / split)
        assert np.array_equal(meta_direct.step_ms, meta_flink.step_ms) and len(x_flink) > 0
        assert np.array_equal(x_direct, x_flink)
        assert np.array_equal(np.isnan(y_direct), np.isnan(y_flink))
        assert np.nanmax(np.abs(y_direct - y_flink)) == 0.0
