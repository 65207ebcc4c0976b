"""``traffic platform up|down|status [SERVICE...]``."""

from __future__ import annotations

import argparse

from confluent_kafka import KafkaException

from config.settings import PlatformSettings
from kafka_client import KafkaUnavailableError
from runners.platform import ALL_SERVICES, Platform
from runners.platform.stream_watch import observe_stream

__all__ = ["format_status", "register", "stream_line"]


def format_status(rows: list) -> str:
    header = f"{'SERVICE':10} {'STATE':9} {'PID':15} {'HEALTH':7} PORTS"
    lines = [header]
    for row in rows:
        pids = ",".join(str(p) for p in row.pids) or "-"
        health = "ok" if row.healthy else "-"
        lines.append(f"{row.service:10} {row.state:9} {pids:15} {health:7} {row.port_text()}")
    return "\n".join(lines)


def _settings(args: argparse.Namespace) -> PlatformSettings:
    overrides = {"work_dir": args.work_dir} if args.work_dir else {}
    return PlatformSettings(**overrides)


def _up(args: argparse.Namespace) -> int:
    platform = Platform(_settings(args))
    platform.up(args.services, echo=print)
    print(format_status(platform.status(args.services)))
    return 0


def _down(args: argparse.Namespace) -> int:
    Platform(_settings(args)).down(args.services, echo=print)
    return 0


def stream_line(settings: PlatformSettings) -> tuple[str, bool]:
    """The streaming-job line of the status and whether it is fine (not stalled; unknown counts as fine)."""
    try:
        verdict = observe_stream(settings)
    except (KafkaUnavailableError, KafkaException, OSError) as exc:  # OSError: the samples file cannot be kept
        return f"stream job: unknown ({exc})", True
    return f"stream job: {verdict.describe()}", verdict.ok


def _status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    rows = Platform(settings).status(args.services)
    print(format_status(rows))
    wanted_up = [r for r in rows if r.state != "stopped"]
    fine = all(r.healthy for r in wanted_up)
    if any(r.service == "kafka" and r.healthy for r in rows):  # behind with no new output = stalled (exit 1)
        line, stream_ok = stream_line(settings)
        print(line)
        fine = fine and stream_ok
    return 0 if fine else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "platform",
        description="Local services on 127.0.0.1; ports, heaps and directories come from TRAFFIC_* settings. "
        "PID files and logs live in <work_dir>/run and <work_dir>/logs.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, func, text in (
        ("up", _up, "start the services (all if none named) and wait until healthy; harmless if running"),
        ("down", _down, "stop the services this work directory started"),
        ("status", _status, "show each service's state, PIDs, health and ports, and whether the streaming job is "
         "stalled (exit 1 if a service is unhealthy or the job stalled)"),
    ):
        sub = actions.add_parser(action, help=text, description=text)
        sub.add_argument("services", nargs="*", metavar="SERVICE", help=f"one or more of: {', '.join(ALL_SERVICES)}")
        sub.add_argument("--work-dir", help="work directory (default: TRAFFIC_WORK_DIR or <repo>/.work)")
        sub.set_defaults(func=func)
