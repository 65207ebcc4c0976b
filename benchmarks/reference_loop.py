"""The yardstick of the streaming job: the same work, hand-written in one process.

One Python loop with confluent-kafka and the project's own pieces does what
``traffic stream`` does, record for record:

    consume traffic-raw -> validate (the job's own ValidateEventsFn) -> dead letters / events
    -> de-duplicate (first (sensor, event_time) wins) -> publish events
    -> 5-minute event-time windows (the job's speed_stats) -> publish aggregates
    -> network history (12 steps x the model's sensors) once every sensor reported a step,
       or once the slowest partition's watermark passed it
    -> features + model (the registry's bundle, one predict per poll's completed steps) -> PostProcess's
       to_prediction / to_alerts -> publish predictions and alerts
    and, as the job does unless it is told to leave them out (``scores``, ``incidents``, ``files``):
    -> score the predictions held for a step once its window closes (the job's score_rows) -> publish scores
    -> track incidents over the road graph at every step (the job's incident rules) -> publish incidents
    -> an hour's aggregates, predictions and scores as one Parquet file each once the hour is closed
       (the job's arrow_table and write_parquet_atomically)

It keeps no fault tolerance, no checkpoints and no parallelism: it is what one
process on this machine achieves, so the Beam job's rate is reported as a ratio
to it (``benchmarks/streaming_pipeline.py`` runs both on the same pre-loaded
topic in one invocation).

    .venv/bin/python benchmarks/reference_loop.py --hours 24

Exits 2 with a one-line message when Kafka is not reachable or no model is registered.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from confluent_kafka import Producer, TopicPartition  # noqa: E402

from kafka_client import make_consumer, make_producer  # noqa: E402
from ml.dataset import STEP_MS  # noqa: E402
from ml.features import HISTORY_STEPS, HORIZONS_MIN, build_features  # noqa: E402
from ml.handler import inference_threads, per_snapshot, prediction_inputs  # noqa: E402
from ml.registry import MAX_SPEED_MPH, ModelBundle  # noqa: E402
from ml.road_graph import bundled_road_links  # noqa: E402
from pipelines.tables import join_path, parquet_schema  # noqa: E402
from schemas.avro_columns import columnar_encoder  # noqa: E402
from schemas.batches import Columns, RawBatch  # noqa: E402
from schemas.codec import AvroCodec  # noqa: E402
from schemas.records import KafkaMessage  # noqa: E402
from schemas.topics import TopicSettings  # noqa: E402
from transforms.aggregate import speed_stats, window_aggregate  # noqa: E402
from transforms.incident_rules import IncidentRules, advance  # noqa: E402
from transforms.incidents import road_neighbours  # noqa: E402
from transforms.postprocess import SUDDEN_DROP_MPH, to_alerts, to_prediction  # noqa: E402
from transforms.publish import arrow_table, window_file_name, write_parquet_atomically  # noqa: E402
from transforms.score_state import PREDICTION_FIELDS, score_rows  # noqa: E402
from transforms.spine import late_to_dead_letters  # noqa: E402
from transforms.validate import ValidateEvents, event_columns, make_dead_letter, system_now_ms  # noqa: E402

__all__ = ["LoopFigures", "ReferenceLoop"]

_POLL = 10_000


@dataclass
class LoopFigures:
    """What one run of the loop did and where its time went (seconds of wall time per stage)."""

    raw: int = 0
    valid: int = 0
    dead_letters: int = 0
    aggregates: int = 0
    steps: int = 0
    predictions: int = 0
    alerts: int = 0
    scores: int = 0
    incidents: int = 0
    files: int = 0
    first_record_s: float | None = None
    last_prediction_s: float | None = None
    stage_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def elapsed_s(self) -> float:
        if self.first_record_s is None or self.last_prediction_s is None:
            return float("nan")
        return self.last_prediction_s - self.first_record_s

    def as_dict(self) -> dict[str, Any]:
        elapsed = self.elapsed_s
        return {
            "raw": self.raw, "valid": self.valid, "dead_letters": self.dead_letters, "aggregates": self.aggregates,
            "steps": self.steps, "predictions": self.predictions, "alerts": self.alerts, "scores": self.scores,
            "incidents": self.incidents, "files": self.files,
            "elapsed_s": round(elapsed, 2), "events_per_s": round(self.raw / elapsed, 1) if elapsed > 0 else None,
            "stage_s": {k: round(v, 2) for k, v in sorted(self.stage_s.items())},
        }


class ReferenceLoop:
    """Raw topic in, events/aggregates/predictions/alerts/dead letters (and scores, incidents, files) out, in one
    thread. ``output`` is the directory of the hourly files (None: no files)."""

    def __init__(self, bootstrap: str, topics: TopicSettings, bundle: ModelBundle,
                 known_sensor_ids: Sequence[str], raw_topic: str | None = None, *, scores: bool = True,
                 incidents: bool = True, output: str | None = None, file_window_s: int = 3600) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.raw_topic = raw_topic or topics.raw
        self.bundle = bundle
        self.sensor_ids = tuple(bundle.context.sensor_ids)
        self.member = {s: i for i, s in enumerate(self.sensor_ids)}
        # The job's own check with the job's defaults: the DoFn inside the ValidateEvents composite.
        self.validate = ValidateEvents(sorted(set(known_sensor_ids) | set(self.sensor_ids)))._fn
        self.validate.setup()
        self.codecs = {name: AvroCodec(name) for name in
                       ("traffic_event", "window_aggregate", "prediction", "alert", "dead_letter", "score",
                        "incident")}
        self.columnar = {name: encoder for name, codec in self.codecs.items()
                         if (encoder := columnar_encoder(codec)) is not None}
        self.figures = LoopFigures()
        self._seen: set[tuple[str, int]] = set()
        self._windows: dict[int, dict[str, list]] = defaultdict(dict)  # window start -> sensor -> [speeds, missing]
        self._history: dict[int, np.ndarray] = {}  # step -> (n_sensors,) means
        self._closed_through = -1  # the newest step already predicted: its readings now are late
        self._watermarks: dict[int, int] = {}  # partition -> newest event time; -1 until it delivered
        self.scores, self.incidents, self.output = scores, incidents, output
        self._held: dict[int, list[dict]] = defaultdict(list)  # target time -> the predictions waiting for it
        self._neighbours = road_neighbours(self.sensor_ids, bundled_road_links(self.sensor_ids))
        self._rules = IncidentRules()
        self._horizon_row = {h: k for k, h in enumerate(HORIZONS_MIN)}
        self._open: list = []  # the incidents open after the latest step
        self.file_window_ms = file_window_s * 1000
        self._schemas = {"aggregates": parquet_schema("window_aggregate"), "predictions": parquet_schema("prediction"),
                         "scores": parquet_schema("score")}
        self._file_parts: dict[int, dict[str, list]] = {}  # file window start -> output -> tables

    def _timed(self, stage: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.figures.stage_s[stage] += time.perf_counter() - started

    def _encode(self, codec: str, records: Any) -> list[bytes]:
        """The records' values (dicts or a batch): with the sinks' columnar encoder where the record type has one."""
        encoder = self.columnar.get(codec)
        if isinstance(records, Columns):
            values = encoder.encode(records) if encoder is not None else None
            return values if values is not None else self._encode(codec, records.records())
        if encoder is not None and records:
            values = encoder.encode_records(records)
            if values is not None:
                return values
        encode = self.codecs[codec].encode
        return [encode(r) for r in records]

    def _produce(self, producer: Producer, topic: str, codec: str, records: Any, key: str | None) -> None:
        started = time.perf_counter()
        values = self._encode(codec, records)
        self.figures.stage_s["encode"] += time.perf_counter() - started
        started = time.perf_counter()
        if key is None:
            keys = [None] * len(values)
        else:
            keys = records[key].tolist() if isinstance(records, Columns) else [r.get(key) for r in records]
        for k, value in zip(keys, values, strict=True):
            producer.produce(topic, value, k.encode() if isinstance(k, str) else k)
        producer.poll(0)
        self.figures.stage_s["produce"] += time.perf_counter() - started

    def _check(self, messages: list) -> tuple[list[dict], list[dict]]:
        """The poll's records as one RawBatch through the job's own validation (numpy decode included)."""
        valid, dead = [], []
        batch = RawBatch.from_messages([KafkaMessage(m.key(), m.value(), m.topic(), m.partition(), m.offset(),
                                                     m.timestamp()[1]) for m in messages])
        for out in self.validate.process(batch):
            if hasattr(out, "tag"):
                dead.append(out.value)
            else:
                valid.extend(out.value.records())
        return valid, dead

    def _dedupe(self, events: list[dict]) -> tuple[list[dict], list[dict]]:
        fresh, duplicates = [], []
        for e in events:
            key = (e["sensor_id"], e["event_time"])
            if key in self._seen:
                duplicates.append(make_dead_letter(
                    self.codecs["traffic_event"].encode(e), reason="duplicate",
                    error=f"sensor {e['sensor_id']} already reported {e['event_time']}", step="DeduplicateEvents",
                    failed_at=system_now_ms(), key=e["sensor_id"].encode()))
                continue
            self._seen.add(key)
            fresh.append(e)
        return fresh, duplicates

    def _window(self, events: list[dict]) -> list[dict]:
        """Adds events to their windows; those of an already predicted step come back as late dead letters."""
        late = []
        for e in events:
            start = e["event_time"] - e["event_time"] % STEP_MS
            if start <= self._closed_through:
                late.extend(late_to_dead_letters(event_columns(  # the job's own late dead letter
                    [e["sensor_id"]], [e["event_time"]], [math.nan if e["speed_mph"] is None else e["speed_mph"]],
                    [e["validated_at"]])))
                continue
            cell = self._windows[start].setdefault(e["sensor_id"], [[], 0])
            if e["speed_mph"] is None:
                cell[1] += 1
            else:
                cell[0].append(e["speed_mph"])
        return late

    def _ready_steps(self) -> list[int]:
        """Window starts every model sensor has reported, or that the slowest partition's watermark passed."""
        watermark = min(self._watermarks.values())
        ready = []
        for start in sorted(self._windows):
            cells = self._windows[start]
            complete = all(s in cells for s in self.sensor_ids)
            if complete or watermark >= start + STEP_MS:
                ready.append(start)
            else:
                break
        return ready

    def _close(self, start: int) -> tuple[list[dict], np.ndarray]:
        cells = self._windows.pop(start)
        means = np.full(len(self.sensor_ids), np.nan)
        aggregates = []
        for sensor, (speeds, missing) in cells.items():
            stats = speed_stats(speeds, missing)
            aggregates.append(window_aggregate(sensor, start, start + STEP_MS, stats, "ON_TIME"))
            i = self.member.get(sensor)
            if i is not None and stats["mean"] is not None:
                means[i] = stats["mean"]
        return aggregates, means

    def _speeds(self, step_ms: int) -> np.ndarray:
        """The (HISTORY_STEPS, N) history ending at ``step_ms`` (NaN where a step or a sensor is missing)."""
        speeds = np.full((HISTORY_STEPS, len(self.sensor_ids)), np.nan)
        for row in range(HISTORY_STEPS):
            known = self._history.get(step_ms - (HISTORY_STEPS - 1 - row) * STEP_MS)
            if known is not None:
                speeds[row] = known
        return speeds

    def _forecast(self, steps: list[tuple[int, np.ndarray]]) -> list[tuple[list[dict], list[dict]]]:
        """Every (step, history) closed by one poll in one model call (as the job's handler predicts a batch)."""
        started = time.perf_counter()
        x = np.concatenate([build_features(speeds, step_ms, self.bundle.context) for step_ms, speeds in steps])
        self.figures.stage_s["features"] += time.perf_counter() - started
        started = time.perf_counter()
        with inference_threads():  # as the job's handler predicts
            predicted = per_snapshot(self.bundle.predict(x), len(self.sensor_ids))
        self.figures.stage_s["model"] += time.perf_counter() - started
        started = time.perf_counter()
        out = []
        for (step_ms, speeds), part in zip(steps, predicted, strict=True):
            rows = prediction_inputs({"speeds": speeds, "step_ms": step_ms}, part, self.bundle)
            now = system_now_ms()
            predictions, alerts = [], []
            for row in rows:
                p = to_prediction(row, MAX_SPEED_MPH, self.bundle.coverage, now)
                predictions.append(p)
                alerts.extend(to_alerts(p, row["current_speed_mph"], SUDDEN_DROP_MPH))
            out.append((predictions, alerts))
        self.figures.stage_s["postprocess"] += time.perf_counter() - started
        return out

    def _score(self, start: int, means: np.ndarray) -> Any:
        """The predictions held for ``start`` against its window's means (SCORED or MISSING), as a score batch."""
        held = self._held.pop(start, None)
        if not held:
            return None
        rows = {name: np.array([p[name] for p in held]) for name in PREDICTION_FIELDS}
        actual = means[np.fromiter((self.member[p["sensor_id"]] for p in held), np.int64, len(held))]
        return score_rows(rows, actual, system_now_ms())

    def _hold(self, predictions: list[dict]) -> None:
        for p in predictions:
            self._held[p["target_time"]].append(p)

    def _track(self, step_ms: int, means: np.ndarray, predictions: list[dict]) -> list[dict]:
        """This step's incident records (the job's rules over the road graph)."""
        predicted = np.full((len(HORIZONS_MIN), len(self.sensor_ids)), np.nan)
        for p in predictions:
            predicted[self._horizon_row[p["horizon_min"]], self.member[p["sensor_id"]]] = p["predicted_speed_mph"]
        model = predictions[0]["model_version"] if predictions else ""
        records, self._open = advance(self._open, step_ms, means, predicted, self.sensor_ids, HORIZONS_MIN,
                                      self._neighbours, self._rules, model)
        return records

    def _file(self, start: int, parts: dict[str, Any]) -> None:
        """Adds a step's records to its hour's files; writes the hours before it (closed once a later step is)."""
        assert self.output is not None
        window = start - start % self.file_window_ms
        for name, element in parts.items():  # records (dicts) or a score batch
            if element is not None and len(element):
                schema = self._schemas[name]
                table = arrow_table(element, schema) if isinstance(element, Columns) else pa.Table.from_pylist(
                    element, schema=schema)
                self._file_parts.setdefault(window, {}).setdefault(name, []).append(table)
        for done in sorted(w for w in self._file_parts if w < window):
            for name, tables in self._file_parts.pop(done).items():
                file = window_file_name("part", done, done + self.file_window_ms, 0)
                write_parquet_atomically(pa.concat_tables(tables), join_path(self.output, name), file)
                self.figures.files += 1

    def run(self, until_step_ms: int, expected_raw: int, timeout_s: float = 900.0,
            progress: Callable[[LoopFigures], None] | None = None) -> LoopFigures:
        """Processes the raw topic from its start until ``until_step_ms`` has been predicted."""
        consumer = make_consumer(self.bootstrap, f"reference-{uuid.uuid4().hex}")
        producer = make_producer(self.bootstrap, **{"queue.buffering.max.messages": 1_000_000})
        t = self.topics
        f = self.figures
        try:
            parts = consumer.list_topics(self.raw_topic, timeout=10).topics[self.raw_topic].partitions
            consumer.assign([TopicPartition(self.raw_topic, p, 0) for p in parts])
            self._watermarks = dict.fromkeys(parts, -1)
            deadline = time.monotonic() + timeout_s
            last_report = time.monotonic()
            while f.last_prediction_s is None or f.raw < expected_raw:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the reference loop did not finish within {timeout_s:.0f} s")
                batch = self._timed("consume", lambda: consumer.consume(_POLL, timeout=0.5))
                messages = [m for m in batch if m.error() is None]
                if not messages:
                    continue
                if f.first_record_s is None:
                    f.first_record_s = time.time()
                f.raw += len(messages)
                for m in messages:
                    ts = m.timestamp()[1]
                    if ts > self._watermarks.get(m.partition(), -1):
                        self._watermarks[m.partition()] = ts
                valid, dead = self._timed("validate", lambda msgs=messages: self._check(msgs))
                fresh, dupes = self._timed("dedupe", lambda v=valid: self._dedupe(v))
                dead.extend(dupes)
                f.valid += len(fresh)
                self._produce(producer, t.events, "traffic_event", fresh, "sensor_id")
                dead.extend(self._timed("window", lambda fr=fresh: self._window(fr)))
                f.dead_letters += len(dead)
                if dead:
                    self._produce(producer, t.dead_letters, "dead_letter", dead, "key")
                closed = []
                for start in self._timed("window", self._ready_steps):
                    aggregates, means = self._timed("window", lambda s=start: self._close(s))
                    self._closed_through = start
                    self._history[start] = means
                    closed.append((start, aggregates, means, self._speeds(start)))
                    self._history.pop(start - HISTORY_STEPS * STEP_MS, None)
                forecasts = self._forecast([(start, speeds) for start, _, _, speeds in closed]) if closed else []
                for (start, aggregates, means, _), (predictions, alerts) in zip(closed, forecasts, strict=True):
                    f.aggregates += len(aggregates)
                    self._produce(producer, t.aggregates, "window_aggregate", aggregates, "sensor_id")
                    scores = self._timed("scores", lambda s=start, m=means: self._score(s, m)) if self.scores else None
                    if scores is not None:
                        f.scores += len(scores)
                        self._produce(producer, t.scores, "score", scores, "sensor_id")
                    f.steps += 1
                    f.predictions += len(predictions)
                    f.alerts += len(alerts)
                    self._produce(producer, t.predictions, "prediction", predictions, "sensor_id")
                    self._produce(producer, t.alerts, "alert", alerts, "sensor_id")
                    if self.scores:
                        self._timed("scores", lambda ps=predictions: self._hold(ps))
                    if self.incidents:
                        incidents = self._timed("incidents", lambda s=start, m=means, ps=predictions:
                                                self._track(s, m, ps))
                        f.incidents += len(incidents)
                        self._produce(producer, t.incidents, "incident", incidents, "incident_id")
                    if self.output is not None:
                        self._timed("files", lambda s=start, a=aggregates, ps=predictions, sc=scores: self._file(
                            s, {"aggregates": a, "predictions": ps, "scores": sc}))
                    if start >= until_step_ms:
                        f.last_prediction_s = time.time()
                if progress is not None and time.monotonic() - last_report >= 5:
                    progress(f)
                    last_report = time.monotonic()
            self._timed("produce", lambda: producer.flush(60))
            f.last_prediction_s = time.time()  # the last prediction is delivered, as the job's figure counts it
            return f
        finally:
            consumer.close()
            producer.flush(10)
            producer.close()


def main(argv: list[str] | None = None) -> int:
    from confluent_kafka.admin import NewTopic

    from config.settings import PlatformSettings, default_registry_root
    from kafka_client import KafkaUnavailableError, admin_client, producer_config
    from ml.dataset import load_metrla, network_sensor_ids
    from ml.registry import ModelRegistry
    from pipelines.replay import replay

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="hours of METR-LA pre-loaded (all sensors)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of each fresh topic")
    parser.add_argument("--registry", help="model registry root (default: <work>/models)")
    args = parser.parse_args(argv)
    settings = PlatformSettings()
    bootstrap = settings.bootstrap_servers
    try:
        admin = admin_client(bootstrap)  # the project's one reachability check
    except KafkaUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        bundle = ModelRegistry(args.registry or default_registry_root()).load()
    except Exception as exc:  # noqa: BLE001 - one line, whatever the registry says
        print(f"error: no model to run: {exc}", file=sys.stderr)
        return 2
    data = load_metrla()
    end_ms = int(data.times_ms[-1]) + STEP_MS
    preload = data.between(end_ms - int(args.hours * 3600_000), end_ms).only(list(bundle.context.sensor_ids))
    run_id = uuid.uuid4().hex[:8]
    names = {f: f"ref-loop-{f.replace('_', '-')}-{run_id}" for f in TopicSettings.model_fields
             if f in ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "scores", "incidents")}
    out_dir = tempfile.mkdtemp(prefix="ref-loop-")
    for future in admin.create_topics([NewTopic(n, num_partitions=args.partitions, replication_factor=1,
                                                config={"retention.ms": "-1"}) for n in names.values()],
                                      operation_timeout=30).values():
        future.result(timeout=60)
    try:
        sent = replay(preload, producer_config(bootstrap), names["raw"], speed=float("inf"), progress=False)
        print(f"pre-loaded {sent.readings:,} readings in {sent.elapsed_s:.1f} s", flush=True)
        loop = ReferenceLoop(bootstrap, TopicSettings(**names), bundle, network_sensor_ids(), output=out_dir)
        figures = loop.run(int(preload.times_ms[-1]), sent.readings, progress=lambda f: print(
            f"  {f.raw:,} raw, {f.steps} steps predicted", flush=True))
    finally:
        for future in admin.delete_topics(list(names.values()), operation_timeout=30).values():
            try:
                future.result(timeout=60)
            except Exception:  # noqa: BLE001, S110 - best effort at the end
                pass
        shutil.rmtree(out_dir, ignore_errors=True)
    print(json.dumps(figures.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
