"""Throughput and end-to-end latency of the streaming job (``traffic stream``) on the real Kafka.

Two phases, one job, fresh uniquely named topics (deleted at the end):

1. Sustained throughput: the raw topic is pre-loaded with ``--hours`` of
   METR-LA (all 207 sensors, ``replay`` at ``speed=inf``), then the job starts
   reading from the earliest offset. Start-up = first validated event on the
   events topic - submission; events/s = readings / (arrival of the last step's
   last prediction - first validated event).
   Unless ``--no-reference``, the hand-written single-process loop of
   ``benchmarks/reference_loop.py`` first does the same work on the same
   pre-loaded topic (into its own output topics), and the job's events/s is
   reported as a ratio to the loop's.
2. Latency at a paced speed: with the job caught up, the following steps are
   produced one at a time (207 RawReadings, Kafka timestamp = event time,
   flush) every ``--step-interval-s``; latency = arrival of the step's last
   prediction (sensors x 3 horizons, de-duplicated) - acknowledgement of the
   step's last reading. The first ``--warmup-steps`` are left out.

    .venv/bin/python benchmarks/streaming_pipeline.py --runner flink
    .venv/bin/python benchmarks/streaming_pipeline.py --runner prism --hours 24 --steps 20

Exits 2 with a one-line message when Kafka (or, for Flink, the REST API or the
job server) is not reachable. The load average is sampled during the run
(other work may share the machine).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import apache_beam as beam  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from benchmarks.reference_loop import ReferenceLoop  # noqa: E402
from config.settings import PlatformSettings, default_registry_root  # noqa: E402
from kafka_client import KafkaUnavailableError, admin_client, producer_config  # noqa: E402
from ml.dataset import STEP_MS, load_metrla, network_sensor_ids  # noqa: E402
from ml.features import HORIZONS_MIN  # noqa: E402
from ml.registry import ModelRegistry  # noqa: E402
from pipelines.replay import replay  # noqa: E402
from pipelines.streaming import StreamingConfig, build_pipeline  # noqa: E402
from runners.flink_jobs import cancel_flink_jobs  # noqa: E402
from runners.presets import pipeline_options  # noqa: E402
from schemas.codec import AvroCodec  # noqa: E402
from schemas.topics import TopicSettings  # noqa: E402

TOPIC_FIELDS = ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "incidents", "scores")


class ServiceDown(Exception):
    """A platform service the benchmark needs is not reachable."""


@dataclass
class Arrivals:
    """What the watcher thread saw: first event, and per step the (sensor, horizon) set and completion time."""

    expected_per_step: int
    sensors: int = 0
    first_event_s: float | None = None
    seen: dict[int, set] = field(default_factory=dict)
    complete_s: dict[int, float] = field(default_factory=dict)
    # The paced phase's stage breakdown: per stage topic, per step, the sensors seen and when all had arrived.
    stage_parts: list = field(default_factory=list)
    stage_seen: dict[str, dict[int, set]] = field(default_factory=dict)
    stage_complete_s: dict[str, dict[int, float]] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def check_services(runner: str, settings: PlatformSettings) -> None:
    try:
        admin_client(settings.bootstrap_servers)
    except KafkaUnavailableError as exc:
        raise ServiceDown(str(exc)) from None
    if runner != "flink":
        return
    import httpx

    try:
        httpx.get(f"{settings.flink_rest_url}/overview", timeout=5).raise_for_status()
    except Exception:  # noqa: BLE001
        raise ServiceDown(f"the Flink REST API at {settings.flink_rest_url} is not reachable "
                          "(start it with `traffic platform up flink`)") from None
    try:
        socket.create_connection((settings.host, settings.job_server_port), timeout=5).close()
    except OSError:
        raise ServiceDown(f"the Beam job server at {settings.host}:{settings.job_server_port} is not reachable "
                          "(start it with `traffic platform up jobserver`)") from None


def create_topics(admin: AdminClient, run_id: str, partitions: int, prefix: str = "bench-stream") -> TopicSettings:
    names = {f: f"{prefix}-{f.replace('_', '-')}-{run_id}" for f in TOPIC_FIELDS}
    new = [NewTopic(n, num_partitions=partitions, replication_factor=1, config={"retention.ms": "-1"})
           for n in names.values()]
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result(timeout=60)
    return TopicSettings(**names)


def delete_topics(admin: AdminClient, topics: TopicSettings) -> None:
    for future in admin.delete_topics([getattr(topics, f) for f in TOPIC_FIELDS], operation_timeout=30).values():
        try:
            future.result(timeout=60)
        except Exception:  # noqa: BLE001, S110 - best effort at the end
            pass


STAGES = {"events": ("traffic_event", "event_time"), "aggregates": ("window_aggregate", "window_start")}


def _millis(value) -> int:
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


def _note_stage(arrivals: Arrivals, stage: str, record: dict, now: float) -> None:
    """A validated event or an aggregate of a paced step: the step's stage is complete once every sensor is in."""
    step = _millis(record[STAGES[stage][1]])
    seen = arrivals.stage_seen.setdefault(stage, {}).setdefault(step, set())
    seen.add(record["sensor_id"])
    done = arrivals.stage_complete_s.setdefault(stage, {})
    if len(seen) >= arrivals.sensors and step not in done:
        done[step] = now


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
    codec = AvroCodec("prediction")
    stage_codecs = {topics.events: ("events", AvroCodec(STAGES["events"][0])),
                    topics.aggregates: ("aggregates", AvroCodec(STAGES["aggregates"][0]))}
    staged = False
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-watch-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    assigned = {topics.events: 0, topics.predictions: 0}
    for topic in assigned:
        assigned[topic] = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    pred_parts = [TopicPartition(topics.predictions, p, 0) for p in range(assigned[topics.predictions])]
    consumer.assign([TopicPartition(topics.events, p, 0) for p in range(assigned[topics.events])] + pred_parts)
    last_load = 0.0
    try:
        while not stop.is_set():
            if arrivals.stage_parts and not staged:
                reading = consumer.position(consumer.assignment())  # the predictions read on where they are
                consumer.assign([TopicPartition(tp.topic, tp.partition, max(tp.offset, 0))
                                 for tp in reading if tp.topic == topics.predictions] + arrivals.stage_parts)
                staged = True
            messages = consumer.consume(500, timeout=0.05)
            now = time.time()
            if now - last_load >= 5:
                arrivals.loads.append(os.getloadavg()[0])
                last_load = now
            for message in messages:
                if message.error() is not None:
                    continue
                if staged and message.topic() in stage_codecs:
                    stage, stage_codec = stage_codecs[message.topic()]
                    with arrivals.lock:
                        _note_stage(arrivals, stage, stage_codec.decode(message.value()), now)
                    continue
                if message.topic() == topics.events:
                    if arrivals.first_event_s is None:
                        arrivals.first_event_s = now
                        consumer.assign(pred_parts)  # the events' content is not needed
                    continue
                record = codec.decode(message.value())
                step = _millis(record["event_time"])
                with arrivals.lock:
                    keys = arrivals.seen.setdefault(step, set())
                    keys.add((record["sensor_id"], record["horizon_min"]))
                    if len(keys) >= arrivals.expected_per_step and step not in arrivals.complete_s:
                        arrivals.complete_s[step] = now
    finally:
        consumer.close()


def _watch_process(bootstrap: str, topics: TopicSettings, expected_per_step: int, sensors: int,
                   stage_parts: multiprocessing.Queue, out: multiprocessing.Queue, stop: threading.Event) -> None:
    """:func:`watch` in a process of its own; what it sees is sent to the benchmark as it arrives.

    With a LOOPBACK worker the job's Python SDK harness runs in the benchmark's process: a watcher thread there,
    decoding every prediction, would take the job's interpreter lock from it.
    """
    seen = Arrivals(expected_per_step=expected_per_step, sensors=sensors)
    thread = threading.Thread(target=watch, args=(bootstrap, topics, seen, stop), daemon=True)
    thread.start()
    sent: dict[str, set] = {"complete": set(), "events": set(), "aggregates": set()}
    sent_first, sent_loads = False, 0
    while thread.is_alive():
        if not stage_parts.empty():
            seen.stage_parts = [TopicPartition(*part) for part in stage_parts.get()]
        with seen.lock:
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
            for load in seen.loads[sent_loads:]:
                out.put(("load", None, load))
            sent_loads = len(seen.loads)
        time.sleep(0.01)


def _take_reports(out: multiprocessing.Queue, arrivals: Arrivals) -> None:
    """The benchmark's side of :func:`_watch_process`: its reports into ``arrivals``."""
    while (report := out.get()) is not None:
        what, step, value = report
        with arrivals.lock:
            if what == "first":
                arrivals.first_event_s = value
            elif what == "complete":
                arrivals.complete_s[step] = value
            elif what == "load":
                arrivals.loads.append(value)
            else:
                arrivals.stage_complete_s.setdefault(what, {})[step] = value


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def platform_pids(settings: PlatformSettings) -> dict[str, int]:
    """The local platform's processes (Kafka, Flink's JobManager and TaskManager, the job server) by name."""
    pids = {}
    for pid_file in sorted(settings.run_dir.glob("*.pid")):
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if Path(f"/proc/{pid}").exists():
            pids[pid_file.stem] = pid
    return pids


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a service's PID file may name the script that started its JVM)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], ()))
    return tree


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process with its descendants."""
    out = {}
    for name, pid in pids.items():
        total = 0.0
        for member in _tree(pid):
            try:
                total += _cpu_s(member)
            except OSError:
                continue
        out[name] = total
    return out


class RssSampler(threading.Thread):
    """The resident set of one process, sampled every 0.5 s until :meth:`stop`: start, peak and end, in MB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = [_rss_mb(pid)]
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.samples.append(_rss_mb(self.pid))

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.join(timeout=5)
        self.samples.append(_rss_mb(self.pid))
        return {"start_mb": round(self.samples[0], 1), "peak_mb": round(max(self.samples), 1),
                "end_mb": round(self.samples[-1], 1)}


def wait_for(predicate, timeout_s: float, what: str, failure: list) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if failure:
            raise RuntimeError(f"the streaming job failed: {failure[0]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def paced_steps(bootstrap: str, topic: str, data, interval_s: float) -> dict[int, float]:
    """Produces each step (all sensors) then flushes; the wall time its last record was acknowledged."""
    codec = AvroCodec("raw_reading")
    acked: dict[int, float] = {}
    last_ack = [0.0]

    def on_delivery(err, _msg) -> None:
        if err is not None:
            raise RuntimeError(f"delivery failed: {err.str()}")
        last_ack[0] = time.time()

    producer = Producer(producer_config(bootstrap, linger_ms=0, on_delivery=on_delivery))
    keys = [s.encode() for s in data.sensor_ids]
    started = time.monotonic()
    for i in range(data.n_steps):
        while (remaining := started + i * interval_s - time.monotonic()) > 0:
            time.sleep(min(remaining, 0.2))
        event_ms = int(data.times_ms[i])
        for key, sid, speed in zip(keys, data.sensor_ids, data.speed[i].tolist(), strict=True):
            value = codec.encode({"sensor_id": sid, "event_time": event_ms, "speed_mph": speed})
            producer.produce(topic, value, key, timestamp=event_ms)
        if producer.flush(30) != 0:
            raise RuntimeError(f"step {i} was not delivered within 30 s")
        acked[event_ms] = last_ack[0]
    return acked


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def stage_medians(arrivals: Arrivals, acked: dict[int, float], steps: list[int]) -> dict[str, float | None]:
    """Per stage, the median time from a step's last reading acknowledged to that stage having all its sensors."""
    medians: dict[str, float | None] = {}
    with arrivals.lock:
        for stage in STAGES:
            done = arrivals.stage_complete_s.get(stage, {})
            values = [done[s] - acked[s] for s in steps if s in done]
            medians[stage] = round(statistics.median(values), 3) if values else None
    return medians


def run(args: argparse.Namespace) -> dict:
    settings = PlatformSettings()
    check_services(args.runner, settings)
    bootstrap = settings.bootstrap_servers
    registry = args.registry or default_registry_root()
    sensor_ids = tuple(ModelRegistry(registry).load().context.sensor_ids)
    total_steps = args.warmup_steps + args.steps
    data = load_metrla()
    # The paced steps are the data's last ones (validation/test period); the pre-load comes right before them.
    paced_start_ms = int(data.times_ms[-1]) + STEP_MS - total_steps * STEP_MS
    preload = data.between(paced_start_ms - int(args.hours * 3600_000), paced_start_ms).only(list(sensor_ids))
    paced = data.between(paced_start_ms, None).only(list(sensor_ids))

    admin = admin_client(bootstrap)
    run_id = uuid.uuid4().hex[:8]
    topics = create_topics(admin, run_id, args.partitions)
    job_name = f"bench-stream-{args.runner}-{run_id}"
    out_dir = tempfile.mkdtemp(prefix="stream-bench-")
    arrivals = Arrivals(expected_per_step=len(sensor_ids) * len(HORIZONS_MIN), sensors=len(sensor_ids))
    stop, failure, cancelled = threading.Event(), [], threading.Event()
    result = None
    reference = None
    watcher = None
    loads = [os.getloadavg()[0]]
    try:
        sent = replay(preload, producer_config(bootstrap), topics.raw, speed=float("inf"), progress=False)
        print(f"pre-loaded {sent.readings:,} readings ({sent.steps} steps x {sent.sensors} sensors) "
              f"in {sent.elapsed_s:.1f} s", flush=True)
        if args.reference:
            reference = run_reference(admin, bootstrap, topics, registry, run_id, args, sent.readings,
                                      int(preload.times_ms[-1]))
        spawn = multiprocessing.get_context("spawn")
        stage_parts, reports, stop = spawn.Queue(), spawn.Queue(), spawn.Event()
        watcher = spawn.Process(target=_watch_process, daemon=True,
                                args=(bootstrap, topics, arrivals.expected_per_step, arrivals.sensors, stage_parts,
                                      reports, stop))
        watcher.start()
        threading.Thread(target=_take_reports, args=(reports, arrivals), daemon=True).start()
        cfg = StreamingConfig(bootstrap_servers=bootstrap, topics=topics, sensor_ids=sensor_ids, registry=registry,
                              known_sensor_ids=network_sensor_ids(), output=out_dir, group_id=job_name,
                              start="earliest")
        flags = [f"--job_name={job_name}", *args.beam_args]
        pipeline = beam.Pipeline(options=pipeline_options(args.runner, True, flags, settings))
        build_pipeline(pipeline, cfg)
        submitted = time.time()
        result = pipeline.run()

        def wait() -> None:
            # The job's state, polled: Prism's message stream ends with DEADLINE_EXCEEDED after ~5 min,
            # which wait_until_finish() would report as a failure of a job that is still running.
            while not cancelled.is_set():
                try:
                    state = result.state
                except Exception as exc:  # noqa: BLE001 - reported unless we cancelled the job ourselves
                    state = f"unknown ({exc})"
                if not cancelled.is_set() and state in ("FAILED", "CANCELLED", "DONE", "STOPPED") or \
                        str(state).startswith("unknown"):
                    if not cancelled.is_set():
                        failure.append(f"job state {state}")
                    return
                time.sleep(2)

        threading.Thread(target=wait, daemon=True).start()
        rss = RssSampler(os.getpid())
        rss.start()
        wait_for(lambda: arrivals.first_event_s is not None, args.timeout_s, "the first validated event", failure)
        startup_s = arrivals.first_event_s - submitted
        cpu_at_first_event = _cpu_s(os.getpid())
        services = platform_pids(settings)
        services_cpu = cpu_by_process(services)
        print(f"start-up: first validated event {startup_s:.1f} s after submission", flush=True)
        last_step = int(preload.times_ms[-1])
        wait_for(lambda: last_step in arrivals.complete_s, args.timeout_s, "the last pre-loaded step's predictions",
                 failure)
        drain_s = arrivals.complete_s[last_step] - arrivals.first_event_s
        worker_rss = rss.stop()
        drain_cpu_s = _cpu_s(os.getpid()) - cpu_at_first_event
        services_cpu = {name: round(cpu - services_cpu[name], 1) for name, cpu in cpu_by_process(services).items()
                        if name in services_cpu}
        print(f"CPU during the drain ({drain_s:.1f} s wall): worker {drain_cpu_s:.1f} s (all threads of this "
              f"process), platform {services_cpu}", flush=True)
        print(f"worker RSS (the LOOPBACK SDK harness runs in this process) during start-up and drain: "
              f"{worker_rss['start_mb']:.0f} MB at submission, peak {worker_rss['peak_mb']:.0f} MB, "
              f"{worker_rss['end_mb']:.0f} MB at the end", flush=True)
        loads.append(os.getloadavg()[0])
        print(f"throughput: {sent.readings:,} readings in {drain_s:.1f} s = {sent.readings / drain_s:,.0f} events/s",
              flush=True)

        stage_parts.put([(tp.topic, tp.partition, tp.offset) for tp in stage_start_offsets(bootstrap, topics)])
        acked = paced_steps(bootstrap, topics.raw, paced, args.step_interval_s)
        steps = sorted(acked)
        latency_error = None
        try:
            wait_for(lambda: all(s in arrivals.complete_s for s in steps), 60, "the paced steps' predictions",
                     failure)
        except (TimeoutError, RuntimeError) as exc:  # reported with the steps that did arrive
            latency_error = str(exc)
        loads.append(os.getloadavg()[0])
        latencies = [arrivals.complete_s[s] - acked[s] for s in steps[args.warmup_steps:] if s in arrivals.complete_s]
        missing = sum(1 for s in steps[args.warmup_steps:] if s not in arrivals.complete_s)
        warmup = [round(arrivals.complete_s[s] - acked[s], 3) for s in steps[:args.warmup_steps]
                  if s in arrivals.complete_s]
        stage_p50 = stage_medians(arrivals, acked, steps[args.warmup_steps:])
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=10)
            reports.put(None)
        cancelled.set()
        if result is not None:
            try:
                result.cancel()
            except Exception:  # noqa: BLE001, S110 - the Flink job is cancelled through REST below
                pass
            if args.runner == "flink":
                cancel_flink_jobs(settings.flink_rest_url, job_name)
        delete_topics(admin, topics)
        shutil.rmtree(out_dir, ignore_errors=True)
    all_loads = loads + arrivals.loads
    events_per_s = sent.readings / drain_s
    ref_rate = reference["events_per_s"] if reference else None
    return {
        "runner": args.runner,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "hours": args.hours,
        "readings": sent.readings,
        "sensors": len(sensor_ids),
        "startup_s": round(startup_s, 1),
        "drain_s": round(drain_s, 1),
        "worker_rss_mb": worker_rss,
        "worker_cpu_s_during_drain": round(drain_cpu_s, 1),
        "platform_cpu_s_during_drain": services_cpu,
        "events_per_s": round(events_per_s, 1),
        "reference_loop": reference,
        "ratio_to_reference": round(events_per_s / ref_rate, 3) if ref_rate else None,
        "step_interval_s": args.step_interval_s,
        "warmup_steps_skipped": args.warmup_steps,
        "warmup_latencies_s": warmup,
        "latency_steps": len(latencies),
        "latency_missing_steps": missing,
        "latency_error": latency_error,
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p99_s": round(pct(latencies, 0.99), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "latencies_s": [round(x, 3) for x in latencies],
        "stage_latency_p50_s": stage_p50,
        "load_avg_1m": {"min": min(all_loads), "mean": round(statistics.mean(all_loads), 2), "max": max(all_loads)},
    }


def run_reference(admin: AdminClient, bootstrap: str, topics: TopicSettings, registry: str, run_id: str,
                  args: argparse.Namespace, readings: int, last_step_ms: int) -> dict:
    """The reference loop over the job's pre-loaded raw topic, into topics of its own (deleted after)."""
    own = create_topics(admin, run_id, args.partitions, prefix="bench-ref")
    try:
        loop = ReferenceLoop(bootstrap, own, ModelRegistry(registry).load(), network_sensor_ids(),
                             raw_topic=topics.raw)
        figures = loop.run(last_step_ms, readings, timeout_s=args.timeout_s).as_dict()
    finally:
        delete_topics(admin, own)
    print(f"reference loop: {readings:,} readings in {figures['elapsed_s']} s = "
          f"{figures['events_per_s']:,.0f} events/s (stages, s: {figures['stage_s']})", flush=True)
    return figures


def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", choices=("flink", "prism"), default="flink")
    parser.add_argument("--hours", type=float, default=24.0, help="hours of METR-LA pre-loaded (all sensors)")
    parser.add_argument("--steps", type=int, default=20, help="paced steps measured for latency")
    parser.add_argument("--warmup-steps", type=int, default=2, help="paced steps left out of the latency figures")
    parser.add_argument("--step-interval-s", type=float, default=5.0, help="seconds between paced steps (real: 300)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of each fresh topic")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="bound on start-up and on the pre-load drain")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the hand-written single-process loop run beside the job")
    parser.add_argument("--registry", help="model registry root (default: $TRAFFIC_MODEL_REGISTRY or <work>/models)")
    parser.add_argument("--beam-arg", dest="beam_args", action="append", default=[],
                        help="a further Beam pipeline option, repeatable, e.g. --beam-arg=--max_bundle_time_millis=100")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # `timeout` / kill: still cancel the job and delete the topics
    try:
        figures = run(args)
    except ServiceDown as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (TimeoutError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
