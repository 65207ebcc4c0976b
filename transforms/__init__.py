"""Composite PTransforms shared by the batch and streaming pipelines.

RawBatch -> TrafficSpine (ValidateEvents -> DeduplicateEvents -> WindowedAggregate
-> NetworkHistory) -> Forecast -> PostProcess. Elements are batches (schemas/batches.py).
See docs/transforms.md.
"""

from transforms.aggregate import AGGREGATES_TAG, LATE_TAG, TaggedOutputs, WindowedAggregate, speed_stats
from transforms.dedupe import DeduplicateEvents
from transforms.exceptions import TransformConfigError
from transforms.history import NetworkHistory
from transforms.postprocess import (
    ALERTS_TAG,
    CONGESTION_THRESHOLDS_MPH,
    PREDICTIONS_TAG,
    PostProcess,
    alert_id,
    alert_rules,
    clamp_interval,
    congestion_category,
)
from transforms.spine import TrafficSpine
from transforms.validate import DEAD_LETTER_TAG, REASONS, VALID_TAG, ValidateEvents, make_dead_letter

__all__ = [
    "AGGREGATES_TAG",
    "ALERTS_TAG",
    "CONGESTION_THRESHOLDS_MPH",
    "DEAD_LETTER_TAG",
    "LATE_TAG",
    "PREDICTIONS_TAG",
    "REASONS",
    "VALID_TAG",
    "DeduplicateEvents",
    "NetworkHistory",
    "PostProcess",
    "TaggedOutputs",
    "TrafficSpine",
    "TransformConfigError",
    "ValidateEvents",
    "WindowedAggregate",
    "alert_id",
    "alert_rules",
    "clamp_interval",
    "congestion_category",
    "make_dead_letter",
    "speed_stats",
]
