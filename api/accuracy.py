"""Rolling forecast accuracy from the store: Prometheus gauges and drift alarms.

Every ``accuracy_refresh_s`` the monitor reads the scores of the last hour and
the last day (of target time, on the data's clock: see :mod:`store.queries`)
per horizon, per horizon x sensor and per horizon x model version, and sets

* ``traffic_forecast_mae_mph{window,horizon,sensor,model_version}``,
* ``traffic_forecast_interval_coverage_ratio{...}``,
* ``traffic_forecast_scores{...,status}`` (SCORED and MISSING counts),
* ``traffic_forecast_drift_alarm{horizon,model_version,rule}`` (1 = firing),

with ``sensor="all"`` / ``model_version="all"`` on the aggregated series.

Drift rules (:func:`drift_alarms`, thresholds in :class:`api.settings.ApiSettings`):
over the last ``drift_window_s`` (default one hour) of one horizon and model
version, with at least ``drift_min_scores`` scored forecasts,

* ``coverage``: interval coverage below ``drift_coverage_min`` (0.8 for 90 % intervals);
* ``mae``: MAE above ``drift_mae_factor`` (1.5) x the model's validation MAE of
  that horizon (``validation_metrics`` in the registry's metadata.json).

A rule over a rolling window of that length fires only when the whole window is out of range:
"for an hour", not one bad step.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

__all__ = ["WINDOWS_S", "AccuracyMonitor", "drift_alarms", "validation_mae"]

log = logging.getLogger(__name__)

WINDOWS_S: dict[str, int] = {"1h": 3600, "1d": 86_400}
_ALL = "all"


def validation_mae(registry_root: Path, version: str, cache: dict[str, dict[int, float]] | None = None
                   ) -> dict[int, float]:
    """Horizon -> validation MAE of a registered model version (empty when unknown)."""
    if cache is not None and version in cache:
        return cache[version]
    found: dict[int, float] = {}
    try:
        metadata = json.loads((Path(registry_root) / version / "metadata.json").read_text())
        for h, metrics in (metadata.get("validation_metrics") or {}).items():
            if metrics.get("val_mae") is not None:
                found[int(h)] = float(metrics["val_mae"])
    except (OSError, ValueError, AttributeError):
        found = {}
    if cache is not None:
        cache[version] = found
    return found


def drift_alarms(rows: list[dict[str, Any]], settings: Any, reference_mae: dict[str, dict[int, float]]
                 ) -> list[dict[str, Any]]:
    """Firing alarms for per-(horizon, model_version) accuracy rows of the drift window."""
    alarms = []
    for row in rows:
        if row["scored"] < settings.drift_min_scores or row["mae"] is None:
            continue
        h, version = int(row["horizon_min"]), str(row["model_version"])
        base = {"horizon_min": h, "model_version": version, "scored": row["scored"],
                "window_s": settings.drift_window_s}
        if row["coverage"] is not None and row["coverage"] < settings.drift_coverage_min:
            alarms.append({**base, "rule": "coverage", "value": row["coverage"],
                           "threshold": settings.drift_coverage_min,
                           "message": f"{h} min intervals of model {version} covered {row['coverage']:.0%} "
                                      f"(< {settings.drift_coverage_min:.0%}) over the last "
                                      f"{settings.drift_window_s // 60} min"})
        reference = reference_mae.get(version, {}).get(h)
        if reference is not None and row["mae"] > settings.drift_mae_factor * reference:
            alarms.append({**base, "rule": "mae", "value": row["mae"],
                           "threshold": settings.drift_mae_factor * reference,
                           "message": f"{h} min MAE of model {version} is {row['mae']:.2f} mph, above "
                                      f"{settings.drift_mae_factor:g} x its validation {reference:.2f} mph"})
    return alarms


class AccuracyMonitor:
    """Refreshes the accuracy gauges and drift alarms from the store (see the module doc)."""

    def __init__(self, dsn: str, settings: Any, registry: CollectorRegistry, model_root: Path) -> None:
        self.dsn = dsn
        self.settings = settings
        self.model_root = Path(model_root)
        self._mae_cache: dict[str, dict[int, float]] = {}
        labels = ["window", "horizon", "sensor", "model_version"]
        self.mae = Gauge("traffic_forecast_mae_mph", "rolling MAE of scored forecasts (target-time window)",
                         labels, registry=registry)
        self.coverage = Gauge("traffic_forecast_interval_coverage_ratio",
                              "rolling share of scored forecasts inside their interval", labels, registry=registry)
        self.count = Gauge("traffic_forecast_scores", "forecasts settled in the window by status",
                           [*labels, "status"], registry=registry)
        self.alarm = Gauge("traffic_forecast_drift_alarm", "1 while a drift rule fires",
                           ["horizon", "model_version", "rule"], registry=registry)
        self.alarms: list[dict[str, Any]] = []
        self.last_error: str | None = None
        self.refreshed_ms: int | None = None

    def reference_mae(self, versions: set[str]) -> dict[str, dict[int, float]]:
        return {v: validation_mae(self.model_root, v, self._mae_cache) for v in versions}

    def read(self, window_s: int, group: str, sensor_id: str | None = None) -> list[dict[str, Any]]:
        """Accuracy rows straight from the store (raises store.db.StoreError when it is down)."""
        from store.db import connect
        from store.queries import accuracy

        with connect(self.dsn) as conn:
            return accuracy(conn, window_s * 1000, group=group, sensor_id=sensor_id)

    def evaluate(self) -> list[dict[str, Any]]:
        rows = self.read(self.settings.drift_window_s, "model")
        return drift_alarms(rows, self.settings, self.reference_mae({str(r["model_version"]) for r in rows}))

    def refresh(self) -> None:
        """One pass: gauges for both windows and every grouping, then the alarms (runs in a thread)."""
        results = {(name, group): self.read(seconds, group) for name, seconds in WINDOWS_S.items()
                   for group in ("network", "sensor", "model")}
        alarms = self.evaluate()
        for gauge in (self.mae, self.coverage, self.count, self.alarm):
            gauge.clear()
        for (window, _group), rows in results.items():
            for row in rows:
                labels = (window, str(row["horizon_min"]), str(row.get("sensor_id", _ALL)),
                          str(row.get("model_version", _ALL)))
                if row["mae"] is not None:
                    self.mae.labels(*labels).set(row["mae"])
                if row["coverage"] is not None:
                    self.coverage.labels(*labels).set(row["coverage"])
                self.count.labels(*labels, "SCORED").set(row["scored"])
                self.count.labels(*labels, "MISSING").set(row["missing"])
        for alarm in alarms:
            self.alarm.labels(str(alarm["horizon_min"]), alarm["model_version"], alarm["rule"]).set(1)
        self.alarms = alarms
        import time

        self.refreshed_ms = int(time.time() * 1000)

    async def run(self) -> None:
        """Refresh forever (the app's lifespan cancels it); a store that is down is logged, then retried."""
        while True:
            try:
                await asyncio.to_thread(self.refresh)
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - the API keeps serving without the store
                if self.last_error != str(exc):
                    log.warning("accuracy refresh failed: %s", exc)
                self.last_error = str(exc)
            await asyncio.sleep(self.settings.accuracy_refresh_s)
