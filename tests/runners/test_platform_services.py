"""The real services: `traffic platform up` twice then `down`, status, a start that must fail, the fixtures.

The up/down tests use their own work directory and ports 10000 above the defaults
(and smaller heaps), so they never touch the platform a developer (or another
test session) runs on the default ports.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from config.settings import PlatformSettings
from runners.platform import ALL_SERVICES, Platform
from runners.platform.process import port_open, tree_listening_ports

pytestmark = pytest.mark.integration

_OFFSET = 10_000
_PORT_FIELDS = (
    "kafka_port", "kafka_controller_port", "flink_rest_port", "flink_rpc_port", "job_server_port",
    "job_server_artifact_port", "job_server_expansion_port", "hdfs_namenode_port", "hdfs_http_port",
    "hdfs_datanode_port", "hdfs_datanode_http_port", "hdfs_datanode_ipc_port", "postgres_port",
)


def _isolated_env(work_dir: Path, offset: int = _OFFSET) -> dict[str, str]:
    defaults = PlatformSettings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFIC_")}
    env.update({f"TRAFFIC_{field.upper()}": str(getattr(defaults, field) + offset) for field in _PORT_FIELDS})
    env.update({
        "TRAFFIC_WORK_DIR": str(work_dir),
        "TRAFFIC_CACHE_DIR": str(defaults.cache_dir),
        "TRAFFIC_FLINK_TASKMANAGER_PROCESS_MB": "1280",
        "TRAFFIC_FLINK_TASK_SLOTS": "1",
        "TRAFFIC_STARTUP_TIMEOUT_S": "150",
    })
    return env


def _settings_from(env: dict[str, str]) -> PlatformSettings:
    values = {k.removeprefix("TRAFFIC_").lower(): v for k, v in env.items() if k.startswith("TRAFFIC_")}
    return PlatformSettings(**values)


def _traffic(env: dict[str, str], *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.flink
@pytest.mark.hdfs
@pytest.mark.slow
def test_up_twice_then_down_leaves_no_process_or_port(tmp_path: Path) -> None:
    env = _isolated_env(tmp_path / "work")
    settings = _settings_from(env)
    platform = Platform(settings)
    try:
        first = _traffic(env, "platform", "up")
        assert first.returncode == 0, first.stderr
        rows = {row.service: row for row in platform.status()}
        assert set(rows) == set(ALL_SERVICES)
        assert all(row.state == "running" and row.healthy for row in rows.values()), rows
        pids = {name: row.pids for name, row in rows.items()}

        second = _traffic(env, "platform", "up")
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("already running") == len(ALL_SERVICES)
        assert {row.service: row.pids for row in platform.status()} == pids

        status = _traffic(env, "platform", "status")
        assert status.returncode == 0
        lines = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:]}
        assert lines["kafka"][1:4] == ["running", str(pids["kafka"][0]), "ok"]
        assert f"rest={settings.flink_rest_port}" in lines["flink"][-1]
        assert f"http={settings.hdfs_http_port}" in lines["hdfs"][-1]

        procs = [p for name in ALL_SERVICES for pid in pids[name] for p in [psutil.Process(pid),
                 *psutil.Process(pid).children(recursive=True)]]
        ports = {port for name in ALL_SERVICES for pid in pids[name] for port in tree_listening_ports(pid)}
        assert {settings.kafka_port, settings.flink_rest_port, settings.job_server_port,
                settings.hdfs_http_port} <= ports
    finally:
        down = _traffic(env, "platform", "down")
    assert down.returncode == 0, down.stderr
    assert [p.pid for p in procs if _alive(p)] == []
    assert sorted(port for port in ports if port_open(settings.host, port)) == []
    assert not any((settings.run_dir).glob("*.pid"))
    after = _traffic(env, "platform", "status")
    assert after.returncode == 0
    assert [line.split()[1] for line in after.stdout.splitlines()[1:]] == ["stopped"] * len(ALL_SERVICES)


def test_taken_port_fails_with_one_line_error_naming_the_log(tmp_path: Path) -> None:
    env = _isolated_env(tmp_path / "work", offset=_OFFSET + 1000)
    env["TRAFFIC_STARTUP_TIMEOUT_S"] = "90"
    settings = _settings_from(env)
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((settings.host, settings.kafka_port))
        blocker.listen()
        result = _traffic(env, "platform", "up", "kafka")
    log = settings.logs_dir / "kafka.log"
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("traffic: error: kafka did not come up")
    assert f"read {log}" in result.stderr
    assert "already in use" in result.stderr
    assert log.exists() and "Address already in use" in log.read_text()
    assert Platform(settings).status(["kafka"])[0].state == "stopped"
    assert not (settings.run_dir / "kafka.pid").exists()


def test_kafka_fixture_and_fresh_topic(kafka_bootstrap: str, fresh_topic: Callable[..., str]) -> None:
    from confluent_kafka.admin import AdminClient

    topic = fresh_topic("platform-fixture", partitions=2)
    with AdminClient({"bootstrap.servers": kafka_bootstrap}) as admin:
        metadata = admin.list_topics(timeout=10)
    assert topic in metadata.topics
    assert len(metadata.topics[topic].partitions) == 2


@pytest.mark.flink
def test_flink_fixture_serves_rest_with_a_task_manager(flink_services: dict[str, str]) -> None:
    overview = httpx.get(f"{flink_services['rest_url']}/overview", timeout=10).json()
    assert overview["taskmanagers"] >= 1
    assert overview["flink-version"].startswith("1.19")
    host, port = flink_services["job_endpoint"].split(":")
    assert port_open(host, int(port))


@pytest.mark.hdfs
def test_hdfs_fixture_serves_webhdfs(hdfs_service: dict[str, object]) -> None:
    url = f"http://{hdfs_service['host']}:{hdfs_service['http_port']}/webhdfs/v1/"
    response = httpx.get(url, params={"op": "GETFILESTATUS", "user.name": hdfs_service["user"]}, timeout=10)
    assert response.status_code == 200
    assert response.json()["FileStatus"]["type"] == "DIRECTORY"


@pytest.mark.flink
@pytest.mark.slow
def test_job_server_runs_a_beam_pipeline_on_flink(flink_services: dict[str, str], tmp_path: Path) -> None:
    import uuid

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    job_name = f"platform-smoke-{uuid.uuid4().hex[:8]}"
    options = PipelineOptions([
        "--runner=PortableRunner", f"--job_endpoint={flink_services['job_endpoint']}",
        "--environment_type=LOOPBACK", f"--job_name={job_name}",
    ])
    out = tmp_path / "squares"
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | "Numbers" >> beam.Create(range(50))
             | "Square" >> beam.Map(lambda n: n * n)
             | "Sum" >> beam.CombineGlobally(sum)
             | "Write" >> beam.io.WriteToText(str(out), shard_name_template=""))
    assert out.read_text().strip() == str(sum(n * n for n in range(50)))
    jobs = httpx.get(f"{flink_services['rest_url']}/jobs/overview", timeout=10).json()["jobs"]
    assert [job["state"] for job in jobs if job["name"].startswith(job_name)] == ["FINISHED"]


@pytest.mark.hdfs
def test_beam_filesystem_round_trip_through_webhdfs(hdfs_service: dict[str, object]) -> None:
    import uuid

    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions([
        f"--hdfs_host={hdfs_service['host']}", f"--hdfs_port={hdfs_service['http_port']}",
        f"--hdfs_user={hdfs_service['user']}",
    ]))
    root = f"hdfs://platform-test-{uuid.uuid4().hex[:8]}"
    try:
        with FileSystems.create(f"{root}/hello.txt") as handle:
            handle.write(b"hello webhdfs")
        with FileSystems.open(f"{root}/hello.txt") as handle:
            assert handle.read() == b"hello webhdfs"
        assert [m.path for m in FileSystems.match([f"{root}/*"])[0].metadata_list] == [f"{root}/hello.txt"]
    finally:
        FileSystems.delete([root])
    assert not FileSystems.exists(f"{root}/hello.txt")
