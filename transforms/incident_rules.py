"""The incident lifecycle as a pure function of one network step and the open incidents.

One step is the observed speed of every sensor (the newest row of the
NetworkHistory snapshot) and its predicted speed at every horizon. For each
step, in step order, :func:`advance` returns the incident records (Avro
``incident``) and the new set of open incidents. The rules (docs/incidents.md):

- A sensor is *congested* when its observed speed or any predicted speed is
  below ``enter_mph`` (35 mph, the HEAVY bound); a sensor already in an open
  incident stays congested until all its speeds are at or above ``clear_mph``
  (45 mph): hysteresis.
- Congested sensors connected by road links form runs (connected components).
  A run that shares sensors with an open incident continues it (announced
  incidents first, then the largest overlap, then the oldest); an announced
  incident whose runs all went to other incidents is CLOSED as merged into
  the one that took its largest overlap; a run that shares none starts an
  incident. Its id is ``<seed sensor>@<starting step UTC>`` (the seed is the
  run's slowest sensor), so a replay of the same readings gives the same ids.
- Minimum duration: an incident is announced (OPENED) only once its run has
  been congested ``open_steps`` steps in a row (2 = the step it started and
  the next); a shorter blip is dropped without a record.
- An announced incident with no congested sensor is CLEARING; after
  ``clear_steps`` (3 = 15 min) such steps in a row it is CLOSED. Congestion on
  its sensors before that resumes it (same id): a flapping sensor does not
  open and close an incident every step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ml.road_graph import components

__all__ = ["IncidentRules", "OpenIncident", "advance", "incident_id", "severity_of"]

SEVERITIES = ("MODERATE", "HEAVY", "SEVERE")


@dataclass(frozen=True)
class IncidentRules:
    """Thresholds of the lifecycle (mph, steps); see the module doc."""

    enter_mph: float = 35.0
    clear_mph: float = 45.0
    clear_steps: int = 3
    open_steps: int = 2
    severe_mph: float = 20.0
    trend_mph: float = 5.0

    def __post_init__(self) -> None:
        ordered = 0 < self.severe_mph <= self.enter_mph <= self.clear_mph
        if not ordered or min(self.clear_steps, self.open_steps) < 1 or self.trend_mph <= 0:
            raise ValueError("need 0 < severe_mph <= enter_mph <= clear_mph, clear_steps and open_steps >= 1, "
                             "trend_mph > 0")


@dataclass
class OpenIncident:
    """An incident that is OPEN or CLEARING: what the next step needs to know about it."""

    incident_id: str
    seed: int
    opened_at: int
    members: tuple[int, ...]
    clear_count: int = 0
    congested_steps: int = 1
    announced: bool = False


def incident_id(seed_sensor: str, opened_at_ms: int) -> str:
    """``<sensor>@<UTC step, minutes>``, e.g. ``717447@2012-05-27T07:15Z``."""
    stamp = datetime.fromtimestamp(opened_at_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")
    return f"{seed_sensor}@{stamp}"


def severity_of(speed_mph: float | None, rules: IncidentRules) -> str:
    """SEVERE below severe_mph, HEAVY below enter_mph, else MODERATE (clearing, or nothing known)."""
    if speed_mph is None or math.isnan(speed_mph):
        return "MODERATE"
    return "SEVERE" if speed_mph < rules.severe_mph else "HEAVY" if speed_mph < rules.enter_mph else "MODERATE"


def _nanmin(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.min()) if finite.size else math.nan


def _none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _record(
    inc: OpenIncident, event: str, state: str, step_ms: int, observed: np.ndarray, predicted: np.ndarray,
    sensor_ids: Sequence[str], horizons: Sequence[int], rules: IncidentRules, model_version: str,
    merged_into: str | None = None,
) -> dict[str, Any]:
    members = list(inc.members)
    obs = observed[members]
    pred = predicted[:, members]
    worst = np.fmin(obs, np.nanmin(np.where(np.isfinite(pred), pred, np.inf), axis=0))
    worst = np.where(np.isinf(worst), np.nan, worst)
    worst_now = _nanmin(worst)
    worst_predicted = []
    for k, horizon in enumerate(horizons):
        row = pred[k]
        if np.isfinite(row).any():
            at = int(np.nanargmin(row))
            worst_predicted.append({"horizon_min": int(horizon), "target_time": step_ms + int(horizon) * 60_000,
                                    "speed_mph": float(row[at]), "sensor_id": sensor_ids[members[at]]})
    clearance = None
    for k in range(len(horizons)):  # the first horizon from which every later forecast is clear
        later = pred[k:]
        if np.isfinite(later).all() and (later >= rules.clear_mph).all():
            clearance = step_ms + int(horizons[k]) * 60_000
            break
    now = _nanmin(obs)
    now = now if not math.isnan(now) else _nanmin(pred[0]) if len(horizons) else math.nan
    last = _nanmin(pred[-1]) if len(horizons) else math.nan
    trend = "STABLE"
    if not (math.isnan(now) or math.isnan(last)):
        if last <= now - rules.trend_mph:
            trend = "WORSENING"
        elif last >= now + rules.trend_mph:
            trend = "IMPROVING"
    slowest = None if math.isnan(worst_now) else sensor_ids[members[int(np.nanargmin(worst))]]
    return {
        "incident_id": inc.incident_id,
        "event": event,
        "state": state,
        "severity": severity_of(worst_now, rules),
        "seed_sensor_id": sensor_ids[inc.seed],
        "sensor_ids": [sensor_ids[m] for m in members],
        "opened_at": inc.opened_at,
        "updated_at": step_ms,
        "closed_at": step_ms if state == "CLOSED" else None,
        "worst_sensor_id": slowest,
        "worst_speed_mph": _none(worst_now),
        "observed_min_speed_mph": _none(_nanmin(obs)),
        "worst_predicted": worst_predicted,
        "expected_clearance_time": clearance,
        "trend": trend,
        "merged_into": merged_into,
        "model_version": model_version,
    }


def advance(
    open_incidents: list[OpenIncident], step_ms: int, observed: np.ndarray, predicted: np.ndarray,
    sensor_ids: Sequence[str], horizons: Sequence[int], neighbours: dict[int, tuple[int, ...]],
    rules: IncidentRules, model_version: str = "",
) -> tuple[list[dict[str, Any]], list[OpenIncident]]:
    """Records for this step (OPENED, UPDATED, CLOSED) and the incidents still open after it.

    ``observed`` is (N,), ``predicted`` (len(horizons), N), NaN where unknown.
    """
    observed = np.where(np.asarray(observed, dtype=np.float64) > 0, observed, np.nan)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(len(horizons), len(sensor_ids))
    worst = np.fmin(observed, np.nanmin(np.where(np.isfinite(predicted), predicted, np.inf), axis=0))
    threshold = np.full(len(sensor_ids), rules.enter_mph)  # a member of an open incident stays in below clear_mph
    threshold[np.fromiter((m for inc in open_incidents for m in inc.members), np.int64)] = rules.clear_mph
    congested = np.flatnonzero(np.isfinite(worst) & (worst < threshold)).tolist()
    runs = components(congested, neighbours)
    order = sorted(range(len(open_incidents)),
                   key=lambda k: (open_incidents[k].opened_at, open_incidents[k].incident_id))
    pairs = []
    for r, run in enumerate(runs):
        members = set(run)
        for rank, k in enumerate(order):
            overlap = len(members & set(open_incidents[k].members))
            if overlap:
                pairs.append((not open_incidents[k].announced, -overlap, rank, r, k))
    run_owner: dict[int, int] = {}
    owned: dict[int, int] = {}
    for *_order, r, k in sorted(pairs):
        if r not in run_owner and k not in owned:
            run_owner[r], owned[k] = k, r
    records: list[dict[str, Any]] = []
    still_open: list[OpenIncident] = []
    args = (observed, predicted, sensor_ids, horizons, rules, model_version)
    for k in order:
        inc = open_incidents[k]
        if k in owned:
            inc.members, inc.clear_count = tuple(runs[owned[k]]), 0
            inc.congested_steps += 1
            if inc.announced or inc.congested_steps >= rules.open_steps:
                records.append(_record(inc, "UPDATED" if inc.announced else "OPENED", "OPEN", step_ms, *args))
                inc.announced = True
            still_open.append(inc)
            continue
        if not inc.announced:
            continue  # congestion shorter than open_steps: never announced, dropped
        taken = [r for (*_order, r, kk) in sorted(pairs) if kk == k]
        if taken:  # its runs all went to other incidents (an unowned run would have been its own)
            merged = open_incidents[run_owner[taken[0]]].incident_id
            records.append(_record(inc, "CLOSED", "CLOSED", step_ms, *args, merged_into=merged))
            continue
        inc.clear_count += 1
        if inc.clear_count >= rules.clear_steps:
            records.append(_record(inc, "CLOSED", "CLOSED", step_ms, *args))
        else:
            records.append(_record(inc, "UPDATED", "CLEARING", step_ms, *args))
            still_open.append(inc)
    for r, run in enumerate(runs):
        if r in run_owner:
            continue
        seed = min(run, key=lambda m: (worst[m], sensor_ids[m]))
        inc = OpenIncident(incident_id(sensor_ids[seed], step_ms), seed, step_ms, tuple(run))
        if rules.open_steps <= 1:
            inc.announced = True
            records.append(_record(inc, "OPENED", "OPEN", step_ms, *args))
        still_open.append(inc)
    return records, still_open
