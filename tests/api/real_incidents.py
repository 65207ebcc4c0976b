"""Incidents of the API tests' real records, by the pipeline's own lifecycle rules.

The observed speed of a step is its aggregate (the reading), the predicted
speeds are the real model's predictions of ``real_predictions.forecast_hours``;
``transforms.incident_rules.advance`` (what TrackIncidents runs per step) turns
them into incident records over the bundled road links. Nothing is invented.
"""

from __future__ import annotations

import numpy as np

from ml.features import HORIZONS_MIN
from ml.road_graph import bundled_road_links
from transforms.incident_rules import IncidentRules, advance

__all__ = ["incidents_of"]


def incidents_of(records) -> list[dict]:
    """Incident records, step by step, for a ``RealRecords``."""
    sensors = tuple(dict.fromkeys(p["sensor_id"] for p in records.predictions))
    index = {s: i for i, s in enumerate(sensors)}
    neighbours: dict[int, set[int]] = {}
    for a, b in bundled_road_links(sensors):
        neighbours.setdefault(index[a], set()).add(index[b])
        neighbours.setdefault(index[b], set()).add(index[a])
    links = {k: tuple(sorted(v)) for k, v in neighbours.items()}
    horizons = tuple(HORIZONS_MIN)
    observed: dict[int, np.ndarray] = {}
    for agg in records.aggregates:
        row = observed.setdefault(agg["window_start"], np.full(len(sensors), np.nan))
        if agg["sensor_id"] in index and agg["mean_speed_mph"] is not None:
            row[index[agg["sensor_id"]]] = agg["mean_speed_mph"]
    predicted = {t: np.full((len(horizons), len(sensors)), np.nan) for t in records.steps_ms}
    for p in records.predictions:
        predicted[p["event_time"]][horizons.index(p["horizon_min"]), index[p["sensor_id"]]] = p["predicted_speed_mph"]
    out, open_incidents = [], []
    for step in records.steps_ms:
        rows, open_incidents = advance(open_incidents, step, observed[step], predicted[step], sensors, horizons, links,
                                       IncidentRules(), records.model_version)
        out.extend(rows)
    return out
