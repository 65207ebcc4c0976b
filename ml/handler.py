"""The RunInference model handler: network snapshots in, per sensor x horizon forecasts out.

One input element is one ``NetworkHistory`` snapshot, ``{"step_ms": t,
"speeds": (HISTORY_STEPS, N) float, NaN = missing}`` with the sensors in the
model's order. For a batch of snapshots the handler computes
``build_features(speeds, step_ms, bundle.context)`` for each (the feature
context, i.e. the training-period profiles and graph weights, belongs to the
model bundle, so a model swap swaps both together), calls ``bundle.predict``
once on all their rows and emits one ``PredictionResult`` per snapshot whose
``inference`` is a ``forecast`` batch, PostProcess's input (one row per
sensor and horizon, :func:`forecast_batch`) and whose ``model_id`` is the
model version. A step's forecast does not depend on how the runner batched
it, to the last bit: trees and perceptrons predict a row the same whatever
rows share the call, and linear models predict row by row
(``ml.rowwise_ridge``; a ridge registered before it sums with BLAS and may
differ by about 1e-14 mph).

Hot model swap. The loaded "model" is a :class:`LiveModel`: unless a version
is pinned it re-reads the registry's LATEST pointer at most every
``refresh_s`` seconds (one small file read) and loads the new bundle when the
pointer moved, under a lock, while the pipeline keeps running. This works the
same on every runner, batch and streaming (DirectRunner, Prism, Flink) and
needs no extra source. RunInference's model-update side input
(``model_metadata_pcoll``) is also honoured: a ``ModelMetadata.model_id``
naming a version (or a version directory) pins that version through
:meth:`ForecastModelHandler.update_model_path`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from threadpoolctl import ThreadpoolController

from ml.exceptions import ModelRegistryError
from ml.features import HISTORY_STEPS, build_features
from ml.registry import MODEL_REFRESH_S, ModelBundle, ModelRegistry
from schemas.batches import Columns

__all__ = ["FORECAST_FIELDS", "FORECAST_KIND", "INFERENCE_THREADS", "ForecastModelHandler", "HandlerConfig",
           "LiveModel", "forecast_batch", "inference_threads", "make_model_handler", "per_snapshot",
           "prediction_inputs"]

INFERENCE_THREADS = 1  # the OpenMP/BLAS threads of an inference call by default (HandlerConfig.threads says why)

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class HandlerConfig:
    """How the handler finds its model and batches its input.

    ``version`` pins a model version; None follows the registry's LATEST pointer,
    re-checked at most every ``refresh_s`` seconds. Batching is explicit: at
    least ``min_batch_size`` and at most ``max_batch_size`` snapshots per
    inference call; ``max_batch_duration_s`` bounds how long a streaming batch
    may wait (None: Beam's bundle-based batching, right for batch runs).
    ``threads`` caps the OpenMP/BLAS threads of an inference call (None: the
    libraries' default, one per core). One is the default: the worker shares
    its cores with the runner's JVMs and the broker, and the gradient-boosting
    trees' second OpenMP thread made a busy step wait for a core (6 h streaming
    runs: p50 0.54-0.57 s with one thread, 0.59-0.66 s with two).
    """

    registry_root: str
    version: str | None = None
    refresh_s: float = MODEL_REFRESH_S
    min_batch_size: int = 1
    max_batch_size: int = 16
    max_batch_duration_s: int | None = None
    threads: int | None = INFERENCE_THREADS
    hdfs_options: tuple[tuple[str, Any], ...] = field(default=())


class LiveModel:
    """The current model bundle of a registry, following LATEST unless pinned. Thread-safe."""

    def __init__(
        self,
        registry_root: str,
        version: str | None = None,
        refresh_s: float = MODEL_REFRESH_S,
        hdfs_options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = ModelRegistry(registry_root, hdfs_options=hdfs_options)
        self.pinned = version
        self.refresh_s = float(refresh_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._swaps = Metrics.counter("traffic.forecast", "model_swaps")
        self._bundle = self._load(version or self._latest())
        self._checked_at = self._clock()

    def _latest(self) -> str:
        version = self.registry.latest_version()
        if version is None:
            raise ModelRegistryError(f"the model registry {self.registry.root} has no model (run `traffic train`)")
        return str(version)

    def _load(self, version: str) -> ModelBundle:
        bundle = self.registry.load(version)
        _LOG.info("forecast model %s loaded from %s", bundle.version, self.registry.root)
        return bundle

    @property
    def version(self) -> str:
        return str(self._bundle.version)

    def pin(self, version: str | None) -> None:
        """Serve ``version`` from now on (None: follow LATEST again)."""
        with self._lock:
            self.pinned = version
            if version is not None and version != self.version:
                self._bundle = self._load(version)
                self._swaps.inc()
            self._checked_at = float("-inf") if version is None else self._clock()

    def current(self) -> ModelBundle:
        """The bundle to use now; re-reads LATEST when ``refresh_s`` has passed since the last check."""
        if self.pinned is not None or self._clock() - self._checked_at < self.refresh_s:
            return self._bundle
        with self._lock:
            if self.pinned is None and self._clock() - self._checked_at >= self.refresh_s:
                self._checked_at = self._clock()
                try:
                    latest = self._latest()
                    if latest != self.version:
                        previous = self.version
                        self._bundle = self._load(latest)
                        self._swaps.inc()
                        _LOG.info("forecast model swapped: %s -> %s", previous, latest)
                except Exception as exc:  # noqa: BLE001 - keep serving the loaded model on a registry glitch
                    _LOG.warning("model registry check failed, keeping %s: %s", self.version, exc)
            return self._bundle


FORECAST_KIND = "forecast"
FORECAST_FIELDS = ("sensor_id", "event_time", "horizon_min", "predicted_speed_mph", "lower_mph", "upper_mph",
                   "coverage", "model_version", "current_speed_mph")


_POOLS: tuple[int, ThreadpoolController] | None = None  # (modules imported when read, this process's thread pools)


def _threadpools() -> ThreadpoolController:
    """This process's thread pools, read again when modules were imported since: loading a model imports the
    libraries whose OpenMP runtime the cap must reach (reading them took about 2 ms, a cap 0.02 ms; ad hoc)."""
    global _POOLS
    if _POOLS is None or _POOLS[0] != len(sys.modules):
        _POOLS = (len(sys.modules), ThreadpoolController())
    return _POOLS[1]


def inference_threads(threads: int | None = INFERENCE_THREADS) -> contextlib.AbstractContextManager:
    """A context that caps the OpenMP/BLAS threads of an inference call (None: the libraries' default)."""
    return contextlib.nullcontext() if threads is None else _threadpools().limit(limits=threads)


def forecast_batch(
    snapshot: dict[str, Any], predictions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], bundle: ModelBundle
) -> Columns:
    """One snapshot's (N,) predictions as a ``forecast`` batch, sensor-major then horizon (PostProcess's input).

    ``current_speed_mph`` is the snapshot's last reading, NaN (None) where it is missing or not positive.
    """
    current = np.asarray(snapshot["speeds"], dtype=np.float64)[-1]
    sensor_ids = np.asarray(bundle.context.sensor_ids, dtype=str)
    horizons = sorted(predictions)
    n, k = len(sensor_ids), len(horizons)

    def sensor_major(part: int) -> np.ndarray:  # (N, horizons) flattened: sensor 0's horizons, sensor 1's, ...
        return np.stack([np.asarray(predictions[h][part], dtype=np.float64) for h in horizons], axis=1).ravel()

    data = {
        "sensor_id": np.repeat(sensor_ids, k),
        "event_time": np.full(n * k, int(snapshot["step_ms"]), np.int64),
        "horizon_min": np.tile(np.asarray(horizons, dtype=np.int64), n),
        "predicted_speed_mph": sensor_major(0),
        "lower_mph": sensor_major(1),
        "upper_mph": sensor_major(2),
        "coverage": np.full(n * k, float(bundle.coverage)),
        "model_version": np.full(n * k, str(bundle.version)),
        "current_speed_mph": np.repeat(np.where(np.isfinite(current) & (current > 0), current, np.nan), k),
    }
    return Columns(FORECAST_KIND, data, frozenset({"current_speed_mph"}))


def prediction_inputs(
    snapshot: dict[str, Any], predictions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], bundle: ModelBundle
) -> list[dict[str, Any]]:
    """:func:`forecast_batch` as PostProcess input dicts (``current_speed_mph`` None where unknown).

    Row by row for callers that post-process one record at a time; built from literals, which is faster than
    :meth:`Columns.records`.
    """
    data = forecast_batch(snapshot, predictions, bundle).data
    current = data["current_speed_mph"]
    lists = [data[name].tolist() for name in FORECAST_FIELDS[:-1]]  # all but current_speed_mph, in order
    return [
        {"sensor_id": sensor, "event_time": step, "horizon_min": horizon, "predicted_speed_mph": yhat,
         "lower_mph": lower, "upper_mph": upper, "coverage": coverage, "model_version": version,
         "current_speed_mph": now}
        for sensor, step, horizon, yhat, lower, upper, coverage, version, now in zip(
            *lists, np.where(np.isnan(current), None, current).tolist(), strict=True)
    ]


class ForecastModelHandler(ModelHandler[dict, PredictionResult, LiveModel]):
    """Snapshots -> ``PredictionResult(snapshot, forecast batch, model version)``."""

    def __init__(self, cfg: HandlerConfig) -> None:
        super().__init__(
            min_batch_size=cfg.min_batch_size,
            max_batch_size=cfg.max_batch_size,
            max_batch_duration_secs=cfg.max_batch_duration_s,
        )
        self.cfg = cfg
        self._side_input_version: str | None = cfg.version

    def load_model(self) -> LiveModel:
        return LiveModel(
            self.cfg.registry_root,
            version=self._side_input_version,
            refresh_s=self.cfg.refresh_s,
            hdfs_options=dict(self.cfg.hdfs_options) or None,
        )

    def update_model_path(self, model_path: str | None = None) -> None:
        """RunInference's model-update side input: ``model_path`` names a version (or its directory)."""
        if model_path:
            self._side_input_version = model_path.rstrip("/").rsplit("/", 1)[-1]

    def run_inference(
        self, batch: Sequence[dict], model: LiveModel, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        if self._side_input_version is not None and model.pinned != self._side_input_version:
            model.pin(self._side_input_version)
        with inference_threads(self.cfg.threads):
            return self._predict_each(batch, model.current())

    def _predict_each(self, batch: Sequence[dict], bundle: ModelBundle) -> list[PredictionResult]:
        """The batch's snapshots in one ``bundle.predict`` call (a catch-up's step then costs the default model less
        than a step alone: ``benchmarks/inference_step.py``, figures in docs/benchmarks.md), split back into one
        forecast batch per snapshot (see the module's docstring)."""
        n = bundle.context.n_sensors
        features = []
        for snapshot in batch:
            speeds = np.asarray(snapshot["speeds"], dtype=np.float64)
            if speeds.shape != (HISTORY_STEPS, n):
                raise ModelRegistryError(
                    f"snapshot at {snapshot['step_ms']} has shape {speeds.shape}; model {bundle.version} "
                    f"expects ({HISTORY_STEPS}, {n}) (its sensors, in its order)"
                )
            features.append(build_features(speeds, int(snapshot["step_ms"]), bundle.context))
        if not features:
            return []
        predictions = per_snapshot(bundle.predict(np.concatenate(features)), n)
        return [PredictionResult(snapshot, forecast_batch(snapshot, part, bundle), bundle.version)
                for snapshot, part in zip(batch, predictions, strict=True)]

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        return int(sum(np.asarray(s["speeds"]).nbytes for s in batch))

    def get_metrics_namespace(self) -> str:
        return "traffic.forecast"


Predictions = dict[int, tuple[np.ndarray, ...]]  # horizon -> (point, lower, upper), one row per sensor (and step)


def per_snapshot(predictions: Predictions, n_sensors: int) -> list[Predictions]:
    """One ``bundle.predict`` over several snapshots' rows (``n_sensors`` each, in order), split per snapshot."""
    count = len(next(iter(predictions.values()))[0]) // n_sensors if predictions else 0
    return [{h: tuple(part[i * n_sensors:(i + 1) * n_sensors] for part in parts) for h, parts in predictions.items()}
            for i in range(count)]


def make_model_handler(cfg: HandlerConfig) -> ForecastModelHandler:
    """The RunInference handler for ``cfg`` (explicit batching, hot swap via LATEST)."""
    return ForecastModelHandler(cfg)
