"""WriteWindowedParquet: one Parquet file per window and pane, written atomically and idempotently."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing import test_pipeline
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from transforms.publish import WriteWindowedParquet, window_file_name

SCHEMA = pa.schema([("sensor_id", pa.string()), ("speed_mph", pa.float64())])
T0_MS = 1_338_508_800_000  # 2012-06-01T00:00:00Z


def _write(records: list[tuple[int, dict]], directory: str) -> None:
    with test_pipeline.TestPipeline() as p:
        _ = (
            p
            | beam.Create(records)
            | beam.Map(lambda tr: TimestampedValue(tr[1], tr[0] / 1000))
            | beam.WindowInto(FixedWindows(300))
            | WriteWindowedParquet(directory, SCHEMA)
        )


def test_one_file_per_window_holds_exactly_its_records(tmp_path):
    records = [(T0_MS + 10_000, {"sensor_id": "a", "speed_mph": 60.0}),
               (T0_MS + 20_000, {"sensor_id": "b", "speed_mph": 55.5}),
               (T0_MS + 310_000, {"sensor_id": "a", "speed_mph": 30.0})]
    out = tmp_path / "predictions"
    _write(records, str(out))
    names = sorted(f.name for f in out.iterdir())
    assert names == ["part-20120601T000000Z-20120601T000500Z-pane0.parquet",
                     "part-20120601T000500Z-20120601T001000Z-pane0.parquet"]
    first = pq.read_table(out / names[0]).to_pylist()
    assert sorted(r["sensor_id"] for r in first) == ["a", "b"] and {r["speed_mph"] for r in first} == {60.0, 55.5}
    assert pq.read_table(out / names[1]).to_pylist() == [{"sensor_id": "a", "speed_mph": 30.0}]


def test_writing_a_window_again_replaces_its_file_and_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "aggregates"
    _write([(T0_MS, {"sensor_id": "a", "speed_mph": 1.0})], str(out))
    _write([(T0_MS, {"sensor_id": "a", "speed_mph": 2.0})], str(out))  # a retried bundle of the same window
    files = list(out.iterdir())
    assert [f.name for f in files] == [window_file_name("part", T0_MS, T0_MS + 300_000, 0)]
    assert pq.read_table(files[0]).to_pylist() == [{"sensor_id": "a", "speed_mph": 2.0}]


def test_file_names_have_no_colon_for_hdfs():
    name = window_file_name("part", T0_MS + 3_723_000, T0_MS + 4_023_000, 2)
    assert name == "part-20120601T010203Z-20120601T010703Z-pane2.parquet" and ":" not in name
