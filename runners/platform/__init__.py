"""The local stream platform: Kafka, Flink (+ Beam job server), HDFS and PostgreSQL on 127.0.0.1.

    from runners.platform import Platform
    started = Platform(settings).up(["kafka"])   # names started now (not the ones already running)
    Platform(settings).status()                  # [ServiceStatus, ...]
    Platform(settings).down(started)             # stop only those

Everything (PID files, logs, data, generated configuration) lives under
``settings.work_dir``: ``run/``, ``logs/``, ``data/<service>/``, ``conf/<service>/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from config.settings import PlatformSettings, get_settings
from runners.platform.flink import FlinkService
from runners.platform.hdfs import HdfsService
from runners.platform.jobserver import JobServerService
from runners.platform.kafka import KafkaService
from runners.platform.postgres import PostgresService
from runners.platform.process import PlatformError
from runners.platform.service import Service, ServiceStatus

__all__ = ["ALL_SERVICES", "Platform", "PlatformError", "ServiceStatus"]

_SERVICE_CLASSES: dict[str, type[Service]] = {
    "kafka": KafkaService,
    "flink": FlinkService,
    "jobserver": JobServerService,
    "hdfs": HdfsService,
    "postgres": PostgresService,
}
ALL_SERVICES: tuple[str, ...] = tuple(_SERVICE_CLASSES)


class Platform:
    """Starts, stops and reports the local services for one set of settings (one work directory)."""

    def __init__(self, settings: PlatformSettings | None = None) -> None:
        settings = settings or get_settings()
        # Absolute paths: the services run with the work directory as their current directory.
        self.settings = settings.model_copy(update={
            "work_dir": Path(settings.work_dir).expanduser().resolve(),
            "cache_dir": Path(settings.cache_dir).expanduser().resolve(),
        })
        self.services: dict[str, Service] = {name: cls(self.settings) for name, cls in _SERVICE_CLASSES.items()}

    def _names(self, names: Iterable[str] | None) -> list[str]:
        wanted = list(names) if names else list(ALL_SERVICES)
        unknown = [n for n in wanted if n not in self.services]
        if unknown:
            raise PlatformError(f"unknown service {unknown[0]!r}; choose from {', '.join(ALL_SERVICES)}")
        return [n for n in ALL_SERVICES if n in wanted]  # always in dependency order

    def service(self, name: str) -> Service:
        return self.services[self._names([name])[0]]

    def up(self, names: Sequence[str] | None = None, echo=lambda line: None) -> list[str]:
        """Start the services (and what they require) that are not running; return those started now."""
        wanted = self._names(names)
        with_deps = self._names([dep for n in wanted for dep in self.services[n].requires] + wanted)
        started: list[str] = []
        for name in with_deps:
            echo(f"platform: {name}: starting")
            if self.services[name].up():
                started.append(name)
                echo(f"platform: {name}: up")
            else:
                echo(f"platform: {name}: already running")
        return started

    def down(self, names: Sequence[str] | None = None, echo=lambda line: None) -> list[str]:
        """Stop the services (in reverse order) that this work directory's PID files record."""
        stopped: list[str] = []
        for name in reversed(self._names(names)):
            if self.services[name].down():
                stopped.append(name)
                echo(f"platform: {name}: stopped")
            else:
                echo(f"platform: {name}: was not running")
        return stopped

    def status(self, names: Sequence[str] | None = None) -> list[ServiceStatus]:
        return [self.services[n].status() for n in self._names(names)]

    def is_running(self, name: str) -> bool:
        return self.service(name).is_running()
