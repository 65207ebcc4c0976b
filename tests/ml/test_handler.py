"""The RunInference handler: features from the bundle's own context, one bundle.predict per batch,
PostProcess input batches (and dicts), explicit batching, and the hot swap that follows the registry's LATEST
pointer."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that

from ml.dataset import STEP_MS, load_metrla
from ml.exceptions import ModelRegistryError
from ml.features import HORIZONS_MIN, build_features, history_from_speeds
from ml.handler import (
    FORECAST_FIELDS,
    HandlerConfig,
    LiveModel,
    forecast_batch,
    make_model_handler,
    prediction_inputs,
)
from ml.registry import ModelBundle, ModelRegistry
from ml.residual_ridge import fit_residual_ridge
from transforms.forecast import Forecast

N_SENSORS = 6
DAY_STEPS = 288


def fit_bundle(days: tuple[int, int], alpha: float) -> ModelBundle:
    """A real (small) model: ridge on the change from the last reading, per horizon, on the first sensors."""
    data = load_metrla()
    data = data.only(data.sensor_ids[:N_SENSORS])
    t0 = int(data.times_ms[0])
    data = data.between(t0 + days[0] * DAY_STEPS * STEP_MS, t0 + days[1] * DAY_STEPS * STEP_MS)
    return fit_residual_ridge(data, alpha=alpha, stride=2)


@pytest.fixture(scope="module")
def bundles() -> tuple[ModelBundle, ModelBundle]:
    return fit_bundle((0, 2), alpha=1.0), fit_bundle((2, 4), alpha=100.0)


def snapshots(ctx, first_t: int = 400, count: int = 5) -> list[dict]:
    data = load_metrla().only(ctx.sensor_ids)
    out = []
    for t in range(first_t, first_t + count):
        speeds = history_from_speeds(data.speed[t - 11 : t + 1])
        out.append({"step_ms": int(data.times_ms[t]), "speeds": speeds})
    if count > 1:
        out[1]["speeds"][-1, 2] = np.nan  # a sensor with no current reading
    return out


def expected_rows(snapshot: dict, bundle: ModelBundle, pred: dict | None = None, first_row: int = 0) -> list[tuple]:
    """The snapshot's rows from ``bundle.predict``: on its own features, or rows ``first_row``... of ``pred``."""
    if pred is None:
        pred = bundle.predict(build_features(snapshot["speeds"], snapshot["step_ms"], bundle.context))
    rows = []
    for i, sensor in enumerate(bundle.context.sensor_ids):
        for h in HORIZONS_MIN:
            rows.append((sensor, snapshot["step_ms"], h, *(float(a[first_row + i]) for a in pred[h])))
    return rows


def as_tuples(rows: list[dict]) -> list[tuple]:
    keys = ("sensor_id", "event_time", "horizon_min", "predicted_speed_mph", "lower_mph", "upper_mph")
    return [tuple(r[k] for k in keys) for r in rows]


def test_run_inference_equals_bundle_predict_on_build_features(bundles, tmp_path) -> None:
    first, _ = bundles
    version = ModelRegistry(tmp_path).register(first)
    handler = make_model_handler(HandlerConfig(str(tmp_path)))
    model = handler.load_model()
    snaps = snapshots(first.context)
    results = list(handler.run_inference(snaps, model))
    assert len(results) == len(snaps)
    # One predict call for the whole batch: exactly the bundle's predictions of the snapshots' rows together.
    together = first.predict(np.concatenate([build_features(s["speeds"], s["step_ms"], first.context) for s in snaps]))
    for i, (snap, result) in enumerate(zip(snaps, results, strict=True)):
        assert result.model_id == version and result.example is snap
        assert result.inference.kind == "forecast" and result.inference.nullable == {"current_speed_mph"}
        rows = result.inference.records()
        assert as_tuples(rows) == expected_rows(snap, first, together, i * first.context.n_sensors)
        assert as_tuples(rows) == expected_rows(snap, first)  # and to the last bit as if predicted alone
        assert {r["model_version"] for r in rows} == {version}
        assert {r["coverage"] for r in rows} == {0.9}
    current = {(r["sensor_id"], r["horizon_min"]): r["current_speed_mph"] for r in results[1].inference.records()}
    sensor = first.context.sensor_ids[2]
    assert current[(sensor, 15)] is None
    assert current[(first.context.sensor_ids[0], 15)] == snaps[1]["speeds"][-1, 0]


def test_a_batch_of_snapshots_is_one_model_call(bundles, tmp_path, monkeypatch) -> None:
    """A catch-up's steps share one predict (about a quarter of a step's model cost each, docs/benchmarks.md)."""
    first, _ = bundles
    ModelRegistry(tmp_path).register(first)
    handler = make_model_handler(HandlerConfig(str(tmp_path)))
    model = handler.load_model()
    calls = []
    predict = ModelBundle.predict
    monkeypatch.setattr(ModelBundle, "predict", lambda self, x: calls.append(len(x)) or predict(self, x))
    assert len(list(handler.run_inference(snapshots(first.context, count=5), model))) == 5
    assert calls == [5 * first.context.n_sensors]
    assert list(handler.run_inference([], model)) == [] and len(calls) == 1


def test_the_row_by_row_inputs_are_the_batch_rows(bundles) -> None:
    first, _ = bundles
    snap = snapshots(first.context)[1]
    snap["speeds"][-1, 3] = 0.0  # a zero reading is no current speed either
    predictions = first.predict(build_features(snap["speeds"], snap["step_ms"], first.context))
    rows = prediction_inputs(snap, predictions, first)
    batch = forecast_batch(snap, predictions, first)
    assert tuple(batch.data) == FORECAST_FIELDS and rows == batch.records()
    unknown = {r["sensor_id"] for r in rows if r["current_speed_mph"] is None}
    assert unknown == {first.context.sensor_ids[2], first.context.sensor_ids[3]}


def test_batching_is_explicit() -> None:
    handler = make_model_handler(HandlerConfig("unused", min_batch_size=2, max_batch_size=8, max_batch_duration_s=1))
    assert handler.batch_elements_kwargs() == {"min_batch_size": 2, "max_batch_size": 8, "max_batch_duration_secs": 1}


def test_a_snapshot_of_another_network_is_refused(bundles, tmp_path) -> None:
    ModelRegistry(tmp_path).register(bundles[0])
    handler = make_model_handler(HandlerConfig(str(tmp_path)))
    bad = {"step_ms": 0, "speeds": np.zeros((12, N_SENSORS + 1))}
    with pytest.raises(ModelRegistryError, match="expects"):
        list(handler.run_inference([bad], handler.load_model()))


def test_empty_registry_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(ModelRegistryError, match="no model"):
        make_model_handler(HandlerConfig(str(tmp_path))).load_model()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_live_model_swaps_model_and_context_when_latest_moves(bundles, tmp_path) -> None:
    first, second = bundles
    registry = ModelRegistry(tmp_path)
    v1 = registry.register(first)
    clock = Clock()
    live = LiveModel(str(tmp_path), refresh_s=30.0, clock=clock)
    assert live.version == v1
    v2 = registry.register(second)
    clock.now = 29.0
    assert live.current().version == v1  # not re-checked before refresh_s
    clock.now = 31.0
    swapped = live.current()
    assert swapped.version == v2
    snap = snapshots(second.context, count=1)[0]
    x_new = build_features(snap["speeds"], snap["step_ms"], swapped.context)
    assert np.array_equal(x_new, build_features(snap["speeds"], snap["step_ms"], second.context))
    assert not np.array_equal(swapped.context.profile, first.context.profile)  # the context came with the model


def test_pinned_version_ignores_latest_and_a_broken_pointer_keeps_the_model(bundles, tmp_path) -> None:
    first, second = bundles
    registry = ModelRegistry(tmp_path)
    v1 = registry.register(first)
    v2 = registry.register(second)
    clock = Clock()
    pinned = LiveModel(str(tmp_path), version=v1, refresh_s=0.0, clock=clock)
    clock.now = 100.0
    assert pinned.current().version == v1
    following = LiveModel(str(tmp_path), refresh_s=0.0, clock=clock)
    assert following.version == v2
    (tmp_path / "LATEST").write_text("no-such-version\n")
    clock.now = 200.0
    assert following.current().version == v2  # a bad pointer never stops the pipeline: the loaded model stays


class _RegisterAt(beam.DoFn):
    """Test driver: registers ``bundle`` (moving LATEST) when the snapshot of ``step_ms`` passes by."""

    def __init__(self, root: str, bundle: ModelBundle, step_ms: int) -> None:
        self.root, self.bundle, self.step_ms = root, bundle, step_ms

    def process(self, snapshot: dict):
        if snapshot["step_ms"] == self.step_ms:
            ModelRegistry(self.root).register(self.bundle)
        yield snapshot


def test_a_running_pipeline_picks_up_a_newly_registered_model(bundles, tmp_path) -> None:
    """Through RunInference itself: the model is loaded once; a new LATEST mid-run is served from then on."""
    first, second = bundles
    root = str(tmp_path)
    v1 = ModelRegistry(root).register(first)
    snaps = snapshots(first.context, count=8)
    swap_at = snaps[4]["step_ms"]
    by_version = {v1: first}

    def check(rows: list[dict]) -> None:
        versions = {}
        for row in rows:
            versions.setdefault(row["event_time"], set()).add(row["model_version"])
        assert all(len(v) == 1 for v in versions.values())
        order = [next(iter(versions[s["step_ms"]])) for s in snaps]
        # Served by the first model until the swap, by the new one from then on (never back).
        assert order[0] == v1 and order[-1] != v1 and len(set(order)) == 2
        switch = order.index(order[-1])
        assert switch <= 4 and set(order[switch:]) == {order[-1]}
        by_version[order[-1]] = ModelRegistry(root).load(order[-1])
        for snap in snaps:
            mine = sorted(as_tuples([r for r in rows if r["event_time"] == snap["step_ms"]]))
            assert mine == sorted(expected_rows(snap, by_version[next(iter(versions[snap["step_ms"]]))]))

    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        rows = (
            p
            | beam.Create(snaps, reshuffle=False)
            | "RegisterSecondModel" >> beam.ParDo(_RegisterAt(root, second, swap_at))
            | Forecast(root, refresh_s=0.0, max_batch_size=1)
            | "Records" >> beam.FlatMap(lambda batch: batch.records())
        )
        assert_that(rows, check)


class _AppendVersion(beam.DoFn):
    """Test sink: appends (step, model version) of each forecast in a batch to a local file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, batch):
        with open(self.path, "a") as handle:
            for row in batch.records():
                handle.write(f"{row['event_time']} {row['model_version']}\n")


@pytest.mark.integration
def test_hot_swap_in_an_unbounded_streaming_pipeline_on_prism(bundles, tmp_path) -> None:
    """A streaming job on Prism (PeriodicImpulse source) serves the new LATEST from the step it was registered at."""
    import time

    from apache_beam.transforms.periodicsequence import PeriodicImpulse

    from runners.presets import pipeline_options

    first, second = bundles
    root, out = str(tmp_path / "registry"), tmp_path / "versions.txt"
    v1 = ModelRegistry(root).register(first)
    snaps = snapshots(first.context, count=12)
    out.write_text("")
    start, interval_s = time.time(), 0.5
    p = beam.Pipeline(options=pipeline_options("prism", True, []))
    _ = (
        p
        | PeriodicImpulse(start_timestamp=start, stop_timestamp=start + len(snaps) * interval_s,
                          fire_interval=interval_s)
        | beam.Map(lambda ts: snaps[min(round((float(ts) - start) / interval_s), len(snaps) - 1)])
        | "RegisterSecondModel" >> beam.ParDo(_RegisterAt(root, second, snaps[5]["step_ms"]))
        | Forecast(root, refresh_s=0.0, max_batch_size=1)
        | beam.ParDo(_AppendVersion(str(out)))
    )
    p.run().wait_until_finish()
    versions: dict[int, set[str]] = {}
    for line in out.read_text().splitlines():
        step, version = line.split()
        versions.setdefault(int(step), set()).add(version)
    order = [versions[s["step_ms"]] for s in snaps]
    assert all(len(v) == 1 for v in order)
    order = [next(iter(v)) for v in order]
    # The first model until the swap (registered as step 5 passes), the new one from then on, never back.
    assert order[0] == v1 and order[-1] != v1 and len(set(order)) == 2
    switch = order.index(order[-1])
    assert switch <= 5 and set(order[switch:]) == {order[-1]}
    assert ModelRegistry(root).latest_version() == order[-1]


@pytest.mark.parametrize("threads", [1, None])
def test_inference_runs_with_the_configured_number_of_openmp_threads(bundles, tmp_path, monkeypatch, threads) -> None:
    from threadpoolctl import threadpool_info

    def openmp_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"}

    ModelRegistry(tmp_path).register(bundles[0])
    handler = make_model_handler(HandlerConfig(str(tmp_path), threads=threads))
    seen: list[set[int]] = []
    predict_each = handler._predict_each
    monkeypatch.setattr(handler, "_predict_each", lambda *a: seen.append(openmp_threads()) or predict_each(*a))
    default = openmp_threads()
    assert default, "scikit-learn's OpenMP runtime is loaded"
    assert len(list(handler.run_inference(snapshots(bundles[0].context, count=2), handler.load_model()))) == 2
    assert seen == [{1}] if threads == 1 else seen == [default]
    assert openmp_threads() == default  # the limit ends with the call


def test_the_thread_cap_reaches_an_openmp_runtime_loaded_after_its_first_use() -> None:
    """A worker may cap a call before the model that loads OpenMP arrives (a hot swap to trees): a fresh process
    caps once with no OpenMP loaded, imports scikit-learn's trees, and the next cap must reach them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    script = (
        "from threadpoolctl import threadpool_info\n"
        "from ml.handler import inference_threads\n"
        "def openmp(): return {p['num_threads'] for p in threadpool_info() if p['user_api'] == 'openmp'}\n"
        "with inference_threads(1): assert not openmp(), 'OpenMP loaded too early for this test'\n"
        "import sklearn.ensemble  # noqa: F401\n"
        "assert openmp() and openmp() != {1}, openmp()\n"
        "with inference_threads(1): print(sorted(openmp()))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": root}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1]"
