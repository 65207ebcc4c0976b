"""HDFS: one NameNode and one DataNode from the Hadoop 3.4 jars, WebHDFS on the NameNode's HTTP port."""

from __future__ import annotations

import subprocess
from pathlib import Path
from xml.sax.saxutils import escape

import httpx

from runners.platform.flink import JAVA17_OPENS
from runners.platform.process import PlatformError
from runners.platform.service import JAVA_BASE_OPTS, Launch, Service, java_binary

__all__ = ["HdfsService", "render_site_xml"]

_LOG4J = """\
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN
log4j.logger.org.apache.hadoop.hdfs.server.datanode.DataNode.clienttrace=WARN
log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit=WARN
"""


def render_site_xml(properties: dict[str, str]) -> str:
    """A Hadoop ``*-site.xml`` document."""
    body = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(str(v))}</value></property>\n"
        for k, v in properties.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


class HdfsService(Service):
    name = "hdfs"
    process_names = ("hdfs-namenode", "hdfs-datanode")

    def ports(self) -> dict[str, int]:
        s = self.settings
        return {"namenode": s.hdfs_namenode_port, "http": s.hdfs_http_port, "datanode": s.hdfs_datanode_port,
                "datanode-http": s.hdfs_datanode_http_port, "datanode-ipc": s.hdfs_datanode_ipc_port}

    def check_installed(self) -> None:
        self._require_installed(self.layout.jars_dir("hadoop"), "the Hadoop jars")

    @property
    def name_dir(self) -> Path:
        return self.data_dir / "name"

    @property
    def default_fs(self) -> str:
        return f"hdfs://{self.host}:{self.settings.hdfs_namenode_port}"

    def core_site(self) -> dict[str, str]:
        return {
            "fs.defaultFS": self.default_fs,
            "hadoop.tmp.dir": str(self.data_dir / "tmp"),
            "hadoop.http.staticuser.user": self.settings.hdfs_user,
            "hadoop.security.authentication": "simple",
        }

    def hdfs_site(self) -> dict[str, str]:
        s, h = self.settings, self.host
        return {
            "dfs.replication": "1",
            "dfs.permissions.enabled": "false",
            "dfs.webhdfs.enabled": "true",
            "dfs.namenode.name.dir": self.name_dir.as_uri(),
            "dfs.datanode.data.dir": (self.data_dir / "data").as_uri(),
            "dfs.namenode.rpc-address": f"{h}:{s.hdfs_namenode_port}",
            "dfs.namenode.http-address": f"{h}:{s.hdfs_http_port}",
            "dfs.namenode.safemode.extension": "0",
            "dfs.namenode.datanode.registration.ip-hostname-check": "false",
            "dfs.datanode.hostname": h,
            "dfs.datanode.address": f"{h}:{s.hdfs_datanode_port}",
            "dfs.datanode.http.address": f"{h}:{s.hdfs_datanode_http_port}",
            "dfs.datanode.ipc.address": f"{h}:{s.hdfs_datanode_ipc_port}",
            "dfs.heartbeat.interval": "1",
            "dfs.namenode.heartbeat.recheck-interval": "30000",
        }

    def _java(self, main: str, *args: str) -> list[str]:
        heap = f"{self.settings.hdfs_heap_mb}m"
        return [java_binary(), f"-Xms{heap}", f"-Xmx{heap}", *JAVA_BASE_OPTS, *JAVA17_OPENS,
                f"-Dhadoop.log.dir={self.settings.logs_dir}", f"-Dhadoop.home.dir={self.data_dir}",
                f"-Dhadoop.tmp.dir={self.data_dir / 'tmp'}", f"-DHADOOP_USER_NAME={self.settings.hdfs_user}",
                "-cp", f"{self.conf_dir}:{self.layout.classpath('hadoop')}", main, *args]

    def prepare(self) -> list[Launch]:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "core-site.xml").write_text(render_site_xml(self.core_site()))
        (self.conf_dir / "hdfs-site.xml").write_text(render_site_xml(self.hdfs_site()))
        (self.conf_dir / "log4j.properties").write_text(_LOG4J)
        if not (self.name_dir / "current" / "VERSION").exists():
            self._format()
        pkg = "org.apache.hadoop.hdfs.server"
        return [Launch("hdfs-namenode", self._java(f"{pkg}.namenode.NameNode")),
                Launch("hdfs-datanode", self._java(f"{pkg}.datanode.DataNode"))]

    def _format(self) -> None:
        log = self.processes()[0].log_file
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = self._java("org.apache.hadoop.hdfs.server.namenode.NameNode", "-format", "-nonInteractive", "-force")
        with log.open("ab") as out:
            rc = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if rc != 0:
            raise PlatformError(f"hdfs: formatting the NameNode failed (exit {rc}); read {log}")

    def _jmx(self, bean: str) -> dict:
        url = f"http://{self.host}:{self.settings.hdfs_http_port}/jmx"
        beans = httpx.get(url, params={"qry": f"Hadoop:service=NameNode,name={bean}"}, timeout=3).json()["beans"]
        return beans[0] if beans else {}

    def healthy(self) -> bool:
        if self.settings.hdfs_http_port not in self.listening_ports():
            return False
        state = self._jmx("FSNamesystemState")
        if int(state.get("NumLiveDataNodes", 0)) < 1:
            return False
        if self._jmx("NameNodeInfo").get("Safemode"):
            return False
        url = f"http://{self.host}:{self.settings.hdfs_http_port}/webhdfs/v1/"
        response = httpx.get(url, params={"op": "GETFILESTATUS", "user.name": self.settings.hdfs_user}, timeout=3)
        return response.status_code == 200
