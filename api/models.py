"""Response models of the REST endpoints (they document the API in OpenAPI)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Alert", "Analytics", "Health", "HealthChecks", "History", "Incident", "IncidentDetail", "Model", "Prediction",
    "Reading", "Sensor", "StreamJobCheck",
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


class StreamJobCheck(BaseModel):
    """Is the streaming job stalled? (kafka_client/stream_progress.py; docs/faults.md, "A stalled job is reported")"""

    ok: bool = Field(description="false only when stalled (then /health is 503)")
    state: Literal["no_input", "caught_up", "behind", "stalled", "unknown"] = Field(
        description="no_input: the raw topic has no records; caught_up: no raw record newer than every valid "
        "event waits, and the newest prediction (if any) is within behind_after_s of event time of the newest raw "
        "record (idle counts here); behind: otherwise, still inside stall_after_s without new output; stalled: "
        "behind with no new record on the events, dead-letter or predictions topic for stall_after_s or longer; "
        "unknown: the topics could not be read")
    unprocessed_records: int | None = Field(default=None, description="raw records minus valid events minus "
                                            "dead letters (an underestimate after repeats)")
    behind_s: float | None = Field(default=None, description="event time the newest prediction trails the "
                                   "newest raw record by (null when either is missing)")
    newest_input_ms: int | None = Field(default=None, description="event time of the newest raw record, epoch ms")
    newest_event_ms: int | None = Field(default=None, description="event_time of the newest valid event, epoch ms")
    newest_prediction_ms: int | None = Field(default=None, description="event_time of the newest prediction, epoch ms")
    no_progress_s: float | None = Field(default=None, description="how long the job has been behind without new "
                                        "output (0 when not behind)")
    behind_after_s: float | None = Field(default=None, description="TRAFFIC_STREAM_WATCH_BEHIND_AFTER_S")
    stall_after_s: float | None = Field(default=None, description="TRAFFIC_STREAM_WATCH_STALL_AFTER_S")
    input_topic: str | None = Field(default=None, description="the raw topic watched")
    error: str | None = Field(default=None, description="why the topics could not be read (state unknown)")


class HealthChecks(BaseModel):
    """One entry per check; each has ``ok``. Empty while starting."""

    model_config = ConfigDict(extra="allow")

    kafka: dict[str, Any] | None = Field(default=None, description="a metadata round trip to the brokers")
    consumer: dict[str, Any] | None = Field(default=None, description="the API's own Kafka consumer")
    model_registry: dict[str, Any] | None = Field(default=None, description="the registry and the served version")
    stream: dict[str, Any] | None = Field(default=None, description="the SSE fan-out")
    streaming_job: StreamJobCheck | None = Field(default=None, description="no progress while behind")


class Health(BaseModel):
    status: Literal["ok", "degraded", "starting"] = Field(description="ok; degraded when a check failed "
                                                                  "(then 503); starting before the checks exist")
    checks: HealthChecks


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

