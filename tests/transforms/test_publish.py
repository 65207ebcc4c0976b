"""WriteWindowedParquetFiles: one Parquet file per output, window and pane, written atomically and idempotently."""

from __future__ import annotations

import math

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from schemas.batches import Columns
from schemas.exceptions import SchemaError
from transforms.exceptions import SinkWriteError, TransformConfigError
from transforms.publish import WriteWindowedParquetFiles, file_window, retrying, window_file_name

SCHEMA = pa.schema([("sensor_id", pa.string()), ("speed_mph", pa.float64())])
T0_MS = 1_338_508_800_000  # 2012-06-01T00:00:00Z


def _write(records: list[tuple[int, dict]], directory: str) -> None:
    with test_pipeline.TestPipeline() as p:
        windowed = (
            p
            | beam.Create(records)
            | beam.Map(lambda tr: TimestampedValue(tr[1], tr[0] / 1000))
            | beam.WindowInto(FixedWindows(300))
        )
        _ = {"records": windowed} | WriteWindowedParquetFiles({"records": (directory, SCHEMA)})


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


def test_a_file_name_gives_back_its_window_and_pane():
    name = window_file_name("scores-part", T0_MS + 3_600_000, T0_MS + 7_200_000, 3)
    assert file_window(name) == (T0_MS + 3_600_000, T0_MS + 7_200_000, 3)
    assert file_window(f"/some/dir/{name}") == (T0_MS + 3_600_000, T0_MS + 7_200_000, 3)
    assert file_window("part-20120601T010203Z.parquet") is None and file_window(name + ".tmp") is None


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_write_is_retried_with_backoff_until_it_succeeds() -> None:
    clock, calls = _Clock(), []

    def flaky() -> str:
        calls.append(clock.now)
        if len(calls) < 4:
            raise ConnectionError("Connection refused")
        return "written"

    assert retrying(flaky, "writing x", 60, clock.sleep, lambda: clock.now) == "written"
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_a_write_that_keeps_failing_ends_in_one_clear_line() -> None:
    clock = _Clock()

    def down() -> None:
        raise ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=10370):\n Max retries exceeded")

    with pytest.raises(SinkWriteError) as raised:
        retrying(down, "writing hdfs://out/a.parquet", 60, clock.sleep, lambda: clock.now)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("writing hdfs://out/a.parquet failed 8 time(s) over 60 s")
    assert "ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=10370): Max retries exceeded" in message
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]  # then 60 + 15 s would pass the 60 s


@pytest.mark.parametrize("name", ["traffic_event", "window_aggregate", "prediction", "score"])
def test_a_batch_becomes_the_arrow_table_its_records_make(name: str) -> None:
    """Column by column, as the records would (nulls where a nullable float is NaN); NaN kept elsewhere."""
    from pipelines.tables import parquet_schema
    from tests.schemas.test_avro_columns import _batch
    from transforms.publish import arrow_table

    _, batch = _batch(name, 5)
    schema = parquet_schema(name)

    def rows(table: pa.Table) -> list[tuple]:
        return [tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in r.values())
                for r in table.to_pylist()]

    columnar = arrow_table(batch, schema)
    assert columnar.schema == schema
    assert rows(columnar) == rows(pa.Table.from_pylist(batch.records(), schema=schema))
    partial = Columns(batch.kind, {k: v for k, v in batch.data.items() if k != "sensor_id"}, batch.nullable)
    assert arrow_table(partial, schema)["sensor_id"].null_count == len(batch)  # through the records, as before


def _aggregates(sensors: list[str], start_ms: int, timing: str = "EARLY") -> Columns:
    import numpy as np

    from transforms.aggregate import aggregate_columns, window_stats
    stats = window_stats(np.array(sensors), np.linspace(20.0, 60.0, len(sensors)))
    return aggregate_columns(stats, start_ms, start_ms + 300_000, timing)


def _run_encode(elements: list[tuple[object, int]]) -> list:
    """The encode step as a runner drives it: one bundle, each element with its timestamp and window."""
    from apache_beam.transforms.window import IntervalWindow
    from apache_beam.utils.timestamp import Timestamp

    from transforms.publish import _Encode
    fn = _Encode("window_aggregate", "sensor_id")
    fn.setup()
    fn.start_bundle()
    out = []
    for element, at_ms in elements:
        window = IntervalWindow(Timestamp(micros=at_ms * 1000), Timestamp(micros=(at_ms + 300_000) * 1000))
        out += [(v, Timestamp(micros=at_ms * 1000), window) for v in fn.process(
            element, timestamp=Timestamp(micros=at_ms * 1000), window=window)]
    out += [(wv.value, wv.timestamp, wv.windows[0]) for wv in fn.finish_bundle()]
    return out


def test_a_bundles_batches_are_encoded_together_and_handed_on_one_list_per_element() -> None:
    from schemas.codec import AvroCodec
    codec = AvroCodec("window_aggregate")
    batches = [_aggregates(["1", "22", "333"], T0_MS), _aggregates(["4444"], T0_MS + 300_000, "ON_TIME"),
               _aggregates(["55555", "6"], T0_MS + 600_000)]
    out = _run_encode([(b, T0_MS + i * 300_000) for i, b in enumerate(batches)])
    assert [len(pairs) for pairs, _, _ in out] == [3, 1, 2]
    for i, ((pairs, timestamp, window), batch) in enumerate(zip(out, batches, strict=True)):
        assert timestamp.micros == (T0_MS + i * 300_000) * 1000 and window.start == timestamp
        assert pairs == [(r["sensor_id"].encode(), codec.encode(r)) for r in batch.records()]


def test_a_batch_the_columns_cannot_encode_goes_record_by_record_without_holding_up_the_others() -> None:
    import numpy as np
    good = _aggregates(["1", "22"], T0_MS)
    bad = _aggregates(["7"], T0_MS + 300_000)
    bad = Columns(bad.kind, {**bad.data, "pane_timing": np.array(["SOMETIME"], object)}, bad.nullable)
    with pytest.raises(SchemaError, match="SOMETIME"):  # the codec names the bad value, record by record
        _run_encode([(good, T0_MS), (bad, T0_MS + 300_000)])
    assert len(_run_encode([(good, T0_MS), (_aggregates(["8"], T0_MS + 300_000), T0_MS + 300_000)])) == 2


OTHER = pa.schema([("sensor_id", pa.string()), ("count", pa.int64())])


def test_outputs_written_together_each_get_their_own_file_per_window(tmp_path):
    """Two outputs share one grouping: each window's file of each output holds exactly that output's records."""
    speeds = [(T0_MS + 1_000, {"sensor_id": "a", "speed_mph": 60.0}),
              (T0_MS + 301_000, {"sensor_id": "b", "speed_mph": 50.0})]
    counts = [(T0_MS + 2_000, {"sensor_id": "a", "count": 3}), (T0_MS + 3_000, {"sensor_id": "c", "count": 1})]

    def windowed(p, label, records):
        return (p | f"Create{label}" >> beam.Create(records)
                | f"Stamp{label}" >> beam.Map(lambda tr: TimestampedValue(tr[1], tr[0] / 1000))
                | f"Window{label}" >> beam.WindowInto(FixedWindows(300)))

    with test_pipeline.TestPipeline() as p:
        _ = {"speeds": windowed(p, "Speeds", speeds), "counts": windowed(p, "Counts", counts)} | \
            WriteWindowedParquetFiles({"speeds": (str(tmp_path / "speeds"), SCHEMA),
                                       "counts": (str(tmp_path / "counts"), OTHER)})
    first, second = (window_file_name("part", T0_MS + k * 300_000, T0_MS + (k + 1) * 300_000, 0) for k in (0, 1))
    assert sorted(f.name for f in (tmp_path / "speeds").iterdir()) == [first, second]
    assert [f.name for f in (tmp_path / "counts").iterdir()] == [first]
    assert pq.read_table(tmp_path / "speeds" / first).to_pylist() == [speeds[0][1]]
    assert pq.read_table(tmp_path / "speeds" / second).to_pylist() == [speeds[1][1]]
    assert sorted(pq.read_table(tmp_path / "counts" / first).to_pylist(), key=str) == [c for _, c in counts]


def test_outputs_without_a_directory_are_refused():
    with pytest.raises(TransformConfigError, match="directories for"):
        with test_pipeline.TestPipeline() as p:
            _ = {"speeds": p | beam.Create([])} | WriteWindowedParquetFiles({"counts": ("/tmp/x", OTHER)})
