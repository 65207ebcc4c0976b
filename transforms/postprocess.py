"""PostProcess: model outputs -> Prediction records and Alert records.

Input: a ``forecast`` :class:`~schemas.batches.Columns` batch per step (what
:class:`~transforms.forecast.Forecast` emits), turned into one ``prediction``
batch with numpy, or single dicts (one record at a time) with the fields
``sensor_id, event_time, horizon_min, predicted_speed_mph,
lower_mph, upper_mph, coverage, model_version, current_speed_mph`` (the last
one float or None). Predictions and intervals are clamped to
``[0, max_speed_mph]`` with ``lower <= predicted <= upper``; each prediction
gets ``target_time = event_time + horizon``, a processing time and a
congestion category (:data:`CONGESTION_THRESHOLDS_MPH`). Alert rules
(:data:`ALERT_RULES`) turn some predictions into alerts with a deterministic
``alert_id``. A record that cannot be turned into a prediction (missing field,
non-finite speed) goes to ``dead_letter``; nothing is dropped.

The pure functions here (:func:`congestion_category`, :func:`clamp_interval`,
:func:`alert_rules`, :func:`alert_id`) are reused by the API.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from schemas.batches import Columns
from transforms.exceptions import TransformConfigError
from transforms.validate import DEAD_LETTER_TAG, make_dead_letter, system_now_ms

__all__ = [
    "ALERTS_TAG",
    "ALERT_RULES",
    "CONGESTION_THRESHOLDS_MPH",
    "PREDICTIONS_TAG",
    "SUDDEN_DROP_MPH",
    "PostProcess",
    "alert_id",
    "alert_rules",
    "clamp_interval",
    "congestion_categories",
    "congestion_category",
    "to_alerts",
    "to_prediction",
]

PREDICTIONS_TAG = "predictions"
PREDICTION_KIND = "prediction"
ALERTS_TAG = "alerts"
STEP = "PostProcess"

# Congestion categories by speed (mph), checked top-down: a speed >= the bound
# gets the category. Below the last bound (and at 0) it is SEVERE; None or NaN
# is UNKNOWN. These are the thresholds the dashboard colours use too.
CONGESTION_THRESHOLDS_MPH: tuple[tuple[float, str], ...] = (
    (50.0, "FREE_FLOW"),
    (35.0, "MODERATE"),
    (20.0, "HEAVY"),
)
SEVERE = "SEVERE"
UNKNOWN = "UNKNOWN"
SUDDEN_DROP_MPH = 20.0

ALERT_RULES: dict[str, tuple[str, str]] = {
    "severe_congestion": (
        "CRITICAL",
        "SEVERE congestion (< 20 mph) is predicted while the current speed is known and not SEVERE",
    ),
    "sudden_drop": (
        "WARNING",
        "the predicted speed is at least drop_alert_mph (default 20 mph) below the current speed",
    ),
}


def congestion_category(speed_mph: float | None) -> str:
    """FREE_FLOW (>= 50 mph), MODERATE (35-50), HEAVY (20-35), SEVERE (< 20), UNKNOWN (None/NaN)."""
    if speed_mph is None:
        return UNKNOWN
    try:
        speed = float(speed_mph)
    except (TypeError, ValueError):
        return UNKNOWN
    if math.isnan(speed):
        return UNKNOWN
    for bound, category in CONGESTION_THRESHOLDS_MPH:
        if speed >= bound:
            return category
    return SEVERE


def _clamp(value: float, high: float) -> float:
    return min(max(value, 0.0), high)


def clamp_interval(
    predicted_mph: float, lower_mph: float | None, upper_mph: float | None, max_speed_mph: float
) -> tuple[float, float, float]:
    """(predicted, lower, upper) clamped to [0, max_speed_mph] with lower <= predicted <= upper.

    A missing or NaN bound collapses onto the prediction.
    """
    predicted = _clamp(float(predicted_mph), max_speed_mph)
    lower = predicted if lower_mph is None or math.isnan(lower_mph) else _clamp(float(lower_mph), max_speed_mph)
    upper = predicted if upper_mph is None or math.isnan(upper_mph) else _clamp(float(upper_mph), max_speed_mph)
    return predicted, min(lower, predicted), max(upper, predicted)


def alert_id(sensor_id: str, event_time_ms: int, horizon_min: int, rule: str) -> str:
    """Deterministic id, so a replayed prediction yields the same alert id."""
    return f"{sensor_id}:{event_time_ms}:{horizon_min}:{rule}"


def alert_rules(predicted_mph: float, current_mph: float | None, drop_alert_mph: float = SUDDEN_DROP_MPH) -> list[str]:
    """The names of the rules in :data:`ALERT_RULES` that fire for this prediction."""
    fired = []
    current_known = current_mph is not None and math.isfinite(current_mph)
    if congestion_category(predicted_mph) == SEVERE and current_known and congestion_category(current_mph) != SEVERE:
        fired.append("severe_congestion")
    if current_known and current_mph - predicted_mph >= drop_alert_mph:
        fired.append("sudden_drop")
    return fired


def to_prediction(
    record: dict[str, Any], max_speed_mph: float, default_coverage: float, processing_time_ms: int
) -> dict[str, Any]:
    """A Prediction record (schemas/avro/prediction.avsc); raises ValueError/KeyError/TypeError on bad input."""
    predicted = record["predicted_speed_mph"]
    if predicted is None or not math.isfinite(float(predicted)):
        raise ValueError(f"predicted_speed_mph is {predicted}")
    horizon_min = int(record["horizon_min"])
    event_time = int(record["event_time"])
    coverage = record.get("coverage")
    coverage = default_coverage if coverage is None or not math.isfinite(float(coverage)) else float(coverage)
    predicted_mph, lower, upper = clamp_interval(
        float(predicted),
        _float_or_none(record.get("lower_mph")),
        _float_or_none(record.get("upper_mph")),
        max_speed_mph,
    )
    return {
        "sensor_id": str(record["sensor_id"]),
        "event_time": event_time,
        "target_time": event_time + horizon_min * 60_000,
        "horizon_min": horizon_min,
        "predicted_speed_mph": predicted_mph,
        "lower_mph": lower,
        "upper_mph": upper,
        "coverage": coverage,
        "congestion": congestion_category(predicted_mph),
        "model_version": str(record["model_version"]),
        "processing_time": processing_time_ms,
    }


def to_alerts(prediction: dict[str, Any], current_mph: float | None, drop_alert_mph: float) -> list[dict[str, Any]]:
    """Alert records (schemas/avro/alert.avsc) for the rules that fire on ``prediction``."""
    predicted = prediction["predicted_speed_mph"]
    alerts = []
    for rule in alert_rules(predicted, current_mph, drop_alert_mph):
        severity, _ = ALERT_RULES[rule]
        if rule == "severe_congestion":
            message = f"severe congestion predicted in {prediction['horizon_min']} min: {predicted:.1f} mph"
        else:
            horizon = prediction["horizon_min"]
            message = f"speed predicted to drop from {current_mph:.1f} to {predicted:.1f} mph in {horizon} min"
        alerts.append(
            {
                "alert_id": alert_id(
                    prediction["sensor_id"], prediction["event_time"], prediction["horizon_min"], rule
                ),
                "sensor_id": prediction["sensor_id"],
                "event_time": prediction["event_time"],
                "target_time": prediction["target_time"],
                "horizon_min": prediction["horizon_min"],
                "rule": rule,
                "severity": severity,
                "message": f"sensor {prediction['sensor_id']}: {message}",
                "predicted_speed_mph": predicted,
                "current_speed_mph": current_mph,
                "model_version": prediction["model_version"],
                "processing_time": prediction["processing_time"],
            }
        )
    return alerts


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class _PostProcessFn(beam.DoFn):
    def __init__(
        self, max_speed_mph: float, coverage: float, drop_alert_mph: float, now_ms_fn: Callable[[], int] | None
    ) -> None:
        self.max_speed_mph = max_speed_mph
        self.coverage = coverage
        self.drop_alert_mph = drop_alert_mph
        self.now_ms_fn = now_ms_fn
        self.predictions = Metrics.counter(STEP, "predictions")
        self.alerts = Metrics.counter(STEP, "alerts")
        self.rejected = Metrics.counter(STEP, "dead_letter_invalid_prediction")

    def process(self, record: Any) -> Iterator[Any]:
        now = int(self.now_ms_fn()) if self.now_ms_fn is not None else system_now_ms()
        if isinstance(record, Columns):
            yield from self._batch(record, now)
            return
        try:
            if not isinstance(record, dict):
                raise TypeError(f"expected a dict, got {type(record).__name__}")
            prediction = to_prediction(record, self.max_speed_mph, self.coverage, now)
            current = _float_or_none(record.get("current_speed_mph"))
            current = current if current is not None and math.isfinite(current) else None
            alerts = to_alerts(prediction, current, self.drop_alert_mph)
        except Exception as exc:  # noqa: BLE001 - a bad model output becomes a dead letter, never a crash
            self.rejected.inc()
            sensor = record.get("sensor_id") if isinstance(record, dict) else None
            yield TaggedOutput(
                DEAD_LETTER_TAG,
                make_dead_letter(
                    json.dumps(record, default=repr, sort_keys=True).encode("utf-8"),
                    reason="invalid_prediction",
                    error=f"{type(exc).__name__}: {exc}",
                    step=STEP,
                    failed_at=now,
                    key=None if sensor is None else str(sensor).encode("utf-8"),
                ),
            )
            return
        self.predictions.inc()
        yield prediction
        for alert in alerts:
            self.alerts.inc()
            yield TaggedOutput(ALERTS_TAG, alert)


    def _batch(self, batch: Columns, now: int) -> Iterator[Any]:
        """A forecast batch at once: the same rules as one record, with numpy."""
        predicted = batch["predicted_speed_mph"].astype(np.float64)
        usable = np.isfinite(predicted)
        if not usable.all():
            for record in batch.take(~usable).records():
                yield from self.process(record)  # the per-record path makes the dead letter
            batch, predicted = batch.take(usable), predicted[usable]
        if not len(batch):
            return
        high = self.max_speed_mph
        predicted = np.clip(predicted, 0.0, high)
        lower = batch["lower_mph"].astype(np.float64)
        upper = batch["upper_mph"].astype(np.float64)
        lower = np.minimum(np.where(np.isnan(lower), predicted, np.clip(lower, 0.0, high)), predicted)
        upper = np.maximum(np.where(np.isnan(upper), predicted, np.clip(upper, 0.0, high)), predicted)
        coverage = batch["coverage"].astype(np.float64)
        coverage = np.where(np.isfinite(coverage), coverage, self.coverage)
        event_time = batch["event_time"].astype(np.int64)
        horizon = batch["horizon_min"].astype(np.int64)
        predictions = Columns(PREDICTION_KIND, {
            "sensor_id": batch["sensor_id"].astype(str),
            "event_time": event_time,
            "target_time": event_time + horizon * 60_000,
            "horizon_min": horizon,
            "predicted_speed_mph": predicted,
            "lower_mph": lower,
            "upper_mph": upper,
            "coverage": coverage,
            "congestion": congestion_categories(predicted),
            "model_version": batch["model_version"].astype(str),
            "processing_time": np.full(len(batch), now, dtype=np.int64),
        })
        self.predictions.inc(len(predictions))
        yield predictions
        current = batch["current_speed_mph"].astype(np.float64)
        known = np.isfinite(current)
        severe = known & (predictions["congestion"] == SEVERE) & (congestion_categories(current) != SEVERE)
        with np.errstate(invalid="ignore"):
            drop = known & (current - predicted >= self.drop_alert_mph)
        for i in np.flatnonzero(severe | drop).tolist():
            prediction = predictions.take([i]).records()[0]
            for alert in to_alerts(prediction, float(current[i]), self.drop_alert_mph):
                self.alerts.inc()
                yield TaggedOutput(ALERTS_TAG, alert)


def congestion_categories(speeds: np.ndarray) -> np.ndarray:
    """:func:`congestion_category` of every speed (NaN -> UNKNOWN)."""
    speeds = np.asarray(speeds, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        conditions = [np.isnan(speeds)] + [speeds >= bound for bound, _ in CONGESTION_THRESHOLDS_MPH]
    return np.select(conditions, [UNKNOWN] + [c for _, c in CONGESTION_THRESHOLDS_MPH], SEVERE)


class PostProcess(beam.PTransform):
    """Model outputs -> ``predictions`` (Prediction dicts), ``alerts`` (Alert dicts) and ``dead_letter``.

    ``coverage`` is used when a record carries none. ``drop_alert_mph`` is the
    sudden-drop threshold. ``now_ms_fn`` supplies the processing time (wall
    clock by default).
    """

    def __init__(
        self,
        max_speed_mph: float = 85.0,
        coverage: float = 0.9,
        drop_alert_mph: float = SUDDEN_DROP_MPH,
        now_ms_fn: Callable[[], int] | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        if not max_speed_mph > 0 or not 0 < coverage < 1 or not drop_alert_mph > 0:
            raise TransformConfigError("max_speed_mph and drop_alert_mph must be > 0 and coverage in (0, 1)")
        self._fn = _PostProcessFn(float(max_speed_mph), float(coverage), float(drop_alert_mph), now_ms_fn)

    def expand(self, records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return records | "ClampAndAlert" >> beam.ParDo(self._fn).with_outputs(
            ALERTS_TAG, DEAD_LETTER_TAG, main=PREDICTIONS_TAG
        )
