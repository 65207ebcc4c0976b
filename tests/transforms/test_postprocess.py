"""PostProcess: clamping, congestion thresholds, alert rules, schema fit, dead letters."""

from __future__ import annotations

import math

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.codec import AvroCodec
from transforms.exceptions import TransformConfigError
from transforms.postprocess import (
    ALERT_RULES,
    CONGESTION_THRESHOLDS_MPH,
    PostProcess,
    alert_id,
    alert_rules,
    clamp_interval,
    congestion_category,
    to_alerts,
    to_prediction,
)

T_MS = 1_330_560_000_000
NOW_MS = 1_795_000_000_000


def model_output(**changes) -> dict:
    record = {
        "sensor_id": "773869",
        "event_time": T_MS,
        "horizon_min": 15,
        "predicted_speed_mph": 55.0,
        "lower_mph": 50.0,
        "upper_mph": 60.0,
        "coverage": 0.9,
        "model_version": "v3",
        "current_speed_mph": 58.0,
    }
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("speed", "category"),
    [
        (85.0, "FREE_FLOW"),
        (50.0, "FREE_FLOW"),
        (49.99, "MODERATE"),
        (35.0, "MODERATE"),
        (34.9, "HEAVY"),
        (20.0, "HEAVY"),
        (19.99, "SEVERE"),
        (0.0, "SEVERE"),
        (None, "UNKNOWN"),
        (math.nan, "UNKNOWN"),
        ("fast", "UNKNOWN"),
    ],
)
def test_congestion_thresholds(speed, category):
    assert congestion_category(speed) == category


def test_thresholds_are_one_descending_constant():
    bounds = [bound for bound, _ in CONGESTION_THRESHOLDS_MPH]
    assert bounds == sorted(bounds, reverse=True) == [50.0, 35.0, 20.0]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((55.0, 50.0, 60.0), (55.0, 50.0, 60.0)),
        ((95.0, 80.0, 110.0), (85.0, 80.0, 85.0)),
        ((-3.0, -10.0, 2.0), (0.0, 0.0, 2.0)),
        ((40.0, 45.0, 38.0), (40.0, 40.0, 40.0)),  # a crossed interval is widened to hold the prediction
        ((40.0, None, math.nan), (40.0, 40.0, 40.0)),
    ],
)
def test_clamp_interval(given, expected):
    assert clamp_interval(*given, max_speed_mph=85.0) == expected


def test_alert_rules():
    assert alert_rules(15.0, 40.0) == ["severe_congestion", "sudden_drop"]
    assert alert_rules(15.0, 30.0) == ["severe_congestion"]
    assert alert_rules(15.0, 18.0) == []  # already severe
    assert alert_rules(15.0, None) == []  # current speed unknown
    assert alert_rules(45.0, 65.0) == ["sudden_drop"]
    assert alert_rules(45.1, 65.0) == []
    assert alert_rules(45.0, 65.0, drop_alert_mph=25.0) == []
    assert set(ALERT_RULES) == {"severe_congestion", "sudden_drop"}


def test_alert_ids_are_deterministic_and_distinct():
    assert alert_id("1", T_MS, 15, "sudden_drop") == alert_id("1", T_MS, 15, "sudden_drop")
    ids = {alert_id(s, t, h, r) for s in ("1", "2") for t in (T_MS, T_MS + 1) for h in (15, 30) for r in ALERT_RULES}
    assert len(ids) == 16


def test_prediction_and_alerts_fit_their_schemas():
    prediction = to_prediction(model_output(predicted_speed_mph=12.0, lower_mph=5.0), 85.0, 0.9, NOW_MS)
    assert prediction["target_time"] == T_MS + 15 * 60_000
    assert prediction["congestion"] == "SEVERE" and prediction["processing_time"] == NOW_MS
    AvroCodec("prediction").encode(prediction)
    alerts = to_alerts(prediction, 58.0, 20.0)
    assert [a["rule"] for a in alerts] == ["severe_congestion", "sudden_drop"]
    assert [a["severity"] for a in alerts] == ["CRITICAL", "WARNING"]
    for alert in alerts:
        AvroCodec("alert").encode(alert)
        assert "\n" not in alert["message"]


def test_pipeline_outputs_predictions_alerts_and_dead_letters():
    records = [
        model_output(),
        model_output(sensor_id="767541", predicted_speed_mph=10.0, lower_mph=-4.0, upper_mph=18.0, horizon_min=60),
        model_output(sensor_id="767542", predicted_speed_mph=91.0, upper_mph=99.0, coverage=None),
        model_output(sensor_id="717447", predicted_speed_mph=math.nan),
        {"sensor_id": "1"},
    ]
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(records) | PostProcess(now_ms_fn=lambda: NOW_MS)
        assert_that(
            out.predictions
            | beam.Map(
                lambda r: (r["sensor_id"], r["predicted_speed_mph"], r["lower_mph"], r["upper_mph"], r["congestion"])
            ),
            equal_to(
                [
                    ("773869", 55.0, 50.0, 60.0, "FREE_FLOW"),
                    ("767541", 10.0, 0.0, 18.0, "SEVERE"),
                    ("767542", 85.0, 50.0, 85.0, "FREE_FLOW"),
                ]
            ),
            label="CheckPredictions",
        )
        assert_that(
            out.alerts | beam.Map(lambda a: a["alert_id"]),
            equal_to([f"767541:{T_MS}:60:severe_congestion", f"767541:{T_MS}:60:sudden_drop"]),
            label="CheckAlerts",
        )
        assert_that(
            out.dead_letter | beam.Map(lambda d: (d["reason"], d["key"], d["step"])),
            equal_to([("invalid_prediction", b"717447", "PostProcess"), ("invalid_prediction", b"1", "PostProcess")]),
            label="CheckDeadLetters",
        )
        coverage = out.predictions | "Coverage" >> beam.Map(lambda r: r["coverage"])
        assert_that(coverage, equal_to([0.9, 0.9, 0.9]), label="CheckCoverage")


def test_invalid_parameters_are_rejected():
    with pytest.raises(TransformConfigError):
        PostProcess(coverage=1.5)
