"""File sources: npz and h5 inputs become ``raw_reading`` batches of exactly their readings; Parquet inputs become
RawBatches of exactly the Avro RawReading values the raw topic carries."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from ml.dataset import STEP_MS, MetrLA, load_metrla
from ml.exceptions import DataError
from pipelines.sources import (
    ReadLoadedReadings,
    ReadRawReadings,
    SourceSpec,
    is_parquet,
    load_readings,
    write_readings_parquet,
)
from schemas.batches import Columns
from schemas.codec import AvroCodec

RAW = AvroCodec("raw_reading")


@pytest.fixture(scope="module")
def block():
    data = load_metrla()
    t0 = int(data.times_ms[0]) + 100 * STEP_MS
    return data.only(data.sensor_ids[3:7]).between(t0, t0 + 9 * STEP_MS)


def expected(data) -> list[tuple]:
    return [(sid, int(t), float(data.speed[i, j])) for i, t in enumerate(data.times_ms)
            for j, sid in enumerate(data.sensor_ids)]


def as_row(value: bytes) -> tuple:
    """A RawReading as (sensor, time, speed); anything else as (None, its bytes, None)."""
    try:
        r = RAW.decode(value)
    except Exception:  # noqa: BLE001 - a bad row is kept as bytes on purpose
        return (None, value, None)
    return (r["sensor_id"], r["event_time"], r["speed_mph"])


def rows_of(batch) -> list[tuple]:
    """A source's batch as (sensor, time, speed) rows: a raw_reading batch's records, a RawBatch's decoded values."""
    if isinstance(batch, Columns):
        assert batch.kind == "raw_reading"
        return [(r["sensor_id"], r["event_time"], r["speed_mph"]) for r in batch.records()]
    return [as_row(value) for value in batch.values]


def read(spec: SourceSpec, tmp_path) -> list:
    sink = tmp_path / "rows"
    with beam.Pipeline() as p:
        _ = (p | ReadRawReadings(spec) | beam.FlatMap(rows_of) | beam.Map(repr)
             | beam.io.WriteToText(str(sink), shard_name_template=""))
    return [eval(line) for line in sink.read_text().splitlines()]  # noqa: S307 - our own repr of tuples


def test_npz_slice_of_sensors_in_chunks(block, tmp_path) -> None:
    path = tmp_path / "slice.npz"
    np.savez(path, speed=block.speed, timestamps=block.times_ms.astype("datetime64[ms]"),
             sensor_ids=np.array(block.sensor_ids))
    spec = SourceSpec(str(path), int(block.times_ms[2]), int(block.times_ms[7]), block.sensor_ids[1:3], chunk_steps=2)
    want = expected(block.between(spec.start_ms, spec.end_ms).only(spec.sensor_ids))
    assert sorted(read(spec, tmp_path)) == sorted(want) and len(want) == 10


def test_h5_full_dataset_format(block, tmp_path) -> None:
    path = tmp_path / "metr-la.h5"
    frame = pd.DataFrame(block.speed, index=pd.to_datetime(block.times_ms, unit="ms"), columns=list(block.sensor_ids))
    frame.to_hdf(path, key="df")
    with beam.Pipeline() as p:
        rows = p | ReadRawReadings(SourceSpec(str(path))) | beam.FlatMap(rows_of)
        assert_that(rows, equal_to(expected(block)))


def test_parquet_with_timestamp_column_and_a_bad_row(block, tmp_path) -> None:
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "raw.parquet"
    write_readings_parquet(block, str(path))
    table = pq.read_table(path)
    stamped = table.set_column(1, "event_time", pa.array(table["event_time"].to_numpy().astype("datetime64[ms]")))
    bad = pa.table({"sensor_id": [None], "event_time": stamped["event_time"].slice(0, 1),
                    "speed_mph": [50.0]}, schema=stamped.schema)
    pq.write_table(pa.concat_tables([stamped, bad]), path)
    got = read(SourceSpec(str(tmp_path / "in")), tmp_path)  # a directory of Parquet files
    assert len(got) == len(expected(block)) + 1
    assert sorted(g for g in got if g[0] is not None) == sorted(expected(block))
    assert [g[1][:1] for g in got if g[0] is None] == [b"{"]  # the bad row, as JSON text
    assert np.array_equal(load_readings(SourceSpec(str(path))).speed, block.only(sorted(block.sensor_ids)).speed)


def test_bad_row_reaches_validation_as_undecodable_bytes(block, tmp_path) -> None:
    from transforms.validate import ValidateEvents

    path = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"sensor_id": [None, block.sensor_ids[0]], "event_time": [1, int(block.times_ms[0])],
                             "speed_mph": [50.0, 61.5]}), path)
    with beam.Pipeline() as p:
        checked = p | ReadRawReadings(SourceSpec(str(path))) | ValidateEvents(block.sensor_ids)
        assert_that(checked.dead_letter | beam.Map(lambda d: d["reason"]), equal_to(["undecodable"]), label="Dead")
        assert_that(checked.valid | beam.FlatMap(lambda b: [e["speed_mph"] for e in b.records()]), equal_to([61.5]),
                    label="Valid")


def test_format_detection_and_one_line_errors(tmp_path) -> None:
    assert is_parquet("x.parquet") and is_parquet("dir/") and is_parquet("hdfs://raw/*") and not is_parquet("x.npz")
    assert not is_parquet(None) and not is_parquet("metr-la.h5")
    with pytest.raises(DataError, match="does not exist"):
        load_readings(SourceSpec(str(tmp_path / "none.parquet")))
    with pytest.raises(DataError, match="no readings between"):
        load_readings(SourceSpec(None, start_ms=0, end_ms=1))


def test_loaded_readings_become_the_same_raw_batches_in_chunks(block, tmp_path) -> None:
    """An in-memory slice is emitted as a file of it is: every reading once, one batch per chunk of steps."""
    sink = tmp_path / "loaded"
    with beam.Pipeline() as p:
        batches = p | ReadLoadedReadings(block, chunk_steps=4)
        _ = (batches | beam.FlatMap(rows_of) | beam.Map(repr)
             | beam.io.WriteToText(str(sink), shard_name_template=""))
        sizes = batches | beam.Map(len)
        assert_that(sizes, equal_to([4 * 4, 4 * 4, 1 * 4]))  # 9 steps x 4 sensors in chunks of 4 steps
    rows = [eval(line) for line in sink.read_text().splitlines()]  # noqa: S307 - our own repr of tuples
    assert sorted(rows) == sorted(expected(block)) and len(rows) == 36


def test_loaded_readings_refuse_an_empty_slice(block) -> None:
    with pytest.raises(DataError, match="empty"):
        ReadLoadedReadings(block.between(0, 1))
    with pytest.raises(DataError, match="empty"):
        ReadLoadedReadings(MetrLA(np.zeros((3, 0)), block.times_ms[:3], ()))
    with pytest.raises(DataError, match="chunk_steps"):
        ReadLoadedReadings(block, chunk_steps=0)
