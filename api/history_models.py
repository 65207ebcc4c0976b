"""Response models of ``/history`` and ``/accuracy`` (the store-backed routes)."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["AccuracyReport", "AccuracyRow", "DriftAlarm", "StoredActual", "StoredHistory", "StoredPrediction",
           "StoredScore"]


class StoredActual(BaseModel):
    window_start_ms: int
    window_end_ms: int
    mean_speed_mph: float | None = Field(description="null when every reading of the window was missing")
    count: int
    missing_count: int
    pane_timing: str


class StoredPrediction(BaseModel):
    event_time_ms: int = Field(description="input step t, epoch ms")
    target_time_ms: int = Field(description="t + horizon, epoch ms")
    horizon_min: int
    model_version: str
    predicted_speed_mph: float
    lower_mph: float
    upper_mph: float
    coverage: float = Field(description="nominal coverage of the interval")
    congestion: str


class StoredScore(BaseModel):
    event_time_ms: int
    target_time_ms: int
    horizon_min: int
    model_version: str
    predicted_speed_mph: float
    actual_speed_mph: float | None
    error_mph: float | None = Field(description="predicted - actual; null when MISSING")
    inside_interval: bool | None
    status: str = Field(description="SCORED or MISSING (no observed actual)")


class StoredHistory(BaseModel):
    sensor_id: str
    start_ms: int
    end_ms: int
    actuals: list[StoredActual] = Field(description="window aggregates starting in [start_ms, end_ms)")
    predictions: dict[str, list[StoredPrediction]] = Field(description="by horizon (min); target time in range")
    scores: list[StoredScore] = Field(description="target time in range")


class AccuracyRow(BaseModel):
    horizon_min: int
    sensor_id: str | None = None
    model_version: str | None = None
    mae: float | None = Field(description="mean absolute error (mph) of the SCORED forecasts")
    coverage: float | None = Field(description="share of SCORED forecasts inside their interval")
    nominal_coverage: float | None
    scored: int
    missing: int = Field(description="forecasts whose actual never arrived (not in mae/coverage)")


class DriftAlarm(BaseModel):
    horizon_min: int
    model_version: str
    rule: str = Field(description="coverage or mae")
    value: float
    threshold: float
    scored: int
    window_s: int
    message: str


class AccuracyReport(BaseModel):
    window: str = Field(description="1h or 1d of target time, ending at now_ms")
    now_ms: int | None = Field(description="the newest scored target time (the data's clock)")
    sensor_id: str | None
    network: list[AccuracyRow] = Field(description="per horizon (one sensor's when sensor_id is given)")
    models: list[AccuracyRow] = Field(description="per horizon and model version")
    alarms: list[DriftAlarm] = Field(description="drift rules firing now (docs/scoring-and-history.md)")
