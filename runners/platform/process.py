"""Start, find and stop the platform's background processes.

Each process runs in its own session (so its whole process group can be
signalled), writes stdout and stderr to ``<work>/logs/<name>.log`` and is
recorded in ``<work>/run/<name>.pid`` as ``"<pid> <start-time>"``: the start
time (in clock ticks since boot, from ``/proc/<pid>/stat``) guards against
signalling an unrelated process that later reused the PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from schemas.exceptions import TrafficError

__all__ = [
    "ManagedProcess",
    "PlatformError",
    "port_open",
    "process_tree",
    "tree_listening_ports",
    "wait_until",
]


class PlatformError(TrafficError):
    """A local service could not be installed, started, checked or stopped."""


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may hold spaces, so split after its ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants (empty if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_listening_ports(pid: int) -> set[int]:
    """TCP ports on which the process or one of its descendants listens."""
    ports: set[int] = set()
    for proc in process_tree(pid):
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        ports.update(c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN)
    return ports


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.5,
               abort: Callable[[], str | None] = lambda: None) -> str | None:
    """Poll ``check`` until it is true; return None, or why it stopped (abort reason or timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reason = abort()
        if reason:
            return reason
        try:
            if check():
                return None
        except Exception:  # noqa: BLE001, S110 - a probe that raises simply is not healthy yet
            pass
        if time.monotonic() >= deadline:
            return f"not healthy after {timeout_s:.0f} s"
        time.sleep(interval_s)


@dataclass(frozen=True)
class ManagedProcess:
    """One background process of a service, identified by its PID file."""

    name: str
    run_dir: Path
    logs_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID if the recorded process is still the one we started, else None."""
        try:
            pid_text, ticks = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if _start_ticks(pid) != ticks:
            return None
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return pid

    def exit_reason(self) -> str | None:
        """Why the recorded process is no longer running (None while it runs)."""
        pid_text = self.pid_file.read_text().split()[0] if self.pid_file.exists() else ""
        if self.pid() is not None:
            return None
        if pid_text:
            try:
                _, status = os.waitpid(int(pid_text), os.WNOHANG)
                if os.WIFEXITED(status):
                    return f"exited with code {os.WEXITSTATUS(status)}"
                if os.WIFSIGNALED(status):
                    return f"was killed by signal {os.WTERMSIG(status)}"
            except (ChildProcessError, ValueError):
                pass
        return "exited"

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
        """Launch ``argv`` detached in a new session, log to :attr:`log_file`, record the PID."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
                                    close_fds=True)
        ticks = _start_ticks(proc.pid)
        self.pid_file.write_text(f"{proc.pid} {ticks}\n")
        return proc.pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the process and its group (TERM, then KILL); True if something was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        members = process_tree(pid)
        self._signal_group(pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(members, timeout=timeout_s)
        if alive:
            self._signal_group(pid, signal.SIGKILL)
            for proc in alive:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(alive, timeout=10)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)  # started with start_new_session, so the group id is the PID
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise PlatformError(f"cannot signal process group {pid}: {exc}") from None
