"""``traffic network import`` (ml/network_import.py, ml/network_cli.py): real METR-LA readings of a few sensors,
written in the documented layouts; every bad file is a one-line error."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli.main import main
from ml.dataset import STEP_MS, load_metrla
from ml.network import load_network

SENSORS = 6
START = "2012-04-02"
DAYS = 3


@pytest.fixture(scope="module")
def slice_data():
    data = load_metrla()
    start = int(np.datetime64(START, "ms").astype(np.int64))
    return data.only(list(data.sensor_ids[:SENSORS])).between(start, start + DAYS * 86_400_000)


def _long(data) -> pd.DataFrame:
    frame = pd.DataFrame({
        "sensor_id": np.tile(np.asarray(data.sensor_ids), data.n_steps),
        "time": pd.to_datetime(np.repeat(data.times_ms, len(data.sensor_ids)), unit="ms").strftime("%Y-%m-%d %H:%M"),
        "speed": data.speed.ravel(),
    })
    return frame[frame.speed > 0]  # missing readings are simply absent


@pytest.fixture
def files(tmp_path, slice_data) -> dict[str, Path]:
    readings = tmp_path / "readings.csv"
    _long(slice_data).to_csv(readings, index=False)
    bundled = pd.read_csv(Path(load_network().root) / "sensors.csv", dtype={"sensor_id": str})
    locations = tmp_path / "sensors.csv"
    bundled[bundled.sensor_id.isin(slice_data.sensor_ids)].to_csv(locations, index=False)
    return {"readings": readings, "locations": locations, "dir": tmp_path}


def _import(files: dict[str, Path], *extra: str, readings: Path | str | None = None,
            locations: Path | str | None = None) -> int:
    return main(["network", "import", "--name", "six", "--readings", str(readings or files["readings"]),
                 "--locations", str(locations or files["locations"]), "--output", str(files["dir"] / "net"),
                 *extra])


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_long_csv_imports_to_the_same_readings_and_a_graph_from_locations(files, slice_data, capsys) -> None:
    assert _import(files, "--split", "0.5,0.25,0.25") == 0
    assert "network six: 6 sensors" in capsys.readouterr().out
    network = load_network(files["dir"] / "net")
    assert network.name == "six" and network.step_ms == STEP_MS and network.title == "six traffic forecast"
    data = network.readings()
    order = [slice_data.sensor_ids.index(s) for s in data.sensor_ids]
    np.testing.assert_array_equal(data.times_ms, slice_data.times_ms)
    np.testing.assert_array_equal(data.speed, slice_data.speed[:, order])  # absent rows came back as 0 = missing
    assert data.split == network.split
    np.testing.assert_array_equal(network.locations(), load_network().locations(data.sensor_ids))
    labels = network.split.of(data.times_ms[11:-12])
    assert list(np.unique(labels)) == ["test", "train", "val"]
    shares = [float(np.mean(labels == s)) for s in ("train", "val", "test")]
    assert shares == pytest.approx([0.5, 0.25, 0.25], abs=0.01)
    adjacency = network.adjacency()
    np.testing.assert_array_equal(adjacency, adjacency.T)
    assert "built from locations" in network.graph_how and network.road_links()


def test_parquet_and_epoch_times_and_dates_as_the_split(files, slice_data) -> None:
    frame = _long(slice_data)
    frame["time"] = pd.to_datetime(frame["time"]).astype("int64") // 1_000_000  # epoch ms
    path = files["dir"] / "readings.parquet"
    frame.to_parquet(path)
    assert _import(files, "--split", "2012-04-03,2012-04-04", readings=path) == 0
    network = load_network(files["dir"] / "net")
    assert network.split.train_end_ms == int(np.datetime64("2012-04-03", "ms").astype(np.int64))
    np.testing.assert_array_equal(network.readings().times_ms, slice_data.times_ms)


def test_a_given_edge_list_and_a_dcrnn_pickle_are_used(files, slice_data) -> None:
    ids = slice_data.sensor_ids
    edges = files["dir"] / "edges.csv"
    pd.DataFrame({"from": ids[:-1], "to": ids[1:], "weight": 0.5}).to_csv(edges, index=False)
    assert _import(files, "--graph", str(edges)) == 0
    network = load_network(files["dir"] / "net")
    i, j = network.sensor_ids.index(ids[0]), network.sensor_ids.index(ids[1])
    assert network.adjacency()[i, j] == 0.5 and network.adjacency()[j, i] == 0.0
    matrix = np.eye(len(ids) + 1)
    matrix[0, 1] = 0.7
    pkl = files["dir"] / "adj_mx.pkl"
    pkl.write_bytes(pickle.dumps([[*ids, "extra"], {}, matrix]))
    assert _import(files, "--graph", str(pkl), "--force") == 0
    assert load_network(files["dir"] / "net").adjacency()[i, j] == 0.7


def test_an_existing_network_is_kept_without_force(files, capsys) -> None:
    assert _import(files) == 0
    assert "exists; give --force to replace it" in _one_line_error(capsys, _import(files))


def _write(files, name: str, text: str) -> Path:
    path = files["dir"] / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("readings", "message"), [
    ("sensor_id,time,speed\n773869,2012-04-02 00:00,60\n773869,2012-04-02 00:05,61\nnope,2012-04-02 00:00,60\n",
     "1 sensors have no location"),
    ("sensor_id,time,speed\n773869,2012-04-02 00:00,60\n773869,2012-04-02 00:00,61\n773869,2012-04-02 00:05,6\n",
     "1 duplicate (sensor, time) rows, first: sensor 773869 at 2012-04-02T00:00"),
    ("sensor_id,time,speed\n773869,2012-04-02 00:00,60\n773869,2012-04-02 00:05,61\n773869,2012-04-02 00:10,6\n"
     "773869,2012-04-02 00:12,6\n", "irregular steps: 2012-04-02T00:12:00.000 is 2 min after the previous time"),
    ("sensor_id,time,speed\n773869,2012-04-02 00:00,60\n773869,2012-04-02 00:10,61\n773869,2012-04-02 00:20,6\n",
     "a step of 10 min does not divide the horizons"),
    ("sensor_id,time,speed\n773869,2012-04-02 00:00,fast\n773869,2012-04-02 00:05,61\n",
     "row 2 has a speed that is not a number: 'fast'"),
    ("sensor_id,speed\n773869,60\n", "lacks the column(s) time"),
    ("sensor_id,time,speed\n773869,yesterday,60\n", "not an ISO date-time"),
])
def test_bad_readings_are_one_line_errors(files, capsys, readings, message) -> None:
    path = _write(files, "bad.csv", readings)
    assert message in _one_line_error(capsys, _import(files, readings=path))


@pytest.mark.parametrize(("locations", "message"), [
    ("sensor_id,latitude,longitude\n773869,,-118.3\n", "missing or invalid locations for 1 sensors: 773869"),
    ("sensor_id,latitude,longitude\n773869,134.1,-118.3\n", "missing or invalid locations"),
    ("sensor_id,latitude,longitude\n773869,34.1,-118.3\n773869,34.2,-118.3\n", "sensor 773869 is listed 2 times"),
    ("sensor_id,lat,lon\n773869,34.1,-118.3\n", "lacks the column(s) latitude, longitude"),
])
def test_bad_locations_are_one_line_errors(files, capsys, locations, message) -> None:
    path = _write(files, "bad-sensors.csv", locations)
    assert message in _one_line_error(capsys, _import(files, locations=path))


def test_a_graph_without_some_sensor_and_other_bad_inputs_are_one_line_errors(files, slice_data, capsys) -> None:
    npz = files["dir"] / "adjacency.npz"
    np.savez(npz, adjacency=np.eye(2), sensor_ids=np.array(slice_data.sensor_ids[:2]))
    assert "the graph has no row for 4 sensors" in _one_line_error(capsys, _import(files, "--graph", str(npz)))
    assert "give three fractions" in _one_line_error(capsys, _import(files, "--split", "0.7,0.3"))
    assert "add up to 1" in _one_line_error(capsys, _import(files, "--split", "0.7,0.2,0.2"))
    assert "does not exist" in _one_line_error(capsys, _import(files, readings=files["dir"] / "none.csv"))
    code = main(["network", "import", "--name", "Bad Name", "--readings", "r.csv", "--locations", "l.csv"])
    assert "use lower-case letters" in _one_line_error(capsys, code)
    assert "too few for a training" in _one_line_error(capsys, _import(files, "--split", "0,0.5,0.5"))


@pytest.mark.integration
@pytest.mark.hdfs
def test_a_network_imports_from_hdfs(files, slice_data, hdfs_service, monkeypatch) -> None:
    """The readings and locations on the real HDFS (`traffic network import` reads hdfs:// like local files)."""
    import uuid

    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setattr(FileSystems, "_pipeline_options", FileSystems._pipeline_options)  # restored afterwards
    FileSystems.set_options(PipelineOptions.from_dictionary({
        "hdfs_host": hdfs_service["host"], "hdfs_port": hdfs_service["http_port"], "hdfs_user": hdfs_service["user"]}))
    folder = f"hdfs://tests/network-{uuid.uuid4().hex[:8]}"
    for name in ("readings.csv", "sensors.csv"):
        with FileSystems.create(f"{folder}/{name}") as handle:
            handle.write((files["dir"] / name).read_bytes())
    try:
        assert _import(files, readings=f"{folder}/readings.csv", locations=f"{folder}/sensors.csv") == 0
        data = load_network(files["dir"] / "net").readings()
        order = [slice_data.sensor_ids.index(s) for s in data.sensor_ids]
        np.testing.assert_array_equal(data.speed, slice_data.speed[:, order])
    finally:
        FileSystems.delete([folder])
