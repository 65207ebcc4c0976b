"""``traffic replay``: METR-LA readings to the raw topic, as the road sensors would send them.

Steps go out in event-time order; within a step, one RawReading per sensor
(key = sensor id). ``event_time`` inside the record is the reading's time in
the data set (plus ``shift_ms``), and the Kafka record timestamp is that same
event time, so the streaming job's watermark follows the data (see
``docs/platform.md`` (Topics): topics keep records by size, not age).
``speed`` is a speed-up factor: 1 sends one 5-minute step every 300 s, 300 one
step a second, ``math.inf`` (``--speed max``) as fast as the producer goes.
With ``loops`` > 1 (0 = forever) the range is replayed again with event times
shifted forward by its span rounded up to whole weeks, so they keep increasing
and time of day and day of week stay true (the models use both). Missing
readings (speed 0) are real data and are sent as they are.
``inject_bad`` mixes in the malformed and hostile records of
:mod:`pipelines.bad_records`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer
from tqdm import tqdm

from kafka_client import check_kafka, produce_at
from ml.dataset import BUNDLED_DIR, MetrLA, load_metrla
from pipelines.bad_records import BadRecordInjector, Reading
from pipelines.replay_encoding import RawReadingEncoder
from schemas.codec import AvroCodec
from schemas.exceptions import TrafficError

__all__ = [
    "ReplayError",
    "ReplayReport",
    "format_time",
    "known_sensor_ids",
    "replay",
]

WEEK_MS = 7 * 24 * 3600 * 1000


class ReplayError(TrafficError):
    """The replay cannot start or could not deliver its records."""


@dataclass
class ReplayReport:
    """What one replay sent."""

    topic: str
    readings: int = 0
    missing: int = 0
    bad: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    loops: int = 0
    sensors: int = 0
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    elapsed_s: float = 0.0
    undelivered: int = 0
    interrupted: bool = False

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    @property
    def events(self) -> int:
        return self.readings + self.bad_total

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(bad_total=self.bad_total, events=self.events, events_per_s=round(self.events_per_s, 1))
        return out


def known_sensor_ids(data: MetrLA) -> frozenset[str]:
    """Every real sensor id: the data's and the bundled sensor list's (unknown-sensor records avoid them)."""
    bundled = (BUNDLED_DIR / "sensors.csv").read_text().splitlines()[1:]
    return frozenset(data.sensor_ids) | {line.split(",")[0] for line in bundled if line}


class _Deliveries:
    """Counts failed deliveries (librdkafka reports only errors: ``delivery.report.only.error``)."""

    def __init__(self) -> None:
        self.failed = 0
        self.first_error: str | None = None

    def __call__(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = err.str()


def _pace(producer: Producer, deadline: float, stop: threading.Event | None) -> None:
    while (remaining := deadline - time.monotonic()) > 0:
        if stop is not None and stop.is_set():
            return
        producer.poll(min(remaining, 0.2))


def _await_topic(producer: Producer, bootstrap: str, topic: str, timeout_s: float = 5.0) -> None:
    """The topic must exist; a just-created one may take a moment to reach the broker's metadata."""
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = check_kafka(producer, bootstrap)  # all topics: asking for one could auto-create it
        if topic in metadata.topics and metadata.topics[topic].error is None:
            return
        if time.monotonic() > deadline:
            raise ReplayError(f"topic {topic} does not exist on {bootstrap}; create it with `traffic topics create`")
        time.sleep(0.2)


def _select(
    data: MetrLA | str | Path | None,
    start_ms: int | None,
    end_ms: int | None,
    sensors: list[str] | None,
    hdfs_options: dict[str, Any] | None = None,
) -> tuple[MetrLA, MetrLA]:
    full = data if isinstance(data, MetrLA) else load_metrla(data, hdfs_options)
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ReplayError("the time range is empty: --start must be before --end")
    chosen = full.between(start_ms, end_ms)
    if chosen.n_steps == 0:
        first, last = (format_time(int(full.times_ms[i])) for i in (0, -1)) if full.n_steps else ("-", "-")
        raise ReplayError(f"no readings in the requested time range; the data covers {first} to {last}")
    if sensors:
        chosen = chosen.only(list(dict.fromkeys(sensors)))
    return full, chosen


def replay(
    data: MetrLA | str | Path | None,
    producer_config: dict[str, Any],
    topic: str,
    speed: float = 1.0,
    start_ms: int | None = None,
    end_ms: int | None = None,
    sensors: list[str] | None = None,
    loops: int = 1,
    inject_bad: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    codec: AvroCodec | None = None,
    max_message_bytes: int = 1_048_588,
    stop: threading.Event | None = None,
    flush_timeout_s: float = 310.0,
    hdfs_options: dict[str, Any] | None = None,
    shift_ms: int = 0,
) -> ReplayReport:
    """Replay ``data`` (a :class:`MetrLA`, a path, or None for the bundled copy) to ``topic``.

    ``loops`` = 0 repeats until ``stop`` is set (or Ctrl-C). ``shift_ms`` moves every event time
    (keep it a whole number of weeks so time-of-day and day-of-week stay true). ``hdfs_options`` (``hdfs_host``,
    ``hdfs_port`` = WebHDFS, ``hdfs_user``) are for an ``hdfs://`` path. Returns what was sent;
    raises :class:`ReplayError` when Kafka or the topic is missing or records were not delivered.
    """
    if not speed > 0:
        raise ReplayError(f"the speed factor must be positive, not {speed}")
    if not 0.0 <= inject_bad <= 1.0:
        raise ReplayError(f"--inject-bad must be a fraction within [0, 1], not {inject_bad}")
    if loops < 0:
        raise ReplayError(f"loops must be >= 0 (0 = forever), not {loops}")
    full, chosen = _select(data, start_ms, end_ms, sensors, hdfs_options)
    codec = codec or AvroCodec("raw_reading")
    injector = BadRecordInjector(inject_bad, codec, known_sensor_ids(full), seed, max_message_bytes=max_message_bytes)

    deliveries = _Deliveries()
    config = {**producer_config, "delivery.report.only.error": True, "on_delivery": deliveries}
    producer = Producer(config)
    bootstrap = str(config.get("bootstrap.servers"))
    _await_topic(producer, bootstrap, topic)

    n_steps, n_sensors = chosen.speed.shape
    span_ms = int(chosen.times_ms[-1] - chosen.times_ms[0]) + chosen.step_ms
    loop_shift_ms = math.ceil(span_ms / WEEK_MS) * WEEK_MS
    keys = [sid.encode() for sid in chosen.sensor_ids]
    sensor_ids = chosen.sensor_ids
    interval_s = 0.0 if math.isinf(speed) else chosen.step_ms / 1000 / speed
    report = ReplayReport(topic=topic, sensors=n_sensors)
    bad_counts: Counter = injector.counts
    bar = tqdm(
        total=n_steps * n_sensors * loops if loops else None,
        unit="ev", unit_scale=True, disable=not progress, desc=f"replay -> {topic}", smoothing=0.1,
    )
    poll, encode = producer.poll, codec.encode
    fast = RawReadingEncoder.for_codec(codec, sensor_ids)
    started = time.monotonic()
    step_no = 0
    try:
        loop = 0
        while loops == 0 or loop < loops:
            offset_ms = shift_ms + loop * loop_shift_ms
            for i in range(n_steps):
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt
                if interval_s:
                    _pace(producer, started + step_no * interval_s, stop)
                event_ms = int(chosen.times_ms[i]) + offset_ms
                row = chosen.speed[i].tolist()
                if fast is not None:
                    values = fast.step(event_ms, chosen.speed[i])
                else:
                    values = [encode({"sensor_id": sid, "event_time": event_ms, "speed_mph": sp})
                              for sid, sp in zip(sensor_ids, row, strict=True)]
                bad_after = {
                    j: injector.make(Reading(sensor_ids[j], event_ms, row[j]), values[j])
                    for j in injector.plan(n_sensors).tolist()
                }
                for j, value in enumerate(values):
                    try:
                        produce_at(producer, topic, value, keys[j], event_ms)
                    except BufferError:  # the local queue is full: let librdkafka send, then retry
                        _send(producer, topic, keys[j], value, event_ms)
                    if j in bad_after:
                        _send(producer, topic, bad_after[j].key, bad_after[j].value, event_ms)
                poll(0)
                report.missing += row.count(0.0)
                report.readings += n_sensors
                report.steps += 1
                step_no += 1
                report.first_event_ms = event_ms if report.first_event_ms is None else report.first_event_ms
                report.last_event_ms = event_ms
                bar.set_postfix_str(format_time(event_ms), refresh=False)
                bar.update(n_sensors)
            loop += 1
            report.loops = loop
    except KeyboardInterrupt:
        report.interrupted = True
    except KafkaException as exc:
        raise ReplayError(f"cannot produce to {topic}: {exc.args[0].str() if exc.args else exc}") from None
    finally:
        bar.close()
        remaining = producer.flush(flush_timeout_s)
        report.elapsed_s = time.monotonic() - started
        report.bad = {kind: bad_counts[kind] for kind in injector.kinds if bad_counts[kind]}
        report.undelivered = remaining + deliveries.failed
    if report.undelivered:
        reason = f": {deliveries.first_error}" if deliveries.first_error else " before the flush timeout"
        raise ReplayError(f"{report.undelivered} of {report.events} records were not delivered to {topic}{reason}")
    return report


def _send(producer: Any, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
    while True:
        try:
            produce_at(producer, topic, value, key, timestamp_ms)
            return
        except BufferError:
            producer.poll(0.05)  # the local queue is full: let librdkafka send, then retry
        except KafkaException as exc:
            raise ReplayError(f"cannot produce to {topic}: {exc.args[0].str() if exc.args else exc}") from None


def format_time(ms: int | None) -> str:
    """Epoch ms as ``2012-03-01T06:00Z``."""
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")
