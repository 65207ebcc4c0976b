"""A process supervisor: runs one command and starts it again whenever it dies, until it is told to stop.

    python -m runners.platform.supervise --name flink-taskmanager -- bash taskmanager.sh start-foreground

The platform starts the Flink TaskManager under it, so a TaskManager that
crashes or is killed (``kill -9``) comes back by itself and the JobManager
restarts the job on it from the last checkpoint. SIGTERM or SIGINT to the
supervisor (what ``traffic platform down`` sends to the process group) stops the
command and ends the supervisor. A command that dies more than
``--max-restarts`` times within ``--window-s`` is given up on: the supervisor
exits with the command's code, and the platform reports the service degraded.
Every start and exit is one line on stdout (the service's log).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence

__all__ = ["supervise", "main"]


def _say(name: str, line: str) -> None:
    print(f"supervise[{name}] {time.strftime('%Y-%m-%d %H:%M:%S')}: {line}", flush=True)


def _describe(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def supervise(name: str, argv: Sequence[str], delay_s: float = 2.0, max_restarts: int = 5,
              window_s: float = 60.0, stop: threading.Event | None = None) -> int:
    """Runs ``argv`` until ``stop`` is set, restarting it after ``delay_s`` whenever it exits.

    Returns 0 after a requested stop, or the command's exit code after too many restarts.
    """
    stop = stop or threading.Event()
    restarts: deque[float] = deque()
    while True:
        child = subprocess.Popen(list(argv))
        _say(name, f"started pid {child.pid}")
        while child.poll() is None:
            if stop.wait(0.2):
                child.terminate()
                try:
                    child.wait(60)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                _say(name, "stopped")
                return 0
        code = child.returncode
        if stop.is_set():
            return 0
        now = time.monotonic()
        restarts.append(now)
        while restarts and now - restarts[0] > window_s:
            restarts.popleft()
        if len(restarts) > max_restarts:
            _say(name, f"pid {child.pid} ended ({_describe(code)}); {len(restarts)} exits within {window_s:.0f} s, "
                       "giving up")
            return code if code > 0 else 1
        _say(name, f"pid {child.pid} ended ({_describe(code)}); restarting in {delay_s:.0f} s")
        if stop.wait(delay_s):
            return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.platform.supervise", description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="the name used in the log lines")
    parser.add_argument("--delay-s", type=float, default=2.0, help="pause before a restart (default 2)")
    parser.add_argument("--max-restarts", type=int, default=5, help="restarts allowed within --window-s (default 5)")
    parser.add_argument("--window-s", type=float, default=60.0, help="(default 60)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (after --)")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return supervise(args.name, command, args.delay_s, args.max_restarts, args.window_s, stop)


if __name__ == "__main__":
    sys.exit(main())
