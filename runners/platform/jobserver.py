"""Beam's Flink job server (2.62.0, Flink 1.19) in front of the local Flink cluster.

The Python SDK (2.77.0) submits to it with ``--runner=PortableRunner
--job_endpoint=127.0.0.1:<job_server_port>``; it translates the portable
pipeline and submits it to Flink's REST endpoint.
"""

from __future__ import annotations

from runners.platform.flink import JAVA17_OPENS, FlinkService
from runners.platform.process import port_open
from runners.platform.service import JAVA_BASE_OPTS, Launch, Service, java_binary

__all__ = ["JOB_SERVER_MAIN", "JobServerService"]

JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"


class JobServerService(Service):
    name = "jobserver"
    process_names = ("jobserver",)
    requires = ("flink",)

    def ports(self) -> dict[str, int]:
        s = self.settings
        return {"job": s.job_server_port, "artifact": s.job_server_artifact_port,
                "expansion": s.job_server_expansion_port}

    def check_installed(self) -> None:
        self._require_installed(self.layout.jars_dir("flink-jobserver"), "the Beam Flink job server's jars")

    def argv(self) -> list[str]:
        s = self.settings
        heap = f"{s.job_server_heap_mb}m"
        return [
            java_binary(), f"-Xms{heap}", f"-Xmx{heap}", *JAVA_BASE_OPTS, *JAVA17_OPENS,
            "-cp", self.layout.classpath("flink-jobserver"), JOB_SERVER_MAIN,
            f"--flink-master={s.host}:{s.flink_rest_port}",
            f"--flink-conf-dir={FlinkService(s).conf_dir}",
            f"--job-host={s.host}",
            f"--job-port={s.job_server_port}",
            f"--artifact-port={s.job_server_artifact_port}",
            f"--expansion-port={s.job_server_expansion_port}",
            f"--artifacts-dir={self.data_dir / 'artifacts'}",
        ]

    def prepare(self) -> list[Launch]:
        (self.data_dir / "artifacts").mkdir(parents=True, exist_ok=True)
        return [Launch("jobserver", self.argv())]

    def healthy(self) -> bool:
        listening = self.listening_ports()
        wanted = {self.settings.job_server_port, self.settings.job_server_artifact_port}
        return wanted <= listening and port_open(self.host, self.settings.job_server_port)
