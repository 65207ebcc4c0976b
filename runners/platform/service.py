"""What every local service shares: launch, health wait, stop, status."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from config.settings import PlatformSettings
from runners.install import InstallLayout
from runners.platform.process import (
    ManagedProcess,
    PlatformError,
    port_open,
    tree_listening_ports,
    wait_until,
)

__all__ = ["JAVA_BASE_OPTS", "Launch", "Service", "ServiceStatus", "java_binary"]

# Every JVM here needs IPv4 (the sandbox has no usable IPv6 loopback for Java's default stack).
JAVA_BASE_OPTS: tuple[str, ...] = ("-Djava.net.preferIPv4Stack=true", "-XX:+UseG1GC")


def java_binary() -> str:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` from PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise PlatformError("Java 17 is required but `java` is not on PATH (set JAVA_HOME or install openjdk-17)")
    return found


@dataclass(frozen=True)
class Launch:
    """One process of a service: its PID-file name, command line and environment."""

    process: str
    argv: Sequence[str]
    env: dict[str, str] | None = None


@dataclass(frozen=True)
class ServiceStatus:
    """One row of ``traffic platform status``."""

    service: str
    state: str  # running | stopped | degraded
    pids: tuple[int, ...]
    ports: dict[str, int]
    healthy: bool
    logs: tuple[Path, ...]

    def port_text(self) -> str:
        return ",".join(f"{label}={port}" for label, port in self.ports.items())


class Service:
    """Base class of the platform's services; subclasses fill in the abstract parts."""

    name: str = ""
    process_names: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # services that must run first

    def __init__(self, settings: PlatformSettings) -> None:
        self.settings = settings
        self.layout = InstallLayout.from_settings(settings)
        self.work_dir = Path(settings.work_dir)
        self.host = settings.host

    # ---- to be provided by subclasses -------------------------------------------------
    def ports(self) -> dict[str, int]:
        """Labelled ports the service listens on (all must be free before it starts)."""
        raise NotImplementedError

    def check_installed(self) -> None:
        """Raise :class:`PlatformError` if ``traffic setup`` has not installed what this needs."""
        raise NotImplementedError

    def prepare(self) -> list[Launch]:
        """Write configuration, format storage if needed; return the processes to start, in order."""
        raise NotImplementedError

    def healthy(self) -> bool:
        """A real probe of the service (not just an open port)."""
        raise NotImplementedError

    # ---- shared behaviour -----------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data" / self.name

    @property
    def conf_dir(self) -> Path:
        return self.work_dir / "conf" / self.name

    def processes(self) -> list[ManagedProcess]:
        return [ManagedProcess(n, self.settings.run_dir, self.settings.logs_dir) for n in self.process_names]

    def running_pids(self) -> list[int]:
        return [pid for proc in self.processes() if (pid := proc.pid()) is not None]

    def is_running(self) -> bool:
        return len(self.running_pids()) == len(self.process_names)

    def _require_installed(self, path: Path, what: str) -> None:
        if not path.exists():
            raise PlatformError(f"{self.name}: {what} is not installed at {path}; run `traffic setup` first")

    def _busy_ports(self) -> list[str]:
        return [f"{self.host}:{port}" for port in self.ports().values() if port_open(self.host, port, 0.3)]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise up/down of this service between processes sharing the work directory."""
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.settings.run_dir / f"{self.name}.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def up(self) -> bool:
        """Start the service unless it already runs; wait until healthy. True if it was started now."""
        with self._locked():
            return self._up()

    def _up(self) -> bool:
        if self.is_running():
            if self.healthy():
                return False
            self._wait_healthy(self.processes())
            return False
        self._down()  # a half-started service (one process died): clean up before starting again
        self.check_installed()
        busy = self._busy_ports()
        launches = self.prepare()
        started: list[ManagedProcess] = []
        for launch in launches:
            proc = ManagedProcess(launch.process, self.settings.run_dir, self.settings.logs_dir)
            proc.start(launch.argv, env=launch.env, cwd=self.work_dir)
            started.append(proc)
        try:
            self._wait_healthy(started, busy)
        except PlatformError:
            for proc in reversed(started):
                proc.stop(timeout_s=10)
            raise
        return True

    def _wait_healthy(self, procs: list[ManagedProcess], busy: Sequence[str] = ()) -> None:
        def dead() -> str | None:
            for proc in procs:
                reason = proc.exit_reason()
                if reason:
                    return f"{proc.name} {reason}"
            return None

        reason = wait_until(self.healthy, self.settings.startup_timeout_s, abort=dead)
        if reason is None:
            return
        log = next((p.log_file for p in procs if p.exit_reason()), procs[0].log_file)
        hint = ""
        if busy:
            hint = f" (port {busy[0]} was" if len(busy) == 1 else f" (ports {', '.join(busy)} were"
            hint += " already in use before the start)"
        raise PlatformError(f"{self.name} did not come up: {reason}{hint}; read {log}")

    def down(self) -> bool:
        """Stop this service's processes (only those its PID files record). True if any ran."""
        with self._locked():
            return self._down()

    def _down(self) -> bool:
        stopped = False
        for proc in reversed(self.processes()):
            stopped = proc.stop() or stopped
        return stopped

    def status(self) -> ServiceStatus:
        pids = tuple(self.running_pids())
        if not pids:
            state = "stopped"
        elif len(pids) < len(self.process_names):
            state = "degraded"
        else:
            state = "running"
        try:
            healthy = bool(pids) and self.healthy()
        except Exception:  # noqa: BLE001 - status reports, it does not fail
            healthy = False
        return ServiceStatus(self.name, state, pids, self.ports(), healthy,
                             tuple(p.log_file for p in self.processes()))

    def listening_ports(self) -> set[int]:
        ports: set[int] = set()
        for pid in self.running_pids():
            ports |= tree_listening_ports(pid)
        return ports
