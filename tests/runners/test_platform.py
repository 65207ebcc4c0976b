"""Unit tests of the platform's configuration rendering, service ordering and process handling."""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest
import yaml

from config.settings import PlatformSettings
from runners.platform import ALL_SERVICES, Platform, PlatformError
from runners.platform.cli import format_status
from runners.platform.flink import FlinkService, render_flink_config
from runners.platform.hdfs import HdfsService, render_site_xml
from runners.platform.jobserver import JOB_SERVER_MAIN, JobServerService
from runners.platform.kafka import KafkaService, new_cluster_id, render_server_properties
from runners.platform.process import ManagedProcess
from runners.platform.service import ServiceStatus


@pytest.fixture
def settings(tmp_path: Path) -> PlatformSettings:
    return PlatformSettings(work_dir=tmp_path / "work", cache_dir=tmp_path / "cache", kafka_port=29092,
                            kafka_controller_port=29093, flink_rest_port=28081, hdfs_http_port=29870)


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_kafka_properties_bind_loopback_kraft_single_node(tmp_path: Path) -> None:
    props = _props(render_server_properties("127.0.0.1", 29092, 29093, tmp_path / "log"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == str(tmp_path / "log")
    assert props["offsets.topic.replication.factor"] == "1"


def test_kafka_launch_uses_heap_and_server_properties(settings: PlatformSettings) -> None:
    argv = KafkaService(settings)._java("kafka.Kafka", "server.properties")
    assert f"-Xmx{settings.kafka_heap_mb}m" in argv
    assert "-Djava.net.preferIPv4Stack=true" in argv
    assert argv[-2:] == ["kafka.Kafka", "server.properties"]
    assert argv[argv.index("-cp") + 1] == str(settings.cache_dir / "jars" / "kafka" / "*")


def test_flink_config_is_yaml_with_loopback_binds(settings: PlatformSettings) -> None:
    service = FlinkService(settings)
    parsed = yaml.safe_load(render_flink_config(service.config_values()))
    for key in ("jobmanager.rpc.address", "jobmanager.bind-host", "taskmanager.bind-host", "taskmanager.host",
                "rest.address", "rest.bind-address"):
        assert parsed[key] == "127.0.0.1", key
    assert parsed["rest.port"] == 28081
    assert "-Djava.net.preferIPv4Stack=true" in parsed["env.java.opts.all"]
    assert "--add-opens=java.base/java.util=ALL-UNNAMED" in parsed["env.java.opts.all"]
    assert "-XX:+ExitOnOutOfMemoryError" in parsed["env.java.opts.taskmanager"].split()  # no silent stall
    assert "-XX:TieredStopAtLevel=1" in parsed["env.java.opts.taskmanager"].split()  # C1 only by default
    tiered = FlinkService(settings.model_copy(update={"flink_taskmanager_c1_only": False})).config_values()
    assert tiered["env.java.opts.taskmanager"].split() == ["-XX:+ExitOnOutOfMemoryError"]
    assert parsed["jobmanager.memory.heap.size"] == f"{settings.flink_jobmanager_heap_mb}m"
    assert parsed["taskmanager.memory.process.size"] == f"{settings.flink_taskmanager_process_mb}m"
    assert parsed["state.checkpoints.dir"].startswith((settings.work_dir / "data" / "flink").as_uri())
    # A job whose LOOPBACK worker died must fail for good in the end, not restart forever holding its slots;
    # a job whose TaskManager was killed once must be restarted whenever that happens.
    assert parsed["restart-strategy.type"] == "failure-rate"
    assert 0 < parsed["restart-strategy.failure-rate.max-failures-per-interval"] <= 10


def test_the_taskmanager_runs_under_the_supervisor(settings: PlatformSettings, tmp_path: Path) -> None:
    service = FlinkService(settings.model_copy(update={"work_dir": tmp_path}))
    service.layout.flink_home.joinpath("conf").mkdir(parents=True, exist_ok=True)
    for name in ("log4j-console.properties", "log4j.properties", "logback-console.xml", "logback.xml"):
        service.layout.flink_home.joinpath("conf", name).touch()
    launches = {launch.process: launch.argv for launch in service.prepare()}
    supervised = launches["flink-taskmanager"]
    assert supervised[1:5] == ["-m", "runners.platform.supervise", "--name", "flink-taskmanager"]
    assert supervised[-2:] == [str(service.layout.flink_home / "bin" / "taskmanager.sh"), "start-foreground"]
    assert launches["flink-jobmanager"][-1] == "start-foreground"


def test_job_server_points_at_the_flink_rest_port(settings: PlatformSettings) -> None:
    argv = JobServerService(settings).argv()
    assert JOB_SERVER_MAIN in argv
    assert "--flink-master=127.0.0.1:28081" in argv
    assert f"--job-port={settings.job_server_port}" in argv
    assert f"--expansion-port={settings.job_server_expansion_port}" in argv
    assert f"-Xmx{settings.job_server_heap_mb}m" in argv


def test_hdfs_site_xml_parses_and_binds_loopback(settings: PlatformSettings) -> None:
    service = HdfsService(settings)
    root = ET.fromstring(render_site_xml(service.hdfs_site()))
    values = {p.findtext("name"): p.findtext("value") for p in root.iter("property")}
    assert values["dfs.namenode.http-address"] == "127.0.0.1:29870"
    assert values["dfs.permissions.enabled"] == "false"
    assert values["dfs.replication"] == "1"
    assert values["dfs.datanode.address"] == f"127.0.0.1:{settings.hdfs_datanode_port}"
    assert service.core_site()["fs.defaultFS"] == f"hdfs://127.0.0.1:{settings.hdfs_namenode_port}"


def test_site_xml_escapes_values() -> None:
    root = ET.fromstring(render_site_xml({"a<b": "x&y"}))
    assert root.find("property/name").text == "a<b"
    assert root.find("property/value").text == "x&y"


def test_platform_orders_services_and_rejects_unknown(settings: PlatformSettings) -> None:
    platform = Platform(settings)
    assert platform._names(["hdfs", "kafka"]) == ["kafka", "hdfs"]
    assert platform._names(None) == list(ALL_SERVICES) == ["kafka", "flink", "jobserver", "hdfs", "postgres"]
    with pytest.raises(PlatformError, match="unknown service 'zookeeper'"):
        platform._names(["zookeeper"])


def test_services_not_installed_name_traffic_setup(settings: PlatformSettings) -> None:
    with pytest.raises(PlatformError, match="run `traffic setup` first"):
        Platform(settings).up(["kafka"])


def test_status_of_a_fresh_work_dir_is_stopped(settings: PlatformSettings) -> None:
    rows = Platform(settings).status()
    assert [r.service for r in rows] == list(ALL_SERVICES)
    assert all(r.state == "stopped" and not r.pids and not r.healthy for r in rows)
    assert Platform(settings).down() == []


def test_format_status_lists_pid_health_and_ports(tmp_path: Path) -> None:
    row = ServiceStatus("kafka", "running", (123,), {"broker": 9092}, True, (tmp_path / "kafka.log",))
    text = format_status([row])
    assert text.splitlines()[0].split() == ["SERVICE", "STATE", "PID", "HEALTH", "PORTS"]
    assert text.splitlines()[1].split() == ["kafka", "running", "123", "ok", "broker=9092"]


def test_managed_process_start_and_stop_the_whole_group(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", tmp_path / "run", tmp_path / "logs")
    script = ("import subprocess, time; subprocess.Popen(['sleep', '300']); "
              "print('child', 'started', flush=True); time.sleep(300)")
    pid = proc.start([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while "child started" not in proc.log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    tree = psutil.Process(pid).children(recursive=True)
    assert proc.pid() == pid and tree, "the child process should be running"
    assert proc.stop(timeout_s=10) is True
    assert proc.pid() is None and not proc.pid_file.exists()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    assert proc.stop() is False


def test_stale_pid_file_is_not_trusted(tmp_path: Path) -> None:
    proc = ManagedProcess("stale", tmp_path / "run", tmp_path / "logs")
    proc.run_dir.mkdir(parents=True)
    # Our own PID with a wrong start time: a recycled PID must never be signalled.
    proc.pid_file.write_text(f"{psutil.Process().pid} 1\n")
    assert proc.pid() is None
    assert proc.stop() is False
    assert psutil.Process().is_running()


@pytest.mark.parametrize("process_mb", [2048, 1280])
def test_taskmanager_memory_resolves_with_the_grpc_off_heap(settings: PlatformSettings, tmp_path: Path,
                                                           process_mb: int) -> None:
    """Flink's own BashJavaUtils accepts the TaskManager memory of the default and of a small TaskManager."""
    import shutil
    import subprocess

    from runners.install import InstallLayout

    flink_home = InstallLayout.from_settings(PlatformSettings()).flink_home
    java = shutil.which("java")
    if java is None or not (flink_home / "bin" / "bash-java-utils.jar").exists():
        pytest.skip("the local Flink distribution (`traffic setup`) or java is missing")
    sized = settings.model_copy(update={"flink_taskmanager_process_mb": process_mb})
    values = FlinkService(sized).config_values()
    if process_mb == 2048:
        assert values["taskmanager.memory.task.off-heap.size"] == "192m"
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.yaml").write_text(render_flink_config(values))
    result = subprocess.run(
        [java, "-Xmx128m", "-cp", f"{flink_home / 'bin' / 'bash-java-utils.jar'}:{flink_home / 'lib'}/*",
         "org.apache.flink.runtime.util.bash.BashJavaUtils", "GET_TM_RESOURCE_PARAMS", "--configDir", str(conf)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    assert "taskmanager.memory.task.off-heap.size=" in result.stdout


def test_a_new_kraft_cluster_id_never_reads_as_an_option(monkeypatch) -> None:
    """One random id in 64 started with "-" and the storage tool took it for a flag (a CI run failed so)."""
    import uuid

    dash_first = uuid.UUID(bytes=bytes([0xFB]) + bytes(15))  # base64 "-wAAAA...": the case that failed
    draws = iter([dash_first, uuid.UUID(int=12345)])
    monkeypatch.setattr("runners.platform.kafka.uuid.uuid4", lambda: next(draws))
    cluster_id = new_cluster_id()
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAwOQ" and len(cluster_id) == 22  # the dash-first draw was skipped
    assert next(draws, None) is None
