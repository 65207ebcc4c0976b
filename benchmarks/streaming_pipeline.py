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
   reported as a ratio to the loop's. Both are timed the same way by a watcher
   (``benchmarks/stream_watch.py``, a process of its own): from the first
   validated event to the last step's last prediction, each taken as the time
   the broker appended it (the watched topics are stamped with log-append
   times); the loop's own clock is reported too. The loop does the job's
   work: scores, incidents and hourly files included. ``--without
   scores,incidents,files`` leaves those out of both (the work the issue's
   reference named); leaving out one part at a time shows what each costs.
   A second figure, ``all_work``, stops both clocks when the backlog's scores
   and closed hours' files are out too (``benchmarks/backlog_work.py``): the
   job does that work on event-time timers, often after its last prediction,
   the loop inline before it. For both, the benchmark also prints when that
   work came out (the 10th, 50th and 90th percentile of the steps' last
   predictions, the targets' last scores and the closed hours' files).
2. Latency at a paced speed: with the job caught up, the following steps are
   produced one at a time (207 RawReadings, Kafka timestamp = event time,
   flush) every ``--step-interval-s``; latency = arrival at the broker of the
   step's last prediction (sensors x 3 horizons, de-duplicated) -
   acknowledgement of the step's last reading. The first ``--warmup-steps`` are left out.

    .venv/bin/python benchmarks/streaming_pipeline.py --runner flink
    .venv/bin/python benchmarks/streaming_pipeline.py --runner prism --hours 24 --steps 20

Exits 2 with a one-line message when Kafka (or, for Flink, the REST API or the
job server) is not reachable. The load average is sampled during the run
(other work may share the machine).
"""

from __future__ import annotations

import argparse
import json
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
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import apache_beam as beam  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from benchmarks.bench_topics import create_topics, delete_topics, wait_for  # noqa: E402
from benchmarks.process_figures import RssSampler, cpu_by_process, cpu_s, platform_pids  # noqa: E402
from benchmarks.reference_run import backlog_work, print_timeline, run_reference  # noqa: E402
from benchmarks.stage_cpu import StageCpu  # noqa: E402
from benchmarks.stream_watch import (  # noqa: E402
    STAGES,
    Arrivals,
    Watcher,
    stage_start_offsets,
)
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


class ServiceDown(Exception):
    """A platform service the benchmark needs is not reachable."""


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
    failure, cancelled = [], threading.Event()
    result = None
    reference = None
    watcher = None
    stages = StageCpu()
    loads = [os.getloadavg()[0]]
    try:
        sent = replay(preload, producer_config(bootstrap), topics.raw, speed=float("inf"), progress=False)
        print(f"pre-loaded {sent.readings:,} readings ({sent.steps} steps x {sent.sensors} sensors) "
              f"in {sent.elapsed_s:.1f} s", flush=True)
        if args.reference:
            reference = run_reference(admin, bootstrap, topics, registry, run_id, args, sent.readings,
                                      int(preload.times_ms[-1]), len(sensor_ids))
        watcher = Watcher(bootstrap, topics, len(sensor_ids) * len(HORIZONS_MIN), len(sensor_ids))
        watcher.wait_ready()
        arrivals = watcher.arrivals
        left_out = args.without
        cfg = StreamingConfig(bootstrap_servers=bootstrap, topics=topics, sensor_ids=sensor_ids, registry=registry,
                              known_sensor_ids=network_sensor_ids(), output=None if "files" in left_out else out_dir,
                              group_id=job_name, start="earliest", scores="scores" not in left_out,
                              incidents="incidents" not in left_out, file_window_s=args.file_window_s)
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
        stages.start()
        wait_for(lambda: arrivals.first_event_s is not None, args.timeout_s, "the first validated event", failure)
        startup_s = arrivals.first_event_s - submitted
        cpu_at_first_event = cpu_s(os.getpid())
        stages_at_first_event = stages.snapshot()
        services = platform_pids(settings)
        services_cpu = cpu_by_process(services)
        print(f"start-up: first validated event {startup_s:.1f} s after submission", flush=True)
        last_step = int(preload.times_ms[-1])
        wait_for(lambda: last_step in arrivals.complete_s, args.timeout_s, "the last pre-loaded step's predictions",
                 failure)
        drain_s = arrivals.complete_s[last_step] - arrivals.first_event_s
        worker_rss = rss.stop()
        drain_cpu_s = cpu_s(os.getpid()) - cpu_at_first_event
        stage_cpu = stages.since(stages_at_first_event)
        services_cpu = {name: round(cpu - services_cpu[name], 1) for name, cpu in cpu_by_process(services).items()
                        if name in services_cpu}
        print(f"CPU during the drain ({drain_s:.1f} s wall): worker {drain_cpu_s:.1f} s (all threads of this "
              f"process), platform {services_cpu}", flush=True)
        print(f"worker RSS (the LOOPBACK SDK harness runs in this process) during start-up and drain: "
              f"{worker_rss['start_mb']:.0f} MB at submission, peak {worker_rss['peak_mb']:.0f} MB, "
              f"{worker_rss['end_mb']:.0f} MB at the end", flush=True)
        print("worker CPU by stage during the drain (the thread running each bundle): " + ", ".join(
            f"{name} {figures['cpu_s']:.2f} s" for name, figures in stage_cpu.items()), flush=True)
        loads.append(os.getloadavg()[0])
        print(f"throughput: {sent.readings:,} readings in {drain_s:.1f} s = {sent.readings / drain_s:,.0f} events/s",
              flush=True)
        work_s, work_timeline = backlog_work(arrivals, last_step, out_dir, args)
        print_timeline("job", work_timeline)
        work_cpu = {"worker_cpu_s": round(cpu_s(os.getpid()) - cpu_at_first_event, 1),
                    "stage_cpu": stages.since(stages_at_first_event)}
        print(f"all of the backlog's work (scores and closed hours' files too): {work_s} s; worker CPU from the "
              f"first event to {work_cpu['worker_cpu_s']} s then (for the whole wait)", flush=True)

        watcher.stage_parts.put([(tp.topic, tp.partition, tp.offset) for tp in stage_start_offsets(bootstrap, topics)])
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
        stages.stop()
        if watcher is not None:
            watcher.stop()
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
    all_loads = loads + watcher.arrivals.loads
    events_per_s = sent.readings / drain_s
    ref_rate = reference["events_per_s"] if reference else None
    work_rate = sent.readings / work_s if work_s else None
    ref_work_rate = reference["all_work"]["events_per_s"] if reference and reference["all_work"] else None
    return {
        "runner": args.runner,
        "without": sorted(args.without),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "hours": args.hours,
        "readings": sent.readings,
        "sensors": len(sensor_ids),
        "startup_s": round(startup_s, 1),
        "drain_s": round(drain_s, 1),
        "worker_rss_mb": worker_rss,
        "worker_cpu_s_during_drain": round(drain_cpu_s, 1),
        "platform_cpu_s_during_drain": services_cpu,
        "file_window_s": args.file_window_s,
        "stage_cpu_during_drain": stage_cpu,
        "events_per_s": round(events_per_s, 1),
        "reference_loop": reference,
        "ratio_to_reference": round(events_per_s / ref_rate, 3) if ref_rate else None,
        "all_work": work_s and {"elapsed_s": round(work_s, 2), "events_per_s": round(work_rate, 1),
                                "ratio_to_reference": round(work_rate / ref_work_rate, 3) if ref_work_rate else None,
                                **work_cpu, "timeline": work_timeline},
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


def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


OPTIONAL_PARTS = ("scores", "incidents", "files")  # what the job does beyond the reference loop's work


def _parts(text: str) -> frozenset[str]:
    parts = frozenset(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(parts - set(OPTIONAL_PARTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown)}; choose among "
                                         f"{', '.join(OPTIONAL_PARTS)}")
    return parts


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
    parser.add_argument("--without", type=_parts, default=frozenset(), metavar="PARTS",
                        help="leave these parts of the job out, comma-separated among "
                        f"{', '.join(OPTIONAL_PARTS)} (all three: only the reference loop's work); "
                        "default: the job as `traffic stream` runs it")
    parser.add_argument("--file-window-s", type=int, default=StreamingConfig.file_window_s,
                        help="event time one Parquet file holds (as `traffic stream --file-window-s`)")
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
