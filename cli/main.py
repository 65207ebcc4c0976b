"""The ``traffic`` command.

The top floor: the only code that may import every other package. Each
sub-command lives beside the code it drives and exposes ``register(subparsers)``,
which adds its parser (with its description and flags) and sets ``func`` (a
callable taking the parsed namespace and returning an exit code). Each command's
one-line help is written once, in :data:`COMMANDS` below. This module only
collects the commands and turns every failure into a single line on stderr:

    traffic: error: Kafka at 127.0.0.1:9092 is not reachable (is `traffic platform up kafka` running?)

Set ``TRAFFIC_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pipelines.beam_flags import parse_args
from schemas.exceptions import TrafficError

__all__ = ["main", "build_parser", "COMMANDS", "COMMAND_MODULES"]

# (command, module whose register() adds it, its line in `traffic --help`), in the order the listing shows them.
# A module is imported only when its command runs (Beam alone is ~146 MB), so the help line is written here,
# once: build_parser hands it to the module's add_parser (see _HelpFromTable).
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("setup", "cli.setup_cmd",
     "install the local platform (Kafka, Hadoop and job-server jars, Flink, prism, boot, dashboard npm files); cached"),
    ("serve", "api.cli", "run the prediction API (REST, SSE stream, /health, /metrics) and the live map dashboard"),
    ("platform", "runners.platform.cli", "start, stop or show the local services (kafka, flink, jobserver, hdfs)"),
    ("topics", "runners.topics", "create, list or delete the Kafka topics"),
    ("network", "ml.network_cli", "import a sensor network (readings, locations, road graph), list or show networks"),
    ("replay", "pipelines.replay_cli", "send METR-LA readings to the raw topic in event-time order"),
    ("batch", "pipelines.batch_cli", "batch pipeline over history: feature tables or backfilled predictions"),
    ("train", "cli.train_cmd", "train the forecasting models and save them to the model registry"),
    ("evaluate", "ml.evaluate", "score the registered model on the validation (and test) split"),
    ("stream", "pipelines.streaming_cli",
     "the streaming prediction job (Kafka -> validation -> windows -> model -> predictions)"),
    ("worker-pool", "runners.worker_pool",
     "Python SDK workers for Flink jobs submitted with --flink_worker_pool (EXTERNAL), state cache on"),
    ("run", "cli.run_cmd",
     "bring up the whole local system: platform, model, streaming job, API and a live replay"),
)
# Modules that contribute sub-commands, in listing order.
COMMAND_MODULES: tuple[str, ...] = tuple(module for _, module, _ in COMMANDS)
_ALL = "*"


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names: its first word that is not an option (the top level takes no values)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


class _HelpFromTable:
    """What a module's ``register`` sees as ``subparsers``: its ``add_parser`` gets the table's help line."""

    def __init__(self, subparsers: argparse._SubParsersAction, help_line: str) -> None:
        self._subparsers, self._help_line = subparsers, help_line

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if "help" in kwargs:
            raise TypeError(f"`traffic {name}`: its help line is written once, in cli/main.py's COMMANDS")
        return self._subparsers.add_parser(name, help=self._help_line, **kwargs)


def build_parser(command: str | None = _ALL) -> argparse.ArgumentParser:
    """The ``traffic`` parser; only ``command``'s module is imported (all of them by default, none for ``None``).

    The other commands get a placeholder with their help line, so ``traffic --help`` still lists every one.
    """
    parser = argparse.ArgumentParser(
        prog="traffic",
        description="Real-time METR-LA traffic forecasting on Apache Beam, Kafka and Flink.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, help_line in COMMANDS:
        if command in (_ALL, name):
            importlib.import_module(module).register(_HelpFromTable(subparsers, help_line))
        else:
            subparsers.add_parser(name, help=help_line)
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


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _sigterm_interrupts() -> Callable[[], object]:
    """Make SIGTERM stop a command as Ctrl-C does; returns what restores the previous handler.

    Service managers and ``kill`` send SIGTERM, and a shell's background job ignores
    SIGINT: without this, ``traffic run`` died without stopping its job and API.
    Commands with their own orderly stop (``replay``, ``stream``) install their own.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    restore = _sigterm_interrupts()  # first: importing a command's module (sklearn, Beam) can take seconds
    try:
        parser = build_parser(_chosen_command(argv))
        args = parse_args(parser, argv)  # Beam flags after `--` (traffic batch, traffic stream)
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
    finally:
        restore()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
