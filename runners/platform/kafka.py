"""Apache Kafka 4.x, one KRaft node that is both broker and controller."""

from __future__ import annotations

import subprocess
import uuid
from base64 import urlsafe_b64encode
from pathlib import Path

from runners.platform.process import PlatformError
from runners.platform.service import JAVA_BASE_OPTS, Launch, Service, java_binary

__all__ = ["KafkaService", "new_cluster_id", "render_server_properties"]


def new_cluster_id() -> str:
    """A random KRaft cluster id (22 URL-safe base64 characters), never starting with ``-``.

    One id in 64 used to start with ``-``, and the storage tool then read it as an option
    ("argument --cluster-id/-t: expected one argument"): ``traffic platform up`` failed at random.
    """
    while True:
        cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id

_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.coordinator.name = kafka.coordinator
logger.coordinator.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""


def render_server_properties(host: str, port: int, controller_port: int, log_dir: Path) -> str:
    """``server.properties`` of a single-node KRaft cluster bound to ``host``."""
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "168",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


class KafkaService(Service):
    name = "kafka"
    process_names = ("kafka",)

    def ports(self) -> dict[str, int]:
        return {"broker": self.settings.kafka_port, "controller": self.settings.kafka_controller_port}

    def check_installed(self) -> None:
        self._require_installed(self.layout.jars_dir("kafka"), "the Kafka broker's jars")

    def _java(self, main: str, *args: str) -> list[str]:
        heap = f"{self.settings.kafka_heap_mb}m"
        return [java_binary(), f"-Xms{heap}", f"-Xmx{heap}", *JAVA_BASE_OPTS, "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self.conf_dir / 'log4j2.properties'}",
                "-cp", self.layout.classpath("kafka"), main, *args]

    def prepare(self) -> list[Launch]:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        log_dir = self.data_dir / "log"
        props = self.conf_dir / "server.properties"
        props.write_text(render_server_properties(self.host, self.settings.kafka_port,
                                                  self.settings.kafka_controller_port, log_dir))
        (self.conf_dir / "log4j2.properties").write_text(_LOG4J2)
        if not (log_dir / "meta.properties").exists():
            self._format(props)
        return [Launch("kafka", self._java("kafka.Kafka", str(props)))]

    def _format(self, props: Path) -> None:
        cluster_id = new_cluster_id()
        log = self.processes()[0].log_file
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            rc = subprocess.call(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if rc != 0:
            raise PlatformError(f"kafka: formatting the KRaft storage failed (exit {rc}); read {log}")

    def healthy(self) -> bool:
        if self.settings.kafka_port not in self.listening_ports():
            return False
        from kafka_client import KafkaUnavailableError, admin_client

        try:
            admin_client(self.settings.bootstrap_servers, timeout_s=3)
        except KafkaUnavailableError:
            return False
        return True
