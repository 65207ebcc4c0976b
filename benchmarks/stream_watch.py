"""The streaming benchmark's watcher: when each step's predictions (and, when paced, its events and aggregates)
are complete on the output topics, read by a process of its own (``watch_process``) and timed by the broker's
append times where the topics carry them (:data:`WATCHED_TOPIC_CONFIG`)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, TopicPartition

from schemas.codec import AvroCodec, wire_header
from schemas.topics import TopicSettings

__all__ = ["STAGES", "WATCHED_FIELDS", "WATCHED_TOPIC_CONFIG", "Arrivals", "PredictionKeys", "Watcher", "arrived_s",
           "predicted_per_target", "score_progress",
           "stage_start_offsets", "take_reports", "watch", "watch_process"]

# The topics the watcher reads have the broker stamp each record with its append time: a step's arrival is when
# its last record reached Kafka, not when this process got round to it (a burst of 180,000 predictions at the end
# of a catch-up took the watcher about a second to read).
WATCHED_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}
WATCHED_FIELDS = ("events", "aggregates", "predictions", "scores")

# The prediction schema's leading fields, which PredictionKeys reads without decoding the rest.
_KEY_FIELDS = ("sensor_id", "event_time", "target_time", "horizon_min")


@dataclass
class Arrivals:
    """What the watcher thread saw: first event, and per step the (sensor, horizon) set and completion time."""

    expected_per_step: int
    sensors: int = 0
    ready_s: float | None = None  # the watcher's consumer has fetched once: what it sees from then is timely
    first_event_s: float | None = None
    seen: dict[int, set] = field(default_factory=dict)
    complete_s: dict[int, float] = field(default_factory=dict)
    # Per target time: how many scores have arrived, and when the last of them did (the backlog's deferred work).
    scored: dict[int, list] = field(default_factory=dict)
    # The paced phase's stage breakdown: per stage topic, per step, the sensors seen and when all had arrived.
    stage_parts: list = field(default_factory=list)
    stage_seen: dict[str, dict[int, set]] = field(default_factory=dict)
    stage_complete_s: dict[str, dict[int, float]] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


# How long the watcher waits for every events partition's first record before it takes the earliest seen.
FIRST_EVENT_WAIT_S = 0.5
STAGES = {"events": ("traffic_event", "event_time"), "aggregates": ("window_aggregate", "window_start")}


def _millis(value) -> int:
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


def arrived_s(message, now: float) -> float:
    """When ``message`` reached the broker (its append time, on a topic stamped so), else ``now``."""
    kind, at_ms = message.timestamp()
    return at_ms / 1000 if kind == TIMESTAMP_LOG_APPEND_TIME else now


def _note_stage(arrivals: Arrivals, stage: str, record: dict, now: float) -> None:
    """A validated event or an aggregate of a paced step: the step's stage is complete once every sensor is in."""
    step = _millis(record[STAGES[stage][1]])
    seen = arrivals.stage_seen.setdefault(stage, {}).setdefault(step, set())
    seen.add(record["sensor_id"])
    done = arrivals.stage_complete_s.setdefault(stage, {})
    if len(seen) >= arrivals.sensors and step not in done:
        done[step] = now


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """An Avro int or long (zig-zag varint) at ``pos``: (value, position after it)."""
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


class PredictionKeys:
    """A prediction's (sensor, step in ms, horizon), read from its first four fields when it carries the codec's
    own schema: about 1.5 us a record, where decoding all eleven fields takes about 10 us (ad-hoc timings; a
    watcher that fell behind the job made the job's drain look up to 2 s longer than it was). Any other record is
    decoded whole."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        leading = tuple(f["name"] for f in codec.schema["fields"][:len(_KEY_FIELDS)])
        self.header = wire_header(codec.schema_id) if leading == _KEY_FIELDS else None

    def __call__(self, value: bytes) -> tuple[str, int, int]:
        if self.header is not None and value[:5] == self.header:
            length, pos = _varint(value, 5)
            sensor = value[pos:pos + length].decode()
            step_ms, pos = _varint(value, pos + length)
            _, pos = _varint(value, pos)
            horizon, _ = _varint(value, pos)
            return sensor, step_ms, horizon
        record = self.codec.decode(value)
        return record["sensor_id"], _millis(record["event_time"]), record["horizon_min"]


def stage_start_offsets(bootstrap: str, topics: TopicSettings) -> list[TopicPartition]:
    """The events and aggregates topics' current ends: the paced phase's stage records come after them."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-ends-{uuid.uuid4().hex}"})
    try:
        parts = []
        for topic in (topics.events, topics.aggregates):
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                parts.append(TopicPartition(topic, p, high))
        return parts
    finally:
        consumer.close()


def watch(bootstrap: str, topics: TopicSettings, arrivals: Arrivals, stop: threading.Event) -> None:
    """Records the wall time of the first event and of each step's complete set of predictions.

    Once ``arrivals.stage_parts`` is set (the paced phase), it also records when each step's
    validated events and aggregates were complete: the latency broken down by stage.
    """
    prediction_key = PredictionKeys(AvroCodec("prediction"))
    score_key = PredictionKeys(AvroCodec("score"))  # the same four leading fields
    stage_codecs = {topics.events: ("events", AvroCodec(STAGES["events"][0])),
                    topics.aggregates: ("aggregates", AvroCodec(STAGES["aggregates"][0]))}
    staged = False
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-watch-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    assigned = {topics.events: 0, topics.predictions: 0, topics.scores: 0}
    for topic in assigned:
        assigned[topic] = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    pred_parts = [TopicPartition(topic, p, 0) for topic in (topics.predictions, topics.scores)
                  for p in range(assigned[topic])]
    consumer.assign([TopicPartition(topics.events, p, 0) for p in range(assigned[topics.events])] + pred_parts)
    last_load = 0.0
    first_events: dict[int, float] = {}  # per events partition, its first record's append time
    first_seen = 0.0
    try:
        consumer.consume(1, timeout=1.0)  # connected and fetching (offset 0 stays assigned: nothing is lost)
        consumer.assign([TopicPartition(topics.events, p, 0) for p in range(assigned[topics.events])] + pred_parts)
        arrivals.ready_s = time.time()
        while not stop.is_set():
            if arrivals.stage_parts and not staged:
                reading = consumer.position(consumer.assignment())  # the predictions read on where they are
                consumer.assign([TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)) for tp in reading
                                 if tp.topic in (topics.predictions, topics.scores)] + arrivals.stage_parts)
                staged = True
            messages = consumer.consume(500, timeout=0.05)
            now = time.time()
            if first_events and arrivals.first_event_s is None and (
                    len(first_events) == assigned[topics.events] or now - first_seen >= FIRST_EVENT_WAIT_S):
                # The earliest append among the partitions' first events: the first one read may be another's.
                arrivals.first_event_s = min(first_events.values())
                consumer.assign(pred_parts)  # the events' content is not needed
            if now - last_load >= 5:
                arrivals.loads.append(os.getloadavg()[0])
                last_load = now
            for message in messages:
                if message.error() is not None:
                    continue
                if staged and message.topic() in stage_codecs:
                    stage, stage_codec = stage_codecs[message.topic()]
                    with arrivals.lock:
                        _note_stage(arrivals, stage, stage_codec.decode(message.value()), arrived_s(message, now))
                    continue
                if message.topic() == topics.events:
                    if arrivals.first_event_s is None:
                        first_events.setdefault(message.partition(), arrived_s(message, now))
                        first_seen = first_seen or now
                    continue
                if message.topic() == topics.scores:
                    _, step, horizon = score_key(message.value())
                    with arrivals.lock:
                        count = arrivals.scored.setdefault(step + horizon * 60_000, [0, 0.0])
                        count[0] += 1
                        count[1] = max(count[1], arrived_s(message, now))
                    continue
                sensor, step, horizon = prediction_key(message.value())
                with arrivals.lock:
                    keys = arrivals.seen.setdefault(step, set())
                    keys.add((sensor, horizon))
                    if len(keys) >= arrivals.expected_per_step and step not in arrivals.complete_s:
                        arrivals.complete_s[step] = arrived_s(message, now)
    finally:
        consumer.close()


def watch_process(bootstrap: str, topics: TopicSettings, expected_per_step: int, sensors: int,
                   stage_parts: multiprocessing.Queue, out: multiprocessing.Queue, stop: threading.Event) -> None:
    """:func:`watch` in a process of its own; what it sees is sent to the benchmark as it arrives.

    With a LOOPBACK worker the job's Python SDK harness runs in the benchmark's process: a watcher thread there,
    decoding every prediction, would take the job's interpreter lock from it.
    """
    seen = Arrivals(expected_per_step=expected_per_step, sensors=sensors)
    thread = threading.Thread(target=watch, args=(bootstrap, topics, seen, stop), daemon=True)
    thread.start()
    sent: dict[str, set] = {"complete": set(), "events": set(), "aggregates": set()}
    sent_scored: dict[int, int] = {}
    sent_ready, sent_first, sent_loads = False, False, 0
    while thread.is_alive():
        if not stage_parts.empty():
            seen.stage_parts = [TopicPartition(*part) for part in stage_parts.get()]
        with seen.lock:
            if seen.ready_s is not None and not sent_ready:
                out.put(("ready", None, seen.ready_s))
                sent_ready = True
            if seen.first_event_s is not None and not sent_first:
                out.put(("first", None, seen.first_event_s))
                sent_first = True
            for step, at in seen.complete_s.items():
                if step not in sent["complete"]:
                    out.put(("complete", step, at))
                    sent["complete"].add(step)
            for stage, done in seen.stage_complete_s.items():
                for step, at in done.items():
                    if step not in sent[stage]:
                        out.put((stage, step, at))
                        sent[stage].add(step)
            for target, (count, at) in seen.scored.items():
                if sent_scored.get(target) != count:
                    out.put(("scored", target, (count, at)))
                    sent_scored[target] = count
            for load in seen.loads[sent_loads:]:
                out.put(("load", None, load))
            sent_loads = len(seen.loads)
        time.sleep(0.01)


def predicted_per_target(arrivals: Arrivals, horizons: tuple[int, ...]) -> dict[int, int]:
    """How many predictions target each time (step + horizon), from the steps seen complete (every sensor at
    every horizon)."""
    per_horizon = arrivals.expected_per_step // len(horizons)
    counts: dict[int, int] = {}
    with arrivals.lock:
        for step in arrivals.complete_s:
            for horizon in horizons:
                target = step + horizon * 60_000
                counts[target] = counts.get(target, 0) + per_horizon
    return counts


def score_progress(arrivals: Arrivals, through_ms: int, horizons: tuple[int, ...]) -> dict[int, tuple[int, int, float]]:
    """Per target up to ``through_ms`` that predictions seen complete aim at: (predictions, scores arrived, when
    the last of those scores arrived)."""
    wanted = {t: n for t, n in predicted_per_target(arrivals, horizons).items() if t <= through_ms}
    with arrivals.lock:
        return {t: (n, *arrivals.scored.get(t, (0, 0.0))) for t, n in wanted.items()}


def take_reports(out: multiprocessing.Queue, arrivals: Arrivals) -> None:
    """The benchmark's side of :func:`watch_process`: its reports into ``arrivals``."""
    while (report := out.get()) is not None:
        what, step, value = report
        with arrivals.lock:
            if what == "ready":
                arrivals.ready_s = value
            elif what == "first":
                arrivals.first_event_s = value
            elif what == "complete":
                arrivals.complete_s[step] = value
            elif what == "load":
                arrivals.loads.append(value)
            elif what == "scored":
                arrivals.scored[step] = list(value)
            else:
                arrivals.stage_complete_s.setdefault(what, {})[step] = value


class Watcher:
    """:func:`watch_process` started on ``topics``, its reports taken into ``arrivals`` by a thread here.

    The job and the reference loop are both timed by one of these: from the first validated event to the last
    step's last prediction, as the broker stamped them (:data:`WATCHED_TOPIC_CONFIG`), so the two rates share a
    yardstick.
    """

    def __init__(self, bootstrap: str, topics: TopicSettings, expected_per_step: int, sensors: int) -> None:
        self.arrivals = Arrivals(expected_per_step=expected_per_step, sensors=sensors)
        spawn = multiprocessing.get_context("spawn")
        self.stage_parts, self._reports, self._stop = spawn.Queue(), spawn.Queue(), spawn.Event()
        self._process = spawn.Process(target=watch_process, daemon=True,
                                      args=(bootstrap, topics, expected_per_step, sensors, self.stage_parts,
                                            self._reports, self._stop))
        self._process.start()
        threading.Thread(target=take_reports, args=(self._reports, self.arrivals), daemon=True).start()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until the watcher's consumer is fetching: what is produced from then on is seen as it arrives."""
        deadline = time.monotonic() + timeout_s
        while self.arrivals.ready_s is None:
            if time.monotonic() > deadline or not self._process.is_alive():
                raise RuntimeError(f"the watcher was not reading within {timeout_s:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._process.join(timeout=10)
        self._reports.put(None)
