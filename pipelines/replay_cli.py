"""The ``traffic replay`` command line: flags, the end-of-run report, Ctrl-C handling.

See :mod:`pipelines.replay` for what a replay does.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.hdfs import hdfs_options_for
from config.settings import get_settings
from kafka_client import producer_config
from pipelines.replay import ReplayError, ReplayReport, format_time, replay
from pipelines.replay import __doc__ as _replay_doc
from schemas.codec import codec_for
from schemas.topics import get_topic_settings

__all__ = ["parse_time", "print_report", "register"]


def parse_time(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayError(f"{flag} {text!r} is not an ISO timestamp such as 2012-03-01T06:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _parse_speed(text: str) -> float:
    if text.lower() in ("max", "inf"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ReplayError(f"--speed must be a positive number or 'max', not {text!r}")
    return value


def _parse_sensors(text: str | None) -> list[str] | None:
    if not text:
        return None
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise ReplayError(f"cannot read the sensor list {text[1:]}: {exc.strerror}") from None
    sensors = [s.strip() for s in text.replace(",", "\n").splitlines() if s.strip() and not s.startswith("#")]
    if not sensors:
        raise ReplayError("the sensor list is empty")
    return sensors


def print_report(report: ReplayReport, out: Any = None) -> None:
    """The end-of-run summary: events/s and, when any were sent, the bad-record table."""
    out = out if out is not None else sys.stdout
    state = "interrupted after" if report.interrupted else "replayed"
    print(
        f"{state} {report.readings:,} readings ({report.missing:,} missing) from {report.sensors} sensor(s)"
        f" + {report.bad_total:,} bad records, {report.steps:,} steps {format_time(report.first_event_ms)}"
        f" .. {format_time(report.last_event_ms)}, to {report.topic} in {report.elapsed_s:.2f} s:"
        f" {report.events_per_s:,.0f} events/s",
        file=out,
    )
    if report.bad:
        width = max(len(kind) for kind in [*report.bad, "bad record kind"])
        print(f"{'bad record kind'.ljust(width)}  sent", file=out)
        for kind, count in report.bad.items():
            print(f"{kind.ljust(width)}  {count:>5}", file=out)
        print(f"{'total'.ljust(width)}  {report.bad_total:>5}", file=out)


def _cmd_replay(args: argparse.Namespace) -> int:
    start_ms, end_ms = parse_time(args.start, "--start"), parse_time(args.end, "--end")
    settings = get_topic_settings()
    stop = threading.Event()

    def on_sigint(_signum: int, _frame: Any) -> None:
        if stop.is_set():  # a second Ctrl-C: give up on the orderly stop
            raise KeyboardInterrupt
        stop.set()  # the first one ends the replay after the current step, so the counts stay exact

    in_main_thread = threading.current_thread() is threading.main_thread()
    # SIGTERM (kill, service managers) stops the replay as Ctrl-C does.
    previous = {sig: signal.signal(sig, on_sigint) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    try:
        report = _replay_from_args(args, settings, start_ms, end_ms, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print_report(report)
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


def _replay_from_args(
    args: argparse.Namespace, settings: Any, start_ms: int | None, end_ms: int | None, stop: threading.Event
) -> ReplayReport:
    config = producer_config(
        args.bootstrap_servers, linger_ms=args.linger_ms, batch_size=args.batch_size, compression=args.compression
    )
    from ml.network import network_of

    return replay(
        network_of(args).readings(args.data, hdfs_options_for([args.data]) or None),
        config,
        args.topic or settings.raw,
        speed=_parse_speed(args.speed),
        start_ms=start_ms,
        end_ms=end_ms,
        sensors=_parse_sensors(args.sensors),
        loops=args.loop,
        inject_bad=args.inject_bad,
        seed=args.seed,
        progress=not args.no_progress,
        codec=codec_for("raw_reading", args.registry_url or settings.registry_url),
        max_message_bytes=settings.max_message_bytes,
        hdfs_options=hdfs_options_for([args.data]) or None,
        stop=stop,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    settings = get_topic_settings()
    parser = subparsers.add_parser(
        "replay",
        description=(_replay_doc or "").split("\n\n")[1].replace("``", "`"),
    )
    from ml.network import add_network_argument

    add_network_argument(parser)
    parser.add_argument("--data", default=None,
                        help="a .npz or .h5 file of the network's sensors, local or hdfs:// (default: the network's)")
    parser.add_argument("--bootstrap-servers", default=get_settings().bootstrap_servers, help="default: %(default)s")
    parser.add_argument("--topic", default=None, help=f"default: {settings.raw}")
    parser.add_argument(
        "--speed", default="1", help="speed-up: 1 = real time, 300 = a step per second, max"
    )
    parser.add_argument("--start", help="first event time, ISO (e.g. 2012-03-01T06:00; UTC unless an offset is given)")
    parser.add_argument("--end", help="event times before this, ISO")
    parser.add_argument("--sensors", help="comma-separated sensor ids, or @FILE with one id per line")
    parser.add_argument(
        "--loop", type=int, nargs="?", const=0, default=1, metavar="N",
        help="replay N times (bare --loop: until Ctrl-C), event times shifted forward each pass",
    )
    parser.add_argument("--inject-bad", type=float, default=0.0, metavar="FRACTION",
                        help="bad records per good reading (e.g. 0.01); see pipelines/bad_records.py")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bad-record injection")
    parser.add_argument("--report-json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--linger-ms", type=float, default=20.0, help="producer batching delay (%(default)s ms)")
    parser.add_argument("--batch-size", type=int, default=1_000_000, help="producer batch bytes (%(default)s)")
    parser.add_argument(
        "--compression", default="zstd" if settings.compression in ("producer", "none") else settings.compression,
        choices=["none", "gzip", "snappy", "lz4", "zstd"], help="producer compression (%(default)s)",
    )
    parser.add_argument("--registry-url", default=None, help="schema registry (default: TRAFFIC_TOPICS_REGISTRY_URL)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_cmd_replay)
