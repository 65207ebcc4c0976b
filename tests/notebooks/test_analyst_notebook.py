"""The analyst's notebook (``notebooks/analyst.ipynb``) runs end to end on a small slice, so it cannot rot.

nbclient executes it in a kernel of this interpreter (the project's .venv) with its parameters cell edited to
8 sensors and one day; any cell that raises fails the test. A cell appended to the test's copy saves the
DataFrames the notebook collected with Interactive Beam, and the test checks them against oracles computed here:
the aggregates against the readings, the feature table against ``ml.training_set.examples`` (which calls
``ml.features.build_features``) with a feature context fitted here on the same earlier days, and the forecasts
against the registered model's own ``predict``. The plot cell must have drawn an image.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from config.settings import REPO_ROOT
from ml.dataset import load_metrla
from ml.features import FEATURE_NAMES, HISTORY_STEPS, HORIZONS_MIN, fit_context
from ml.registry import ModelRegistry
from ml.residual_ridge import fit_residual_ridge
from ml.training_set import TARGET_COLUMNS, examples

pytestmark = pytest.mark.slow

NOTEBOOK = REPO_ROOT / "notebooks" / "analyst.ipynb"
DAY = "2012-03-08"  # a day with gaps (67 missing steps per sensor): the parity covers missing readings too
DAY_MS = 86_400_000
FIT_DAYS = 7
CELL_TIMEOUT_S = 600  # generous: the machine is shared; the test has no timing threshold

_DUMP = """
import json, shutil, sys
from pathlib import Path
_out = Path({out!r})
shutil.copytree(registry_root, _out / "registry")  # the notebook's scratch registry goes with its kernel
aggregates.to_parquet(_out / "aggregates.parquet")
features.to_parquet(_out / "features.parquet")
predictions.to_parquet(_out / "predictions.parquet")
(_out / "run.json").write_text(json.dumps({{
    "executable": sys.executable, "sensor_ids": list(sensor_ids), "registry_root": registry_root,
    "model_version": bundle.version, "dead_letters": len(dead_letters),
}}))
"""


def _day_start_ms() -> int:
    return int(pd.Timestamp(DAY, tz="UTC").value // 1_000_000)


def run_notebook(params: dict[str, object], out: Path) -> tuple[nbformat.NotebookNode, dict]:
    """Execute the notebook with ``params`` appended to its parameters cell; returns it and what it saved."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    for name in params:  # a renamed parameter must fail here, not silently run on the default
        assert f"\n{name} = " in "\n" + tagged[0].source, f"the parameters cell has no {name}"
    tagged[0].source += "\n# injected by the test\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.append(nbformat.v4.new_code_cell(_DUMP.format(out=str(out))))
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(REPO_ROOT)}})
    client.execute()  # raises CellExecutionError (with the cell's traceback) if any cell errors
    return nb, json.loads((out / "run.json").read_text())


def _outputs_of(nb: nbformat.NotebookNode, marker: str) -> list:
    cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"expected one cell containing {marker!r}"
    return cells[0].outputs


@pytest.fixture(scope="module")
def readings():
    return load_metrla()


@pytest.fixture(scope="module")
def quick_run(readings, tmp_path_factory):
    """The notebook on 8 sensors and DAY, with an empty registry: it fits the quick model itself."""
    sensors = list(readings.sensor_ids[40:48])
    out = tmp_path_factory.mktemp("notebook-run")
    empty_registry = tmp_path_factory.mktemp("empty-registry")
    nb, run = run_notebook({"SENSORS": sensors, "DAY": DAY, "FIT_DAYS": FIT_DAYS,
                            "REGISTRY": str(empty_registry), "PLOT_HORIZON_MIN": 30}, out)
    return nb, run, out, sensors


def test_the_kernel_is_this_interpreter(quick_run) -> None:
    import sys

    _nb, run, _out, _sensors = quick_run
    assert run["executable"] == sys.executable


def test_aggregates_are_every_sensor_and_step_of_the_day(quick_run, readings) -> None:
    _nb, run, out, sensors = quick_run
    assert run["sensor_ids"] == sensors and run["dead_letters"] == 0
    day = readings.only(sensors).between(_day_start_ms(), _day_start_ms() + DAY_MS)
    assert day.n_steps == 288
    agg = pd.read_parquet(out / "aggregates.parquet")
    agg["start_ms"] = pd.DatetimeIndex(agg["window_start"]).as_unit("ms").asi8
    assert len(agg) == 8 * 288
    assert set(zip(agg["sensor_id"], agg["start_ms"], strict=True)) == {
        (s, int(t)) for s in sensors for t in day.times_ms}
    wide = agg.pivot(index="start_ms", columns="sensor_id", values="mean_speed_mph").loc[day.times_ms, sensors]
    want = np.where(day.speed > 0, day.speed, np.nan)
    assert np.isnan(want).any()  # the day has gaps, so missing readings are part of the check
    np.testing.assert_allclose(wide.to_numpy(dtype=np.float64), want, atol=1e-9, equal_nan=True)
    assert (agg["count"] == 1).all()
    missing = agg.pivot(index="start_ms", columns="sensor_id", values="missing_count").loc[day.times_ms, sensors]
    np.testing.assert_array_equal(missing.to_numpy(), (day.speed == 0).astype(int))


def test_feature_table_equals_build_features(quick_run, readings) -> None:
    _nb, _run, out, sensors = quick_run
    start = _day_start_ms()
    sliced = readings.only(sensors)
    ctx = fit_context(sliced.between(start - FIT_DAYS * DAY_MS, start))  # what the quick model learned from
    x, y, meta = examples(sliced.between(start, start + DAY_MS), ctx, "all")
    assert len(x) == (288 - HISTORY_STEPS - 12 + 1) * 8
    want = pd.DataFrame(x.astype(np.float64), columns=list(FEATURE_NAMES))
    want[list(TARGET_COLUMNS)] = y
    want["sensor_id"], want["step_ms"] = meta.sensor_id.astype(str), meta.step_ms
    want = want.set_index(["step_ms", "sensor_id"]).sort_index()

    got = pd.read_parquet(out / "features.parquet").set_index(["step_ms", "sensor_id"]).sort_index()
    assert got.index.equals(want.index)
    assert (got["split"] == "train").all()
    for columns in (list(FEATURE_NAMES), list(TARGET_COLUMNS)):
        np.testing.assert_allclose(got[columns].to_numpy(np.float64), want[columns].to_numpy(np.float64),
                                   atol=1e-6, rtol=0, equal_nan=True)
    assert want[list(TARGET_COLUMNS)].isna().to_numpy().any()


def test_forecasts_are_the_registered_models(quick_run, readings) -> None:
    _nb, run, out, sensors = quick_run
    bundle = ModelRegistry(str(out / "registry")).load()
    assert bundle.version == run["model_version"] and tuple(bundle.context.sensor_ids) == tuple(sensors)
    pred = pd.read_parquet(out / "predictions.parquet")
    assert len(pred) == (288 - HISTORY_STEPS + 1) * 8 * len(HORIZONS_MIN)
    assert (pred["model_version"] == bundle.version).all()
    assert set(pred["horizon_min"]) == set(HORIZONS_MIN)
    assert (pred["target_time"] == pred["event_time"] + pred["horizon_min"] * 60_000).all()
    point_mph = pred["predicted_speed_mph"]
    assert ((pred["lower_mph"] <= point_mph) & (point_mph <= pred["upper_mph"])).all()

    start = _day_start_ms()
    x, _y, meta = examples(readings.only(sensors).between(start, start + DAY_MS), bundle.context, "all")
    point = bundle.predict(x)
    for h in HORIZONS_MIN:
        ours = pred[pred["horizon_min"] == h].set_index(["event_time", "sensor_id"])
        got = ours.loc[list(zip(meta.step_ms.tolist(), meta.sensor_id.astype(str).tolist(), strict=True)),
                       "predicted_speed_mph"]
        np.testing.assert_allclose(got.to_numpy(), point[h][0], atol=1e-6)


def test_the_plot_cell_draws_an_image(quick_run) -> None:
    nb, _run, _out, _sensors = quick_run
    outputs = _outputs_of(nb, "plt.show()")
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "forecasts with an actual" in text


def test_a_registered_model_sets_the_slice(readings, tmp_path) -> None:
    """With a model in the registry the notebook forecasts with it, on its sensors (SENSORS is not used)."""
    start = _day_start_ms()
    model_sensors = readings.sensor_ids[100:104]
    bundle = fit_residual_ridge(readings.only(model_sensors).between(start - 3 * DAY_MS, start), stride=4)
    registry = tmp_path / "registry"
    version = ModelRegistry(str(registry)).register(bundle)
    out = tmp_path / "out"
    out.mkdir()
    _nb, run = run_notebook({"SENSORS": list(readings.sensor_ids[:2]), "DAY": DAY, "REGISTRY": str(registry)}, out)
    assert run["model_version"] == version and run["registry_root"] == str(registry)
    assert run["sensor_ids"] == list(model_sensors)
    assert set(pd.read_parquet(out / "aggregates.parquet")["sensor_id"]) == set(model_sensors)
    assert set(pd.read_parquet(out / "predictions.parquet")["model_version"]) == {version}


def test_the_committed_notebook_is_valid_and_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_the_notebook_runs_on_an_imported_network(tmp_path) -> None:
    """A network that is not METR-LA as shipped: 6 sensors renamed, imported from the long CSV layout with a graph
    built from their locations. The notebook reads it, and its features use that graph."""
    from cli.main import main
    from ml.network import load_network

    data = load_metrla()
    ids = list(data.sensor_ids[20:26])
    start = _day_start_ms()
    part = data.only(ids).between(start - 3 * DAY_MS, start + DAY_MS)
    readings_csv, sensors_csv = tmp_path / "readings.csv", tmp_path / "sensors.csv"
    pd.DataFrame({"sensor_id": np.tile([f"n{s}" for s in ids], part.n_steps),
                  "time": np.repeat(part.times_ms, len(ids)), "speed": part.speed.ravel()}).to_csv(readings_csv,
                                                                                                   index=False)
    located = pd.read_csv(load_network().root / "sensors.csv", dtype={"sensor_id": str})
    located = located[located.sensor_id.isin(ids)].assign(sensor_id=lambda f: "n" + f.sensor_id)
    located.to_csv(sensors_csv, index=False)
    assert main(["network", "import", "--name", "six", "--readings", str(readings_csv), "--locations",
                 str(sensors_csv), "--output", str(tmp_path / "six")]) == 0
    network = load_network(tmp_path / "six")
    empty_registry = tmp_path / "registry"
    empty_registry.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    _nb, run = run_notebook({"NETWORK": str(tmp_path / "six"), "SENSORS": "all", "DAY": DAY, "FIT_DAYS": 3,
                             "REGISTRY": str(empty_registry)}, out)
    assert run["sensor_ids"] == list(network.sensor_ids) and run["dead_letters"] == 0
    assert set(pd.read_parquet(out / "aggregates.parquet")["sensor_id"]) == set(network.sensor_ids)
    bundle = ModelRegistry(str(out / "registry")).load()
    np.testing.assert_allclose(bundle.context.degree_out, network.adjacency().sum(1) - 1, rtol=1e-12)  # its graph
    got = pd.read_parquet(out / "features.parquet")
    assert set(got["split"]) == set(network.split.of(got["step_ms"].to_numpy()))


def test_a_day_without_earlier_days_to_fit_on_is_a_one_line_error(tmp_path) -> None:
    empty_registry = tmp_path / "registry"
    empty_registry.mkdir()
    with pytest.raises(CellExecutionError, match="choose a later DAY"):
        run_notebook({"SENSORS": ["773869"], "DAY": "2012-03-01", "REGISTRY": str(empty_registry)}, tmp_path)
