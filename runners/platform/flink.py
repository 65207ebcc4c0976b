"""A Flink 1.19 session cluster: one JobManager and one TaskManager on 127.0.0.1.

The TaskManager runs under :mod:`runners.platform.supervise`: when it crashes or
is killed it is started again within seconds, registers with the JobManager, and
the restart strategy (failure rate: up to 10 failures in 5 minutes, 10 s apart)
restores the job on it from its last checkpoint, with nobody stepping in.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import httpx

from runners.install import FLINK_VERSION
from runners.platform.service import JAVA_BASE_OPTS, Launch, Service

__all__ = ["JAVA17_OPENS", "SORT_SHUFFLE_MIN_BUFFERS", "TASKMANAGER_METASPACE", "FlinkService", "render_flink_config"]

SORT_SHUFFLE_MIN_BUFFERS = 64
TASKMANAGER_METASPACE = "512m"
TASKMANAGER_TASK_OFF_HEAP_MB = 192


def task_off_heap_mb(process_mb: int) -> int:
    """Direct memory for Beam's gRPC channels: 192 MB in a TaskManager of 2 GB or more, less in a smaller one.

    (Metaspace, framework memory and network buffers are fixed sizes: a 1280 MB TaskManager has ~140 MB left
    for task heap and task off-heap together.)
    """
    return TASKMANAGER_TASK_OFF_HEAP_MB if process_mb >= 2048 else max(32, process_mb // 20)

# The module openings Flink's own distribution config passes on Java 17 (plus IPv4 for this sandbox).
JAVA17_OPENS: tuple[str, ...] = (
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    *(f"--add-opens=java.base/{pkg}=ALL-UNNAMED" for pkg in (
        "java.lang", "java.net", "java.io", "java.nio", "sun.nio.ch", "java.lang.reflect", "java.text",
        "java.time", "java.util", "java.util.concurrent", "java.util.concurrent.atomic",
        "java.util.concurrent.locks")),
)


def render_flink_config(settings_values: dict[str, object]) -> str:
    """Flat ``key: value`` YAML (Flink 1.19 ``config.yaml``); strings are JSON-quoted, valid YAML."""
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in settings_values.items())


class FlinkService(Service):
    name = "flink"
    process_names = ("flink-jobmanager", "flink-taskmanager")

    def ports(self) -> dict[str, int]:
        return {"rest": self.settings.flink_rest_port, "rpc": self.settings.flink_rpc_port}

    def check_installed(self) -> None:
        self._require_installed(self.layout.flink_home / "lib" / f"flink-dist-{FLINK_VERSION}.jar",
                                f"Flink {FLINK_VERSION}")

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def savepoint_dir(self) -> Path:
        """Where savepoints go when a stop or trigger names no directory (``state.savepoints.dir``)."""
        return self.data_dir / "savepoints"

    def config_values(self) -> dict[str, object]:
        s = self.settings
        return {
            "env.java.opts.all": " ".join((*JAVA17_OPENS, *JAVA_BASE_OPTS)),
            # A TaskManager out of heap only logged it and kept its slots: the job stayed RUNNING without moving
            # (overload run 4, docs/faults.md: a state append too large for the heap). Exiting instead lets the
            # supervisor start a new one and the job restart from its last checkpoint, or fail for good where it
            # keeps failing (the restart strategy below): a failure an operator sees.
            # C1 only: see the setting flink_taskmanager_c1_only.
            "env.java.opts.taskmanager": "-XX:+ExitOnOutOfMemoryError"
            + (" -XX:TieredStopAtLevel=1" if s.flink_taskmanager_c1_only else ""),
            "jobmanager.rpc.address": s.host,
            "jobmanager.rpc.port": s.flink_rpc_port,
            "jobmanager.bind-host": s.host,
            "jobmanager.memory.heap.size": f"{s.flink_jobmanager_heap_mb}m",
            "jobmanager.memory.off-heap.size": "128m",
            "jobmanager.memory.jvm-metaspace.size": "256m",
            "jobmanager.execution.failover-strategy": "region",
            # With checkpointing Flink's default is to restart a failed job forever. A LOOPBACK job whose
            # submitting process is gone can never come back and would hold its slots for good: a job that fails
            # more than 10 times within 5 minutes (restarts 10 s apart) is given up. A fixed count (5 attempts)
            # gave up on a killed TaskManager: the attempts ran out before its replacement registered, and a
            # long-running job used up its attempts over days. A failure rate bounds only a failing loop.
            "restart-strategy.type": "failure-rate",
            "restart-strategy.failure-rate.max-failures-per-interval": 10,
            "restart-strategy.failure-rate.failure-rate-interval": "5 min",
            "restart-strategy.failure-rate.delay": "10 s",
            # A TaskManager that is gone (killed, crashed) is declared lost after this long without a heartbeat
            # (Flink's default 50 s); its slots are then freed for the job's restart on the supervised replacement.
            "heartbeat.timeout": 20000,
            "taskmanager.bind-host": s.host,
            "taskmanager.host": s.host,
            "taskmanager.numberOfTaskSlots": s.flink_task_slots,
            "taskmanager.memory.process.size": f"{s.flink_taskmanager_process_mb}m",
            "taskmanager.memory.managed.fraction": 0.2,
            # Every portable Beam job loads the job server's classes in its own class loader, and lingering gRPC
            # threads keep old loaders alive: 256m (Flink's default) ran out after ~25 jobs. 512m (~50 jobs) is
            # carved out of the same process size, leaving ~800 MiB of JVM heap instead of ~980 MiB.
            "taskmanager.memory.jvm-metaspace.size": TASKMANAGER_METASPACE,
            # Direct memory for Beam's gRPC (Fn API data and state channels): Flink's default of none beside the
            # framework's 128m and the network buffers failed a 24 h catch-up at ~1,000 events/s with
            # "OutOfMemoryError: Cannot reserve 2097152 bytes of direct buffer memory".
            "taskmanager.memory.task.off-heap.size": f"{task_off_heap_mb(s.flink_taskmanager_process_mb)}m",
            # Each blocking (batch) result partition reserves this many 32 KiB network buffers; Flink's 512 let only
            # ~9 partitions run at once in the ~160 MB network memory of a 2 GB TaskManager, and Beam's batch jobs
            # have more ("Insufficient number of network buffers: required 512").
            "taskmanager.network.sort-shuffle.min-buffers": SORT_SHUFFLE_MIN_BUFFERS,
            "parallelism.default": 1,
            # Flink ships a network buffer downstream when full or after this long (default 100 ms): every
            # exchange between two stages of a streaming job (each keyed or grouped step) waited for it.
            "execution.buffer-timeout.interval": "10 ms",
            "rest.address": s.host,
            "rest.bind-address": s.host,
            "rest.port": s.flink_rest_port,
            "blob.server.port": "0",
            # Checkpoints and savepoints under <work>/data/flink; the last 3 checkpoints of a job are kept, also
            # when it is cancelled, so a job can be restarted from one (`traffic stream --from-savepoint <chk-N>`).
            "state.backend.type": "hashmap",
            "state.checkpoints.dir": self.checkpoint_dir.as_uri(),
            "state.savepoints.dir": self.savepoint_dir.as_uri(),
            "state.checkpoints.num-retained": 3,
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "io.tmp.dirs": str(self.data_dir / "tmp"),
            "web.tmpdir": str(self.data_dir / "web"),
            "web.upload.dir": str(self.data_dir / "upload"),
            "env.pid.dir": str(self.settings.run_dir / "flink"),
            "env.log.dir": str(self.settings.logs_dir / "flink"),
        }

    def prepare(self) -> list[Launch]:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("checkpoints", "savepoints", "tmp", "web", "upload"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.settings.run_dir / "flink").mkdir(parents=True, exist_ok=True)
        for stale in (self.settings.run_dir / "flink").glob("*.pid"):  # Flink's scripts only ever append to these
            stale.unlink()
        (self.settings.logs_dir / "flink").mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "config.yaml").write_text(render_flink_config(self.config_values()))
        dist_conf = self.layout.flink_home / "conf"
        for name in ("log4j-console.properties", "log4j.properties", "logback-console.xml", "logback.xml"):
            shutil.copyfile(dist_conf / name, self.conf_dir / name)
        env = dict(os.environ, FLINK_CONF_DIR=str(self.conf_dir), FLINK_LOG_DIR=str(self.settings.logs_dir / "flink"),
                   FLINK_PID_DIR=str(self.settings.run_dir / "flink"))
        env.pop("FLINK_HOME", None)
        bin_dir = self.layout.flink_home / "bin"
        return [
            Launch("flink-jobmanager", ["bash", str(bin_dir / "jobmanager.sh"), "start-foreground"], env),
            Launch("flink-taskmanager", [sys.executable, "-m", "runners.platform.supervise", "--name",
                                         "flink-taskmanager", "--", "bash", str(bin_dir / "taskmanager.sh"),
                                         "start-foreground"], env),
        ]

    def healthy(self) -> bool:
        if self.settings.flink_rest_port not in self.listening_ports():
            return False
        overview = httpx.get(f"{self.settings.flink_rest_url}/overview", timeout=3).raise_for_status().json()
        return int(overview.get("taskmanagers", 0)) >= 1 and int(overview.get("slots-total", 0)) >= 1
