"""Response models of the REST endpoints (they document the API in OpenAPI)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "Alert", "Analytics", "Health", "History", "Incident", "IncidentDetail", "Model", "Prediction",
    "Reading", "Sensor",
]


class PredictedPoint(BaseModel):
    """One forecast without its sensor: a point of a sensor's predicted series."""

    target_time: int = Field(description="t + horizon, epoch ms")
    event_time: int = Field(description="input step t, epoch ms")
    predicted_speed_mph: float
    lower_mph: float
    upper_mph: float
    coverage: float
    congestion: str
    model_version: str


class Prediction(PredictedPoint):
    sensor_id: str
    horizon_min: int
    processing_time: int
    received_ms: float = Field(description="when the API consumed it, epoch ms")


class Reading(BaseModel):
    sensor_id: str
    time_ms: int
    speed_mph: float | None
    received_ms: float


class Alert(BaseModel):
    alert_id: str
    sensor_id: str
    event_time: int
    target_time: int
    horizon_min: int
    rule: str
    severity: str
    message: str
    predicted_speed_mph: float
    current_speed_mph: float | None
    model_version: str
    processing_time: int
    received_ms: float


class Sensor(BaseModel):
    sensor_id: str
    latitude: float
    longitude: float
    latest_reading: Reading | None
    latest_predictions: dict[str, Prediction] = Field(description="by horizon in minutes")


class HistoryPoint(BaseModel):
    time_ms: int
    speed_mph: float | None




class History(BaseModel):
    sensor_id: str
    horizon_min: int
    actual: list[HistoryPoint]
    predicted: list[PredictedPoint]


class Analytics(BaseModel):
    horizon_min: int
    sensors: int
    sensors_with_prediction: int
    sensors_with_reading: int
    avg_predicted_speed_mph: float | None
    avg_actual_speed_mph: float | None
    congestion: dict[str, int]
    latest_event_time: int | None
    alerts_kept: int
    records: dict[str, int]


class Health(BaseModel):
    status: Literal["ok", "degraded", "starting"] = Field(description="ok; degraded when a check failed "
                                                                  "(then 503); starting before the checks exist")
    checks: dict[str, dict[str, Any]]


class Model(BaseModel):
    registry: str
    version: str | None
    loaded_at_ms: int | None
    metadata: dict[str, Any] | None
    error: str | None


class HorizonWorst(BaseModel):
    horizon_min: int
    target_time: int = Field(description="step + horizon, epoch ms")
    speed_mph: float = Field(description="the slowest predicted speed of the incident's sensors")
    sensor_id: str


class Incident(BaseModel):
    """The latest state of a congestion incident (schemas/avro/incident.avsc; rules in docs/incidents.md)."""

    incident_id: str = Field(description="<seed sensor>@<starting step UTC>, stable across replays")
    event: Literal["OPENED", "UPDATED", "CLOSED"]
    state: Literal["OPEN", "CLEARING", "CLOSED"]
    severity: Literal["MODERATE", "HEAVY", "SEVERE"]
    seed_sensor_id: str
    sensor_ids: list[str]
    opened_at: int = Field(description="epoch ms")
    updated_at: int = Field(description="the step this state is for, epoch ms")
    closed_at: int | None
    worst_sensor_id: str | None
    worst_speed_mph: float | None
    observed_min_speed_mph: float | None
    worst_predicted: list[HorizonWorst]
    expected_clearance_time: int | None = Field(description="epoch ms; null when the forecast shows none")
    trend: Literal["WORSENING", "STABLE", "IMPROVING"]
    merged_into: str | None
    model_version: str
    received_ms: float = Field(description="when the API consumed it, epoch ms")


class IncidentDetail(BaseModel):
    incident: Incident
    states: list[Incident] = Field(description="its recorded states, oldest first")

