"""The API's in-memory view of the traffic: sensors, latest and recent values.

``LiveState.ingest`` takes decoded Kafka records (from the one consumer),
updates the latest prediction per sensor and horizon, the latest reading per
sensor, each sensor's recent actuals and predictions, and the recent alerts,
and returns the items the hub publishes. Actual speeds come from
``traffic-aggregates`` (a window's mean speed, timed at ``window_start``, the
step the reading belongs to) or ``traffic-events`` (``event_time``).
"""

from __future__ import annotations

import csv
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.hub import CONGESTION_RANK, SEVERITY_RANK
from ml.dataset import load_sensor_locations
from ml.network import Network

__all__ = ["HORIZONS_MIN", "LiveState", "Record", "SensorCatalog"]

HORIZONS_MIN: tuple[int, ...] = (15, 30, 60)
# (kind, decoded record, received_ms): kind is "prediction", "alert", "aggregate" or "event".
Record = tuple[str, dict[str, Any], float]


@dataclass(frozen=True)
class SensorCatalog:
    """The sensors the dashboard shows, with their locations."""

    ids: tuple[str, ...]
    lat: dict[str, float]
    lon: dict[str, float]

    @classmethod
    def from_network(cls, network: Network) -> SensorCatalog:
        """Every sensor of ``network`` with its location."""
        return cls.from_csv(network.root / "sensors.csv")

    @classmethod
    def from_csv(cls, path: Path) -> SensorCatalog:
        with open(path, newline="") as handle:
            ids = tuple(row["sensor_id"] for row in csv.DictReader(handle))
        locations = load_sensor_locations(ids, path)
        return cls(
            ids,
            {sid: float(loc[0]) for sid, loc in zip(ids, locations, strict=True)},
            {sid: float(loc[1]) for sid, loc in zip(ids, locations, strict=True)},
        )

    def __contains__(self, sensor_id: object) -> bool:
        return sensor_id in self.lat

    def in_bbox(self, min_lat: float, min_lon: float, max_lat: float, max_lon: float) -> frozenset[str]:
        return frozenset(
            sid for sid in self.ids if min_lat <= self.lat[sid] <= max_lat and min_lon <= self.lon[sid] <= max_lon
        )


class LiveState:
    """Latest and recent values per sensor, bounded in memory."""

    def __init__(self, catalog: SensorCatalog, history_steps: int, alerts_kept: int) -> None:
        self.catalog = catalog
        self.history_steps = history_steps
        self.latest: dict[tuple[str, int], dict[str, Any]] = {}
        self.readings: dict[str, dict[str, Any]] = {}
        self.actuals: dict[str, dict[int, float | None]] = {}
        self.predicted: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=alerts_kept)
        self.counts = {"prediction": 0, "alert": 0, "reading": 0, "unknown_sensor": 0, "not_finite": 0}

    def ingest(self, records: list[Record], positions: list | None = None) -> list[tuple]:
        """Apply records; returns hub items ``(kind, sensor_id, horizon_min, rank, data)``.

        With ``positions`` (each record's Kafka ``(topic, partition, offset)``), each item ends with its position.
        """
        items: list[tuple] = []
        for n, (kind, record, received_ms) in enumerate(records):
            before = len(items)
            sensor_id = record.get("sensor_id")
            if sensor_id not in self.catalog:
                self.counts["unknown_sensor"] += 1
                continue
            if not all(math.isfinite(v) for v in record.values() if isinstance(v, float)):
                self.counts["not_finite"] += 1  # JSON has no NaN/inf: such a record cannot be served
                continue
            if kind == "prediction":
                data = {**record, "received_ms": received_ms}
                self._apply_prediction(data)
                items.append(("prediction", sensor_id, data["horizon_min"],
                              CONGESTION_RANK.get(data["congestion"], 0), data))
            elif kind == "alert":
                data = {**record, "received_ms": received_ms}
                self.alerts.append(data)
                self.counts["alert"] += 1
                items.append(("alert", sensor_id, data["horizon_min"], SEVERITY_RANK.get(data["severity"], 0), data))
            else:
                data = self._reading(kind, record, received_ms)
                self._apply_reading(data)
                items.append(("reading", sensor_id, None, 0, data))
            if positions is not None and len(items) > before:
                items[-1] = (*items[-1], positions[n])
        return items

    @staticmethod
    def _reading(kind: str, record: dict[str, Any], received_ms: float) -> dict[str, Any]:
        if kind == "aggregate":
            return {"sensor_id": record["sensor_id"], "time_ms": record["window_start"],
                    "speed_mph": record.get("mean_speed_mph"), "received_ms": received_ms}
        return {"sensor_id": record["sensor_id"], "time_ms": record["event_time"],
                "speed_mph": record.get("speed_mph"), "received_ms": received_ms}

    def _apply_prediction(self, data: dict[str, Any]) -> None:
        self.counts["prediction"] += 1
        key = (data["sensor_id"], data["horizon_min"])
        current = self.latest.get(key)
        if current is None or (data["event_time"], data["processing_time"]) >= (
            current["event_time"], current["processing_time"]
        ):
            self.latest[key] = data
        series = self.predicted.setdefault(key, {})
        series[data["target_time"]] = data
        self._trim(series)

    def _apply_reading(self, data: dict[str, Any]) -> None:
        self.counts["reading"] += 1
        sensor_id = data["sensor_id"]
        current = self.readings.get(sensor_id)
        if current is None or data["time_ms"] >= current["time_ms"]:
            self.readings[sensor_id] = data
        series = self.actuals.setdefault(sensor_id, {})
        series[data["time_ms"]] = data["speed_mph"]
        self._trim(series)

    def _trim(self, series: dict[int, Any]) -> None:
        if len(series) > self.history_steps + self.history_steps // 4:
            for stale in sorted(series)[: len(series) - self.history_steps]:
                del series[stale]

    def latest_predictions(self, sensors: frozenset[str] | None = None,
                           horizons: frozenset[int] | None = None, min_congestion: int = 0) -> list[dict[str, Any]]:
        rows = [
            rec for (sid, horizon), rec in self.latest.items()
            if (sensors is None or sid in sensors) and (horizons is None or horizon in horizons)
            and CONGESTION_RANK.get(rec["congestion"], 0) >= min_congestion
        ]
        rows.sort(key=lambda r: (-r["event_time"], r["sensor_id"], r["horizon_min"]))
        return rows

    def sensor_history(self, sensor_id: str, horizon_min: int, since_ms: int | None = None) -> dict[str, Any]:
        actual = self.actuals.get(sensor_id, {})
        predicted = self.predicted.get((sensor_id, horizon_min), {})
        return {
            "sensor_id": sensor_id,
            "horizon_min": horizon_min,
            "actual": [{"time_ms": t, "speed_mph": actual[t]} for t in sorted(actual)
                       if since_ms is None or t >= since_ms],
            "predicted": [
                {"target_time": t, "event_time": p["event_time"], "predicted_speed_mph": p["predicted_speed_mph"],
                 "lower_mph": p["lower_mph"], "upper_mph": p["upper_mph"], "coverage": p["coverage"],
                 "congestion": p["congestion"], "model_version": p["model_version"]}
                for t, p in sorted(predicted.items()) if since_ms is None or t >= since_ms
            ],
        }

    def analytics(self, horizon_min: int) -> dict[str, Any]:
        """Counts, average speeds and the congestion breakdown over the latest predictions."""
        latest = [rec for (_, h), rec in self.latest.items() if h == horizon_min]
        breakdown = {name: 0 for name in CONGESTION_RANK}
        for rec in latest:
            breakdown[rec["congestion"]] = breakdown.get(rec["congestion"], 0) + 1
        speeds = [r["speed_mph"] for r in self.readings.values() if r["speed_mph"] is not None]
        predicted = [rec["predicted_speed_mph"] for rec in latest]
        return {
            "horizon_min": horizon_min,
            "sensors": len(self.catalog.ids),
            "sensors_with_prediction": len(latest),
            "sensors_with_reading": len(self.readings),
            "avg_predicted_speed_mph": sum(predicted) / len(predicted) if predicted else None,
            "avg_actual_speed_mph": sum(speeds) / len(speeds) if speeds else None,
            "congestion": breakdown,
            "latest_event_time": max((rec["event_time"] for rec in latest), default=None),
            "alerts_kept": len(self.alerts),
            "records": dict(self.counts),
        }
