"""``traffic run``: the whole local system with one command (``make run``).

1. the platform: Kafka (and Flink + the job server with ``--runner flink``);
2. the topics;
3. a model: trains one if the registry has none;
4. the API and dashboard (``traffic serve``) and the streaming job (``traffic stream``),
   as background processes with PID files and logs under the work directory;
5. a replay of METR-LA into the raw topic at ``--speed`` (a 5-minute step every
   ``300 / speed`` seconds), continuing the timeline of earlier runs by whole weeks
   so time-of-day and day-of-week stay true.

Ctrl-C or SIGTERM (or the end of a finite replay with ``--exit-after-replay``)
stops the job and the API; the platform keeps running (``traffic platform down``
stops it).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from config.settings import PlatformSettings, get_settings
from ml.network import add_network_argument
from runners.platform.process import ManagedProcess, port_open, wait_until
from schemas.exceptions import TrafficError

__all__ = ["register", "newest_event_time_ms", "week_aligned_shift_ms"]

WEEK_MS = 7 * 24 * 3600 * 1000
MAX_FUTURE_MS = 3600 * 1000  # ValidateEvents' default max_future_s
REPLAY_DEFAULT_START = "2012-05-23T06:45"  # the first step of the validation period (a Wednesday)


class RunError(TrafficError):
    """The local system could not be brought up."""


def _say(line: str) -> None:
    print(f"run: {line}", flush=True)


def _traffic() -> str:
    exe = shutil.which("traffic", path=str(Path(sys.executable).parent)) or shutil.which("traffic")
    if exe is None:
        raise RunError("the `traffic` command is not installed in this environment (run `make run`)")
    return exe


def newest_event_time_ms(bootstrap_servers: str, topic: str, timeout_s: float = 10.0) -> int | None:
    """The newest event time among the last record of each partition of ``topic`` (None if empty)."""
    from confluent_kafka import TopicPartition

    from kafka_client import make_consumer
    from schemas.codec import AvroCodec
    from schemas.exceptions import SchemaError

    codec = AvroCodec("raw_reading")
    consumer = make_consumer(bootstrap_servers, f"traffic-run-probe-{os.getpid()}",
                             {"socket.timeout.ms": int(timeout_s * 1000)})
    try:
        info = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if info is None or info.error is not None:  # just created, metadata not there yet: nothing in it
            return None
        newest: int | None = None
        for partition in info.partitions:
            low, high = _watermark_offsets(consumer, TopicPartition(topic, partition), timeout_s)
            for offset in range(max(low, high - 50), high):  # a few, in case the last ones are bad records
                consumer.assign([TopicPartition(topic, partition, offset)])
                message = consumer.poll(timeout_s)
                if message is None or message.error():
                    continue
                try:
                    event_ms = int(codec.decode(message.value())["event_time"])
                except (SchemaError, KeyError, TypeError, ValueError):
                    continue
                if event_ms <= time.time() * 1000 + MAX_FUTURE_MS:  # what validation would reject is no timeline
                    newest = event_ms if newest is None else max(newest, event_ms)
        return newest
    finally:
        consumer.close()


def _watermark_offsets(consumer: Any, partition: Any, timeout_s: float) -> tuple[int, int]:
    """A partition's low and high offsets, waiting out a just-created topic's leader election."""
    from confluent_kafka import KafkaError, KafkaException

    electing = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=timeout_s)
        except KafkaException as exc:
            error = exc.args[0]
            if not (error.retriable() or error.code() in electing) or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def week_aligned_shift_ms(data_start_ms: int, newest_ms: int | None) -> int:
    """The smallest whole-week shift that puts ``data_start_ms`` after ``newest_ms``."""
    if newest_ms is None or newest_ms < data_start_ms:
        return 0
    return math.ceil((newest_ms - data_start_ms + 1) / WEEK_MS) * WEEK_MS


def _background(settings: PlatformSettings, name: str, argv: list[str], port: int | None, timeout_s: float) -> \
        ManagedProcess:
    proc = ManagedProcess(name, settings.run_dir, settings.logs_dir)
    if proc.pid() is not None:
        _say(f"{name}: already running (pid {proc.pid()})")
        return proc
    proc.start(argv, env=os.environ.copy())
    ready = (lambda: port_open(settings.host, port)) if port else (lambda: proc.pid() is not None)
    failed = wait_until(ready, timeout_s, abort=lambda: None if proc.pid() is not None else proc.exit_reason())
    if failed:
        proc.stop()
        raise RunError(f"{name} did not start ({failed}); read {proc.log_file}")
    _say(f"{name}: running (pid {proc.pid()}, log {proc.log_file})")
    return proc


class _Watch:
    """Sets ``died`` when one of the background processes stops; ``check`` then says which, as a RunError."""

    def __init__(self, processes: list[ManagedProcess], every_s: float = 1.0) -> None:
        self.processes = processes
        self.died = threading.Event()
        self.reason: str | None = None
        threading.Thread(target=self._run, args=(every_s,), name="traffic-run-watch", daemon=True).start()

    def _run(self, every_s: float) -> None:
        while not self.died.wait(every_s):
            for proc in self.processes:
                if proc.pid() is None:
                    self.reason = f"{proc.name} stopped ({proc.exit_reason()}); read {proc.log_file}"
                    self.died.set()
                    return

    def check(self) -> None:
        if self.reason:
            raise RunError(self.reason)


def _ensure_model(traffic: str, root: str, quick: bool, on_network: list[str]) -> None:
    from ml.registry import ModelRegistry

    if ModelRegistry(root).latest_version() is not None:
        _say(f"model: using {ModelRegistry(root).latest_version()} from {root}")
        return
    _say(f"model: none registered in {root}; training one{' (quick)' if quick else ''} ...")
    argv = [traffic, "train", "--registry", root, *on_network] + (["--quick"] if quick else [])
    if subprocess.run(argv).returncode != 0:
        raise RunError("training failed (see the lines above)")


def _cmd_run(args: argparse.Namespace) -> int:
    from api.settings import ApiSettings
    from kafka_client import admin_client, create_topics, producer_config
    from ml.network import network_of
    from pipelines.replay import replay
    from pipelines.replay_cli import parse_time, print_report
    from runners.platform import Platform
    from schemas.topics import get_topic_settings

    settings, topics, traffic = get_settings(), get_topic_settings(), _traffic()
    network = network_of(args)  # a wrong --network fails here, before anything starts
    data = network.readings(args.data)
    on_network = ["--network", str(network.root)]
    services = ["kafka"] + (["flink", "jobserver"] if args.runner == "flink" else [])
    Platform(settings).up(services, echo=print)
    create_topics(admin_client(settings.bootstrap_servers), topics)
    registry = args.registry or network.home_under(settings.registry_root)  # one root for train, serve, stream
    _ensure_model(traffic, registry, args.quick_model, on_network)

    started: list[ManagedProcess] = []
    try:
        if not args.no_api:
            # The journal lives beside Kafka's data (same work directory), so a restarted API resumes its SSE
            # clients exactly where they were (api/journal.py).
            os.environ.setdefault("TRAFFIC_API_EVENT_JOURNAL", str(settings.work_dir / "api" / "events.journal"))
            api = ApiSettings()
            started.append(_background(settings, "api", [traffic, "serve", "--registry", registry, *on_network],
                                       api.port, 180))
            _say(f"dashboard: http://{api.host}:{api.port}/dashboard/")
        stream_argv = [traffic, "stream", "--runner", args.runner, "--registry", registry, *on_network]
        started.append(_background(settings, "stream", stream_argv, None, 30))

        start_ms = parse_time(args.start, "--start") if args.start else network.split.train_end_ms
        first_ms = int(data.between(start_ms, None).times_ms[0])
        shift = week_aligned_shift_ms(first_ms, newest_event_time_ms(settings.bootstrap_servers, topics.raw))
        if shift:
            _say(f"replay: continuing after earlier runs, event times shifted by {shift // WEEK_MS} week(s)")
        watch = _Watch(started)
        report = replay(data, producer_config(settings.bootstrap_servers), topics.raw, speed=args.speed,
                        start_ms=start_ms, loops=0 if args.loop else 1, inject_bad=args.inject_bad,
                        shift_ms=shift, stop=watch.died)
        print_report(report)
        if not (args.loop or args.exit_after_replay or report.interrupted):
            _say("replay finished; the job and the dashboard keep running. Ctrl-C stops them.")
            watch.died.wait()
        watch.check()
    except KeyboardInterrupt:
        _say("stopping")
    finally:
        for proc in reversed(started):
            if proc.stop():
                _say(f"{proc.name}: stopped")
        _say("the platform keeps running; `traffic platform down` (or `make down`) stops it")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        description="Start Kafka (and Flink), create topics, train a model if none is registered, start the "
        "API/dashboard and the streaming job, then replay METR-LA into Kafka. Ctrl-C or SIGTERM stops the job and API.",
    )
    parser.add_argument("--runner", choices=("prism", "flink"), default="prism", help="where the job runs")
    parser.add_argument("--speed", type=float, default=60.0,
                        help="replay speed factor (60 = a 5-minute step every 5 s; default 60)")
    add_network_argument(parser)
    parser.add_argument("--start", help="first replayed step (UTC; default: the network's first validation step, "
                        f"{REPLAY_DEFAULT_START} for METR-LA)")
    parser.add_argument("--data", help="a .npz/.h5 of the network's sensors to replay (default: the network's)")
    parser.add_argument("--loop", action=argparse.BooleanOptionalAction, default=True,
                        help="keep replaying (event times move on by whole weeks each loop; default on)")
    parser.add_argument("--inject-bad", type=float, default=0.001, metavar="FRACTION",
                        help="fraction of malformed records mixed in (they go to the dead-letter topic)")
    parser.add_argument("--registry", help="model registry root (default: $TRAFFIC_MODEL_REGISTRY or <work>/models)")
    parser.add_argument("--quick-model", action="store_true", help="train a small model if none is registered")
    parser.add_argument("--no-api", action="store_true", help="do not start the API and dashboard")
    parser.add_argument("--exit-after-replay", action="store_true", help="stop everything when a finite replay ends")
    parser.set_defaults(func=_cmd_run)
