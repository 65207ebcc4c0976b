"""The ``traffic`` command.

Each sub-command lives beside the code it drives and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit code). This module only
collects them and turns every failure into a single line on stderr:

    traffic: error: Kafka at 127.0.0.1:9092 is not reachable (is `traffic platform up kafka` running?)

Set ``TRAFFIC_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

from schemas.exceptions import TrafficError

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

# Modules that contribute sub-commands, in the order `traffic --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "runners.setup_cmd",
    "api.cli",
    "runners.platform.cli",
    "runners.topics",
    "pipelines.replay",
    "pipelines.batch",
    "ml.train",
    "ml.evaluate",
    "pipelines.streaming",
    "runners.run_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="traffic",
        description="Real-time METR-LA traffic forecasting on Apache Beam, Kafka and Flink.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


_REMOTE_CAUSE = re.compile(r"(\w+(?:\.\w+)*(?:Error|Exception)): (.+?)(?= During handling| File \"|$)")
_MAX_LINE = 400


def _one_line(exc: BaseException) -> str:
    """The error as one readable line; a pipeline failure's remote traceback becomes its last cause."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "Traceback (most recent call last)" in text:
        causes = _REMOTE_CAUSE.findall(text)
        if causes:
            name, message = causes[-1]
            step = re.search(r"\[while running '([^']+)'\]", text)
            message = re.sub(r"\s*\[while running '[^']+'\]", "", message).strip()
            text = f"{name.rsplit('.', 1)[-1]}: {message}" + (f" (in step {step.group(1)})" if step else "")
    return text if len(text) <= _MAX_LINE else text[: _MAX_LINE - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("traffic: interrupted", file=sys.stderr)
        return 130
    except (TrafficError, OSError) as exc:
        if os.environ.get("TRAFFIC_DEBUG"):
            raise
        print(f"traffic: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if os.environ.get("TRAFFIC_DEBUG"):
            raise
        print(
            f"traffic: error: {type(exc).__name__}: {_one_line(exc)} (TRAFFIC_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
