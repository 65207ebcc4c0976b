"""docker-compose.yml, the Dockerfile and deploy/ agree with the local platform.

No Docker engine runs here, so the compose file is checked the way Compose
itself reads it: ``docker-compose config`` (Debian's ``docker-compose`` package
parses and interpolates without an engine), run in a clean environment so the
values are the file's own defaults. The parsed result is compared with
``PlatformSettings()`` / ``TopicSettings()`` / ``ApiSettings()`` defaults and
with the configuration the local platform writes (runners/platform/*).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

import api.settings as api_settings
import runners.install as install
import runners.platform.flink as flink
import runners.platform.hdfs as hdfs_mod
import runners.platform.kafka as kafka_mod
import runners.platform.service as service_mod
from config.settings import REPO_ROOT, PlatformSettings
from schemas.topics import TopicSettings

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
FLINK_CONFIG = REPO_ROOT / "deploy" / "flink" / "config.yaml"
ROLE_LABEL = "org.traffic-forecast.role"
PROFILES = ("pipeline",)
# Container paths where a project setting must differ from the checkout's default.
# Settings that containers set on purpose (paths inside the image; Kafka by service name,
# checked in test_kafka_ports_match_platform_settings).
CONTAINER_PATH_SETTINGS = {
    "TRAFFIC_WORK_DIR", "TRAFFIC_CACHE_DIR", "TRAFFIC_KAFKA_BOOTSTRAP_SERVERS", "TRAFFIC_MODEL_REGISTRY",
}

DOCKER_COMPOSE = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None,
    reason="docker-compose is not installed (`traffic setup --with-test-tools` or `apt-get install docker-compose`)",
)

PLATFORM = PlatformSettings.model_fields
TOPICS = TopicSettings.model_fields
TOPIC_NAME_FIELDS = ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "incidents", "scores")


def platform_default(name: str) -> Any:
    return PLATFORM[name].get_default(call_default_factory=True)


# ---- running docker-compose ----------------------------------------------------------------


def _clean_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """PATH and HOME only: no TRAFFIC_*, PUBLISH_HOST or .env of the caller leaks into the render."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(overrides or {})
    return env


def _compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    profiles = [arg for profile in PROFILES for arg in ("--profile", profile)]
    argv = [DOCKER_COMPOSE, "-f", str(COMPOSE_FILE), "--project-directory", str(REPO_ROOT), *profiles, *args]
    return subprocess.run(argv, env=_clean_env(env), capture_output=True, text=True, timeout=120, check=False)


@lru_cache(maxsize=1)
def _compose_is_v2() -> bool:
    out = subprocess.run([DOCKER_COMPOSE, "version", "--short"], capture_output=True, text=True, check=False)
    return out.stdout.strip().lstrip("v").startswith("2")


def render(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The interpolated, normalised configuration as Compose sees it."""
    args = ["config", "--format", "json"] if _compose_is_v2() else ["config"]
    result = _compose(*args, env=env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)  # JSON is YAML


@lru_cache(maxsize=1)
def _default_render_json() -> str:
    return json.dumps(render())


@pytest.fixture
def config() -> dict[str, Any]:
    return json.loads(_default_render_json())


# ---- reading the rendered services ---------------------------------------------------------------


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def argv_of(service: dict[str, Any], key: str = "command") -> list[str]:
    value = service.get(key) or []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def flag_values(argv: list[str]) -> dict[str, str]:
    """``--name=value`` and ``--name value`` pairs of an argv."""
    flags: dict[str, str] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            name, sep, value = arg.partition("=")
            if not sep and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
            flags[name] = value
    return flags


def dynamic_properties(argv: list[str]) -> dict[str, str]:
    """Flink's ``-D key=value`` pairs."""
    props: dict[str, str] = {}
    for i, arg in enumerate(argv):
        if arg == "-D":
            key, _, value = argv[i + 1].partition("=")
            props[key] = value
        elif arg.startswith("-D") and "=" in arg:
            key, _, value = arg[2:].partition("=")
            props[key] = value
    return props


def published(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.add(int(port["published"]))
        else:
            parts = str(port).split(":")
            assert len(parts) == 3 and parts[1] == parts[2].split("/")[0], f"expect host:port:port, got {port}"
            ports.add(int(parts[1]))
    return ports


def memory_bytes(text: str | int) -> int:
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", str(text).strip().lower())
    assert match, f"unreadable memory size {text!r}"
    return int(float(match.group(1)) * 1024 ** "bkmgt".index(match.group(2) or "b"))


def memory_limit(service: dict[str, Any]) -> int:
    limit = (((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}).get("memory")
    if limit is None:
        limit = service.get("mem_limit")
    assert limit is not None, "no memory limit"
    return memory_bytes(limit)


def project_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the project's Python code (they read TRAFFIC_* settings): the app image's
    services and the TaskManagers, whose worker pools run the pipelines' SDK workers."""
    return {name: svc for name, svc in config["services"].items()
            if str(svc.get("image", "")).startswith("traffic-forecast:") or name == "flink-taskmanager"}


def role(service: dict[str, Any]) -> str:
    labels = service.get("labels") or {}
    if isinstance(labels, list):
        labels = dict(item.split("=", 1) for item in labels)
    return labels.get(ROLE_LABEL, "")


# ---- the compose file parses and is complete ---------------------------------------------------------------


@needs_compose
def test_compose_file_is_valid() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, result.stderr


@needs_compose
def test_all_components_are_defined(config: dict[str, Any]) -> None:
    expected = {"kafka", "flink-jobmanager", "flink-taskmanager", "beam-jobserver", "hdfs-namenode",
                "hdfs-datanode", "api", "topics-init", "train", "replay", "stream"}
    assert expected <= set(config["services"])
    assert {"data", "models", "checkpoints"} <= set(config.get("volumes") or {})


@needs_compose
def test_every_service_has_a_healthcheck_or_is_a_one_shot_job(config: dict[str, Any]) -> None:
    for name, svc in config["services"].items():
        kind = role(svc)
        assert kind in {"service", "job"}, f"{name}: label {ROLE_LABEL} must be 'service' or 'job'"
        if kind == "service":
            check = svc.get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
            assert check["test"][0] in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck test {check['test']!r}"
            assert svc.get("restart") in {"unless-stopped", "always", "on-failure"}, f"{name} is never restarted"
        else:
            assert svc.get("restart") == "no", f"one-shot job {name} must not be restarted"
            assert not svc.get("ports"), f"one-shot job {name} publishes ports"


@needs_compose
def test_depends_on_conditions_reference_existing_services(config: dict[str, Any]) -> None:
    services = config["services"]
    graph: dict[str, set[str]] = {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {dep: {"condition": "service_started"} for dep in deps}
        graph[name] = set(deps)
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on undefined service {dep}"
            condition = spec.get("condition", "service_started")
            target = services[dep]
            if condition == "service_completed_successfully":
                assert role(target) == "job", f"{name} waits for {dep} to complete, but {dep} is not a job"
            elif condition == "service_healthy":
                assert target.get("healthcheck", {}).get("test"), f"{name} waits for {dep} healthy: no healthcheck"
            else:
                assert condition == "service_started", f"{name} -> {dep}: unknown condition {condition}"
                # A job must never start before what it talks to is ready.
                assert role(svc) == "service", f"job {name} starts with {dep} merely started"
    # No cycles: repeatedly remove services whose dependencies are all resolved.
    resolved: set[str] = set()
    while len(resolved) < len(graph):
        ready = {name for name, deps in graph.items() if name not in resolved and deps <= resolved}
        assert ready, f"dependency cycle among {sorted(set(graph) - resolved)}"
        resolved |= ready


@needs_compose
def test_every_service_has_a_memory_limit_above_its_heap(config: dict[str, Any]) -> None:
    services = config["services"]
    for name, svc in services.items():
        assert memory_limit(svc) >= 128 * 2**20, f"{name}: memory limit too small to start"
    heaps = {
        "kafka": re.search(r"-Xmx(\w+)", env_of(services["kafka"])["KAFKA_HEAP_OPTS"]).group(1),
        "beam-jobserver": re.search(r"-Xmx(\w+)", env_of(services["beam-jobserver"])["JAVA_TOOL_OPTIONS"]).group(1),
        "hdfs-namenode": env_of(services["hdfs-namenode"])["HADOOP_HEAPSIZE_MAX"],
        "hdfs-datanode": env_of(services["hdfs-datanode"])["HADOOP_HEAPSIZE_MAX"],
        "flink-jobmanager": dynamic_properties(argv_of(services["flink-jobmanager"]))["jobmanager.memory.heap.size"],
        "flink-taskmanager": dynamic_properties(argv_of(services["flink-taskmanager"]))[
            "taskmanager.memory.process.size"],
    }
    for name, heap in heaps.items():
        assert memory_limit(services[name]) > memory_bytes(heap), f"{name}: limit not above its JVM size {heap}"


# ---- same topic names, ports and settings as the local platform -----------------------------------------


@needs_compose
def test_topic_settings_match_topic_settings_defaults(config: dict[str, Any]) -> None:
    services = project_services(config)
    assert services, "no service runs the project image"
    for field_name, field in TOPICS.items():
        if field.get_default() is None:
            continue
        key = f"TRAFFIC_TOPICS_{field_name.upper()}"
        for name, svc in services.items():
            assert env_of(svc).get(key) == str(field.get_default()), f"{name}: {key}"
    names = {env_of(services["api"])[f"TRAFFIC_TOPICS_{field_name.upper()}"] for field_name in TOPIC_NAME_FIELDS}
    assert names == set(TopicSettings().all_topics())
    kafka = env_of(config["services"]["kafka"])
    assert kafka["KAFKA_MESSAGE_MAX_BYTES"] == str(TOPICS["max_message_bytes"].get_default())


@needs_compose
def test_project_settings_in_containers_are_the_defaults(config: dict[str, Any]) -> None:
    for name, svc in project_services(config).items():
        for key, value in env_of(svc).items():
            field_name = key.removeprefix("TRAFFIC_").lower()
            if key.startswith("TRAFFIC_") and field_name in PLATFORM and key not in CONTAINER_PATH_SETTINGS:
                assert value == str(platform_default(field_name)), f"{name}: {key}={value}"


@needs_compose
def test_kafka_ports_match_platform_settings(config: dict[str, Any]) -> None:
    port, controller = platform_default("kafka_port"), platform_default("kafka_controller_port")
    kafka = config["services"]["kafka"]
    env = env_of(kafka)
    assert set(env["KAFKA_LISTENERS"].split(",")) == {f"PLAINTEXT://0.0.0.0:{port}",
                                                     f"CONTROLLER://0.0.0.0:{controller}"}
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://kafka:{port}"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"1@kafka:{controller}"
    assert f"-Xmx{platform_default('kafka_heap_mb')}m" in env["KAFKA_HEAP_OPTS"].split()
    assert published(kafka) == {port}
    for name, svc in project_services(config).items():
        assert env_of(svc)["TRAFFIC_KAFKA_BOOTSTRAP_SERVERS"] == f"kafka:{port}", name
    topics_init = flag_values(argv_of(config["services"]["topics-init"]))
    assert topics_init["--bootstrap-servers"] == f"kafka:{port}"


@needs_compose
def test_kafka_broker_configuration_matches_the_local_platform(config: dict[str, Any]) -> None:
    settings = PlatformSettings()
    text = kafka_mod.render_server_properties(settings.host, settings.kafka_port, settings.kafka_controller_port,
                                              Path("/unused"))
    local = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    env = env_of(config["services"]["kafka"])
    host_specific = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs"}
    for key, value in local.items():
        if key not in host_specific:
            assert env.get("KAFKA_" + key.upper().replace(".", "_")) == value, key


@needs_compose
def test_flink_settings_match_platform_settings(config: dict[str, Any]) -> None:
    expected = {
        "jobmanager.rpc.port": str(platform_default("flink_rpc_port")),
        "rest.port": str(platform_default("flink_rest_port")),
        "jobmanager.memory.heap.size": f"{platform_default('flink_jobmanager_heap_mb')}m",
        "taskmanager.memory.process.size": f"{platform_default('flink_taskmanager_process_mb')}m",
        "taskmanager.numberOfTaskSlots": str(platform_default("flink_task_slots")),
    }
    services = config["services"]
    for name in ("flink-jobmanager", "flink-taskmanager"):
        assert dynamic_properties(argv_of(services[name])) == expected, name
    assert published(services["flink-jobmanager"]) == {platform_default("flink_rest_port")}
    assert "flink-taskmanager" not in {s for s in services if published(services[s])}, "TaskManagers must scale"


@needs_compose
def test_job_server_matches_platform_settings(config: dict[str, Any]) -> None:
    server = config["services"]["beam-jobserver"]
    flags = flag_values(argv_of(server))
    ports = {"--job-port": "job_server_port", "--artifact-port": "job_server_artifact_port",
             "--expansion-port": "job_server_expansion_port"}
    for flag, setting in ports.items():
        assert flags[flag] == str(platform_default(setting)), flag
    assert published(server) == {platform_default(setting) for setting in ports.values()}
    assert flags["--flink-master"] == f"flink-jobmanager:{platform_default('flink_rest_port')}"
    assert f"-Xmx{platform_default('job_server_heap_mb')}m" in env_of(server)["JAVA_TOOL_OPTIONS"].split()


@needs_compose
def test_stream_job_submits_through_the_job_server_to_the_worker_pools(config: dict[str, Any]) -> None:
    stream = config["services"]["stream"]
    argv = argv_of(stream)
    assert argv[:3] == ["stream", "--runner", "flink"]
    assert flag_values(argv[:argv.index("--")])["--bootstrap"] == f"kafka:{platform_default('kafka_port')}"
    flags = flag_values(argv[argv.index("--") + 1:])  # Beam's own options
    assert flags["--job_endpoint"] == f"beam-jobserver:{platform_default('job_server_port')}"
    assert flags["--artifact_endpoint"] == f"beam-jobserver:{platform_default('job_server_artifact_port')}"
    assert flags["--environment_type"] == "EXTERNAL"
    pool_port = env_of(config["services"]["flink-taskmanager"])["BEAM_WORKER_POOL_PORT"]
    assert flags["--environment_config"] == f"localhost:{pool_port}"
    assert flags["--checkpointing_interval"] == str(platform_default("flink_checkpoint_interval_ms"))
    assert flags["--hdfs_host"] == "hdfs-namenode"
    assert flags["--hdfs_port"] == str(platform_default("hdfs_http_port"))
    assert flags["--hdfs_user"] == platform_default("hdfs_user")


@needs_compose
def test_replay_and_train_read_the_data_copied_into_the_image(config: dict[str, Any]) -> None:
    flags = flag_values(argv_of(config["services"]["replay"]))
    assert flags["--bootstrap-servers"] == f"kafka:{platform_default('kafka_port')}"
    copies = [args.split() for stage in dockerfile_stages() for kw, args in stage["instructions"]
              if kw == "COPY" and "--from=" not in args]
    image_dirs = {Path(words[-1]): REPO_ROOT / words[-2] for words in copies}
    for job in ("replay", "train"):
        data = Path(flag_values(argv_of(config["services"][job]))["--data"])
        source = next((src / data.relative_to(dst) for dst, src in image_dirs.items() if data.is_relative_to(dst)),
                      None)
        assert source is not None and source.is_file(), f"{job}: {data} is not copied into the image"


@needs_compose
def test_hdfs_matches_platform_settings(config: dict[str, Any]) -> None:
    services = config["services"]
    env = env_of(services["hdfs-namenode"])
    assert env == env_of(services["hdfs-datanode"])
    s = {name: platform_default(name) for name in PLATFORM if name.startswith("hdfs_")}
    assert env["CORE-SITE.XML_fs.defaultFS"] == f"hdfs://hdfs-namenode:{s['hdfs_namenode_port']}"
    assert env["CORE-SITE.XML_hadoop.http.staticuser.user"] == s["hdfs_user"]
    assert env["HDFS-SITE.XML_dfs.namenode.http-address"] == f"hdfs-namenode:{s['hdfs_http_port']}"
    assert env["HDFS-SITE.XML_dfs.datanode.address"].endswith(f":{s['hdfs_datanode_port']}")
    assert env["HDFS-SITE.XML_dfs.datanode.http.address"].endswith(f":{s['hdfs_datanode_http_port']}")
    assert env["HDFS-SITE.XML_dfs.datanode.ipc.address"].endswith(f":{s['hdfs_datanode_ipc_port']}")
    assert env["HADOOP_HEAPSIZE_MAX"] == f"{s['hdfs_heap_mb']}m"
    assert published(services["hdfs-namenode"]) == {s["hdfs_namenode_port"], s["hdfs_http_port"]}


@needs_compose
def test_hdfs_configuration_matches_the_local_platform(config: dict[str, Any]) -> None:
    settings = PlatformSettings()
    local = hdfs_mod.HdfsService(settings)
    env = env_of(config["services"]["hdfs-namenode"])
    compared = 0
    for prefix, properties in (("CORE-SITE.XML_", local.core_site()), ("HDFS-SITE.XML_", local.hdfs_site())):
        for key, value in properties.items():
            if settings.host in value or str(settings.work_dir) in value:
                continue  # addresses and directories differ by design
            assert env.get(prefix + key) == value, key
            compared += 1
    assert compared >= 5


@needs_compose
def test_api_matches_api_settings(config: dict[str, Any]) -> None:
    port = api_settings.ApiSettings.model_fields["port"].get_default()
    api = config["services"]["api"]
    env = env_of(api)
    assert argv_of(api) == ["serve"]
    assert env["TRAFFIC_API_PORT"] == str(port)
    assert env["TRAFFIC_API_HOST"] == "0.0.0.0"
    assert env["TRAFFIC_API_BOOTSTRAP_SERVERS"] == f"kafka:{platform_default('kafka_port')}"
    assert published(api) == {port}


@needs_compose
def test_every_port_and_topic_follows_its_traffic_variable() -> None:
    """Override every port and topic name: no default value may remain (nothing hard-coded)."""
    ports = {name: platform_default(name) for name in PLATFORM if name.endswith("_port")}
    ports["api_port"] = 8000
    overrides = {f"TRAFFIC_{name.upper()}": str(20000 + i) for i, name in enumerate(sorted(ports))}
    topic_names = {name: TOPICS[name].get_default() for name in TOPIC_NAME_FIELDS}
    overrides.update({f"TRAFFIC_TOPICS_{name.upper()}": f"x-{value}" for name, value in topic_names.items()})
    text = json.dumps(render(overrides))
    for name, default in ports.items():
        assert not re.search(rf"(?<![\d.]){default}(?!\d)", text), f"{name}={default} is hard-coded somewhere"
    for _name, value in topic_names.items():
        assert not re.search(rf'(?<![-\w]){re.escape(value)}(?![-\w])', text), f"topic {value} is hard-coded"
    overridden = render({"TRAFFIC_FLINK_TASK_SLOTS": "5", "TRAFFIC_TOPICS_PARTITIONS": "12"})
    tm = dynamic_properties(argv_of(overridden["services"]["flink-taskmanager"]))
    assert tm["taskmanager.numberOfTaskSlots"] == "5"
    assert env_of(overridden["services"]["topics-init"])["TRAFFIC_TOPICS_PARTITIONS"] == "12"


@needs_compose
def test_every_traffic_variable_names_a_real_setting(config: dict[str, Any]) -> None:
    known = {f"TRAFFIC_{name.upper()}" for name in PLATFORM}
    known |= {f"TRAFFIC_TOPICS_{name.upper()}" for name in TOPICS}
    known |= {f"TRAFFIC_API_{name.upper()}" for name in api_settings.ApiSettings.model_fields}
    unknown = {key for svc in project_services(config).values() for key in env_of(svc)
               if key.startswith("TRAFFIC_")} - known
    assert unknown == set()


# ---- volumes: checkpoints, artifacts, models ----------------------------------------------------------------


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Named volume -> container path."""
    found: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "volume":
                found[volume["source"]] = volume["target"]
        else:
            source, target = str(volume).split(":")[:2]
            if not source.startswith((".", "/")):
                found[source] = target
    return found


@needs_compose
def test_checkpoints_and_artifacts_live_on_shared_volumes(config: dict[str, Any]) -> None:
    services = config["services"]
    flink_conf = yaml.safe_load(FLINK_CONFIG.read_text())
    checkpoint_dir = flink_conf["state.checkpoints.dir"].removeprefix("file://")
    for name in ("flink-jobmanager", "flink-taskmanager"):
        target = mounts(services[name])["checkpoints"]
        assert checkpoint_dir.startswith(target + "/"), f"{name}: checkpoints volume is not {checkpoint_dir}"
    artifacts = flag_values(argv_of(services["beam-jobserver"]))["--artifacts-dir"]
    assert mounts(services["beam-jobserver"])["beam-artifacts"] == artifacts
    assert mounts(services["flink-taskmanager"])["beam-artifacts"] == artifacts
    registry = env_of(services["api"])["TRAFFIC_MODEL_REGISTRY"]
    for name in ("api", "train", "stream", "flink-taskmanager"):
        assert mounts(services[name])["models"] == registry, name


# ---- deploy/flink/config.yaml against the local platform's Flink configuration -------------------------------


def test_flink_config_matches_the_local_platform() -> None:
    ours = yaml.safe_load(FLINK_CONFIG.read_text())
    local = flink.FlinkService(PlatformSettings()).config_values()
    shared = ("jobmanager.memory.off-heap.size", "jobmanager.memory.jvm-metaspace.size",
              "jobmanager.execution.failover-strategy", "taskmanager.memory.managed.fraction", "parallelism.default",
              "taskmanager.network.sort-shuffle.min-buffers", "taskmanager.memory.task.off-heap.size",
              "taskmanager.memory.jvm-metaspace.size")
    for key in shared:
        assert str(ours[key]) == str(local[key]), key
    opts = ours["env.java.opts.all"].split()
    assert set(flink.JAVA17_OPENS) | set(service_mod.JAVA_BASE_OPTS) <= set(opts)
    # What the settings own is passed with -D from the TRAFFIC_* variables, never fixed here.
    for key in ("rest.port", "jobmanager.rpc.port", "jobmanager.memory.heap.size",
                "taskmanager.memory.process.size", "taskmanager.numberOfTaskSlots"):
        assert key not in ours, f"{key} belongs in docker-compose.yml's -D list"


@needs_compose
def test_flink_memory_configuration_resolves_within_the_container_limits(config: dict[str, Any]) -> None:
    """Flink's own BashJavaUtils derives the JVM sizes from config.yaml + the -D list, as the start scripts do."""
    flink_home = install.InstallLayout.from_settings(PlatformSettings()).flink_home
    java = shutil.which("java")
    if java is None or not (flink_home / "bin" / "bash-java-utils.jar").exists():
        pytest.skip("the local Flink distribution (`traffic setup`) or java is missing")
    services = config["services"]
    for name, command, prefix in (("flink-jobmanager", "GET_JM_RESOURCE_PARAMS", "jobmanager.memory."),
                                  ("flink-taskmanager", "GET_TM_RESOURCE_PARAMS", "taskmanager.memory.")):
        argv = [java, "-Xmx128m", "-cp", f"{flink_home / 'bin' / 'bash-java-utils.jar'}:{flink_home / 'lib'}/*",
                "org.apache.flink.runtime.util.bash.BashJavaUtils", command, "--configDir", str(FLINK_CONFIG.parent),
                *argv_of(services[name])]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        lines = [line.split(":", 1)[1] for line in result.stdout.splitlines()
                 if line.startswith("BASH_JAVA_UTILS_EXEC_RESULT:")]
        assert len(lines) == 2, result.stdout[-2000:]
        sizes = dynamic_properties(lines[1].split())
        if name == "flink-jobmanager":
            parts = ("heap.size", "off-heap.size", "jvm-metaspace.size", "jvm-overhead.max")
        else:
            parts = ("framework.heap.size", "task.heap.size", "framework.off-heap.size", "task.off-heap.size",
                     "network.max", "managed.size", "jvm-metaspace.size", "jvm-overhead.max")
        total = sum(memory_bytes(sizes[prefix + part]) for part in parts)
        assert total < memory_limit(services[name]), f"{name}: Flink needs {total} bytes"


# ---- Dockerfile ---------------------------------------------------------------------------------------------


def dockerfile_stages() -> list[dict[str, Any]]:
    """[{name, base, instructions: [(KEYWORD, args)]}] with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
            stages.append({"name": name, "base": words[0], "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((keyword, args.strip()))
    return stages


def dockerfile_args() -> dict[str, str]:
    args = {}
    for line in DOCKERFILE.read_text().splitlines():
        match = re.match(r"ARG\s+(\w+)=(\S+)", line.strip())
        if match:
            args.setdefault(match.group(1), match.group(2))
    return args


def effective(stages: list[dict[str, Any]], name: str, keyword: str) -> str | None:
    """The last KEYWORD instruction in effect for a stage, following FROM <stage> inheritance."""
    by_name = {stage["name"]: stage for stage in stages}
    stage = by_name[name]
    values = [args for kw, args in stage["instructions"] if kw == keyword]
    if values:
        return values[-1]
    return effective(stages, stage["base"], keyword) if stage["base"] in by_name else None


def test_dockerfile_installs_the_package_from_requirements_lock() -> None:
    stages = dockerfile_stages()
    runs = [args for stage in stages for kw, args in stage["instructions"] if kw == "RUN"]
    installs = [run for run in runs if re.search(r"\bpip install\b[^&;]*-c requirements\.lock[^&;]*\s\.(\s|$)", run)]
    assert installs, "no `pip install -c requirements.lock .`"
    copies = [args for stage in stages for kw, args in stage["instructions"] if kw == "COPY"]
    assert any(copy.split()[0] == "requirements.lock" for copy in copies)
    install_at = next(i for i, run in enumerate(runs) if run in installs)
    vendor_at = next(i for i, run in enumerate(runs) if "python -m api.vendor" in run)
    assert vendor_at <= install_at, "the dashboard's vendor files must be in place before the package is installed"
    assert any(re.search(r"\bnpm ci\b", run) for run in runs), "Leaflet must come from api/package-lock.json"
    base = dockerfile_args()["PYTHON_IMAGE"]
    assert base.startswith("python:3.11-slim"), base
    python_stages = [stage for stage in stages if stage["base"] in {"${PYTHON_IMAGE}", base}]
    assert {"build", "runtime"} <= {stage["name"] for stage in python_stages}


def test_dockerfile_images_run_as_non_root_with_the_traffic_entrypoint() -> None:
    stages = dockerfile_stages()
    assert stages[-1]["name"] == "app", "the default (last) target must be the project image"
    for target in ("app", "flink"):
        user = effective(stages, target, "USER")
        assert user is not None and user.split(":")[0] not in {"root", "0"}, f"{target} runs as {user}"
    assert json.loads(effective(stages, "app", "ENTRYPOINT")) == ["traffic"]
    runtime_runs = " ".join(args for kw, args in next(s for s in stages if s["name"] == "runtime")["instructions"]
                            if kw == "RUN")
    user = effective(stages, "app", "USER")
    assert re.search(rf"useradd\b.*\b{user}\b", runtime_runs), f"user {user} is never created"


@needs_compose
def test_compose_builds_the_targets_the_dockerfile_defines(config: dict[str, Any]) -> None:
    names = {stage["name"] for stage in dockerfile_stages()}
    for name, svc in config["services"].items():
        if "build" in svc:
            assert svc["build"]["target"] in names, name
            assert Path(svc["build"]["context"]).resolve() == REPO_ROOT


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", ".work"} <= set(ignored)
    for stage in dockerfile_stages():
        for keyword, args in stage["instructions"]:
            if keyword != "COPY" or "--from=" in args:
                continue
            sources = [word for word in args.split() if not word.startswith("--")][:-1]
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
                top = source.strip("/").split("/")[0]
                assert top not in ignored and source.strip("/") not in ignored, f"COPY {source} is .dockerignored"


def test_taskmanager_entrypoint_starts_the_worker_pool_beside_the_taskmanager() -> None:
    script = (REPO_ROOT / "deploy" / "flink" / "taskmanager-with-worker-pool.sh").read_text()
    assert "apache_beam.runners.worker.worker_pool_main" in script
    assert "--container_executable" in script
    assert "taskmanager.sh\" start-foreground \"$@\"" in script
    result = subprocess.run(["bash", "-n", str(REPO_ROOT / "deploy" / "flink" / "taskmanager-with-worker-pool.sh")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
