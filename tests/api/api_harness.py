"""Helpers of the API tests: a codec producer, the step-by-step timeline of real records, a served API."""

from __future__ import annotations

import threading
import time

import httpx

from schemas.topics import TopicSettings

__all__ = ["Producer", "ServedApi", "Timeline", "serve", "wait_until"]


class Producer:
    """Produces records with the project's codec, keyed by sensor id, and waits for delivery."""

    def __init__(self, bootstrap: str, topics: TopicSettings) -> None:
        from confluent_kafka import Producer as KafkaProducer

        from schemas.codec import AvroCodec

        self.producer = KafkaProducer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.targets = {
            "prediction": (topics.predictions, AvroCodec("prediction")),
            "alert": (topics.alerts, AvroCodec("alert")),
            "aggregate": (topics.aggregates, AvroCodec("window_aggregate")),
            "incident": (topics.incidents, AvroCodec("incident")),
        }

    def send(self, kind: str, records: list[dict]) -> None:
        topic, codec = self.targets[kind]
        for record in records:
            key = record["incident_id"] if kind == "incident" else record["sensor_id"]
            self.producer.produce(topic, key=key.encode(), value=codec.encode(record))
            self.producer.poll(0)
        assert self.producer.flush(30) == 0, "records were not delivered to Kafka"

    def close(self) -> None:
        self.producer.close()


class ServedApi:
    def __init__(self, base_url: str, app, admin_key: str) -> None:
        self.base_url = base_url
        self.app = app
        self.admin_key = admin_key

    @property
    def runtime(self):
        return self.app.state.runtime

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)


def serve(settings, topics) -> tuple[object, threading.Thread, object]:
    import uvicorn

    from api.app import create_app

    app = create_app(settings, topics)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    return app, thread, server


class Timeline:
    """Produces the real records step by step (aggregates of step t, then its predictions, alerts and incidents)."""

    def __init__(self, records, producer: Producer, incidents: list[dict] | None = None) -> None:
        self.records = records
        self.incidents = incidents or []
        self.producer = producer
        self.produced = 0
        self._aggregates: dict[int, list[dict]] = {}
        for agg in records.aggregates:
            self._aggregates.setdefault(agg["window_start"], []).append(agg)
        first = records.steps_ms[0]
        self.history_sent = False
        self._early = [a for t, rows in sorted(self._aggregates.items()) if t < first for a in rows]

    @property
    def steps(self) -> list[int]:
        return self.records.steps_ms

    def step_records(self, index: int, kind: str) -> list[dict]:
        step = self.steps[index]
        rows = self.records.predictions if kind == "prediction" else self.records.alerts
        return [r for r in rows if r["event_time"] == step]

    def prediction(self, index: int, sensor_id: str, horizon: int) -> dict:
        return next(r for r in self.step_records(index, "prediction")
                    if r["sensor_id"] == sensor_id and r["horizon_min"] == horizon)

    def produce_next(self) -> int:
        """Produce the next step; returns its index."""
        index = self.produced
        assert index < len(self.steps), "the fixture's hours are used up; forecast more steps"
        if not self.history_sent:
            self.producer.send("aggregate", self._early)
            self.history_sent = True
        self.producer.send("aggregate", self._aggregates.get(self.steps[index], []))
        self.producer.send("prediction", self.step_records(index, "prediction"))
        self.producer.send("alert", self.step_records(index, "alert"))
        self.producer.send("incident", [r for r in self.incidents if r["updated_at"] == self.steps[index]])
        self.produced += 1
        return index


def wait_until(condition, timeout_s: float = 30.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        time.sleep(0.05)
