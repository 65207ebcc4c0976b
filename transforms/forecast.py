"""``Forecast``: network snapshots -> RunInference -> one PostProcess input batch per snapshot.

Input: ``NetworkHistory`` snapshots ``{"step_ms": int, "speeds": (12, N) NaN = missing}``
with the sensors in the model's order (build ``NetworkHistory`` with
``model_sensor_ids(registry_root)``). Output: one ``forecast`` :class:`~schemas.batches.Columns`
batch per snapshot, with the columns ``sensor_id, event_time, horizon_min,
predicted_speed_mph, lower_mph, upper_mph, coverage, model_version,
current_speed_mph`` (NaN = unknown), the input of ``PostProcess``. Batch and streaming use it
alike; the model follows the registry's LATEST pointer (see :mod:`ml.handler`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.transforms.window import TimestampedValue

from ml.handler import HandlerConfig, make_model_handler
from ml.registry import MODEL_REFRESH_S
from schemas.batches import Columns

__all__ = ["MAX_BATCH_STEPS", "Forecast", "model_sensor_ids"]


def model_sensor_ids(
    registry_root: str, version: str | None = None, hdfs_options: dict[str, Any] | None = None
) -> tuple[str, ...]:
    """The sensors (in order) of the registry's model ``version`` (default LATEST): NetworkHistory's input."""
    from ml.handler import LiveModel

    return tuple(LiveModel(registry_root, version, hdfs_options=hdfs_options).current().context.sensor_ids)


class _ToBatch(beam.DoFn):
    """PredictionResult -> its ``forecast`` batch (sensor x horizon rows), stamped at its input step.

    RunInference batches in the global window and may emit a batch at the window's end
    (year 294247); re-stamping at the step's event time keeps downstream windows and the
    Kafka record timestamps in event time.
    """

    def __init__(self) -> None:
        self.snapshots = beam.metrics.Metrics.counter("traffic.forecast", "snapshots_forecast")
        self.predictions = beam.metrics.Metrics.counter("traffic.forecast", "predictions")

    def process(self, result: PredictionResult) -> Iterator[TimestampedValue]:
        self.snapshots.inc()
        batch = result.inference
        if not len(batch):
            return
        self.predictions.inc(len(batch))
        yield TimestampedValue(batch, int(result.example["step_ms"]) / 1000.0)


# The most snapshots RunInference hands the model in one call by default: a catch-up's steps cost less each in
# calls of 16 than alone, and 32 were no cheaper when measured (docs/benchmarks.md); live, a bundle holds one step.
MAX_BATCH_STEPS = 16


class Forecast(beam.PTransform):
    """Snapshots -> RunInference(sklearn bundle from the registry) -> one ``forecast`` batch per snapshot."""

    def __init__(
        self,
        registry_root: str,
        *,
        version: str | None = None,
        refresh_s: float = MODEL_REFRESH_S,
        min_batch_size: int = 1,
        max_batch_size: int = MAX_BATCH_STEPS,
        max_batch_duration_s: int | None = None,
        hdfs_options: dict[str, Any] | None = None,
        model_metadata_pcoll: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        self.cfg = HandlerConfig(
            registry_root=str(registry_root),
            version=version,
            refresh_s=refresh_s,
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            max_batch_duration_s=max_batch_duration_s,
            hdfs_options=tuple(sorted((hdfs_options or {}).items())),
        )
        self.model_metadata_pcoll = model_metadata_pcoll

    def expand(self, snapshots: beam.PCollection[dict]) -> beam.PCollection[Columns]:
        return (
            snapshots
            | "RunInference"
            >> RunInference(make_model_handler(self.cfg), model_metadata_pcoll=self.model_metadata_pcoll)
            | "ToForecastBatch" >> beam.ParDo(_ToBatch())
        )
