"""Typed settings of the local platform (ports, heaps, directories), the model registry root and Kafka clients.

Every value can be set from the environment with the ``TRAFFIC_`` prefix, e.g.
``TRAFFIC_KAFKA_PORT=19092`` or ``TRAFFIC_WORK_DIR=/tmp/traffic``. Settings are
served by the cached :func:`get_settings`; tests and commands that need other
values build their own ``PlatformSettings(...)`` instead of mutating a global.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PlatformSettings", "get_settings", "default_registry_root", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "traffic-forecast"


class PlatformSettings(BaseSettings):
    """Where the local services live and how they are sized."""

    model_config = SettingsConfigDict(env_prefix="TRAFFIC_", extra="ignore")

    cache_dir: Path = Field(default_factory=_default_cache_dir, description="downloads (jars, Flink, Go tools)")
    work_dir: Path = Field(default=REPO_ROOT / ".work", description="PID files, logs and service data")
    host: str = Field(default="127.0.0.1", description="every service binds here")
    network: str = Field(default="metr-la", description="the sensor network every command uses unless given "
                         "--network: 'metr-la' (bundled), an imported network's name, or a network directory")

    kafka_port: int = 9092
    # Read from TRAFFIC_KAFKA_BOOTSTRAP_SERVERS; clients use the `bootstrap_servers` property below.
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="clients' bootstrap list when Kafka is not the local broker, e.g. kafka:9092"
    )
    kafka_controller_port: int = 9093
    kafka_heap_mb: int = 512

    flink_rest_port: int = 8081
    flink_rpc_port: int = 6123
    flink_jobmanager_heap_mb: int = 768
    flink_taskmanager_process_mb: int = 2048
    flink_task_slots: int = 2
    # The TaskManager's JIT stops at C1 (-XX:TieredStopAtLevel=1). Every portable Beam job loads the runner's
    # classes anew, and on 2 cores the C2 compiler of a fresh job took as much CPU as the job's own Java work:
    # a 24 h catch-up's TaskManager CPU fell from 7.4-8.7 s to 3.4-3.9 s, its drain from 13.4-15.3 s to 11.1-12.8 s,
    # and a 96 h catch-up drained in the same time (docs/benchmarks.md). False: the JVM's tiered default, for
    # machines with cores to spare and jobs that run for days at high rates.
    flink_taskmanager_c1_only: bool = True
    flink_checkpoint_interval_ms: int = 10_000
    # The longest a streaming Flink bundle stays open (Beam's default is 1000 ms); every fused stage waits for it.
    flink_max_bundle_ms: int = 50
    # The Python SDK harness's cache of user state across bundles (Beam's default, 0, turns it off, and then
    # every read of a key's state is a round trip to the runner: the streaming job's bottleneck on Flink).
    sdk_state_cache_mb: int = 256

    job_server_port: int = 8099
    job_server_artifact_port: int = 8098
    job_server_expansion_port: int = 8097
    job_server_heap_mb: int = 512

    hdfs_namenode_port: int = 8020
    hdfs_http_port: int = 9870
    hdfs_datanode_port: int = 9866
    hdfs_datanode_http_port: int = 9864
    hdfs_datanode_ipc_port: int = 9867
    hdfs_heap_mb: int = 384
    hdfs_user: str = "traffic"

    # PostgreSQL (Debian's server, run as the unprivileged OS user below): the store of actuals, predictions
    # and scores behind the API's history and accuracy routes (docs/scoring-and-history.md).
    postgres_port: int = 5432
    postgres_db: str = "traffic"
    postgres_user: str = "traffic"
    postgres_password: SecretStr = Field(default=SecretStr("traffic-local"), description="local store password")
    postgres_os_user: str = Field(default="postgres", description="the OS user the server runs as (never root)")
    store_retention_days: float = Field(default=90.0, gt=0, description="rows older than this (event time) pruned")

    startup_timeout_s: float = 120.0
    kafka_client_timeout_s: float = Field(
        default=5.0, gt=0, description="Kafka clients' connection-setup and metadata timeout"
    )

    # Read from TRAFFIC_MODEL_REGISTRY; code uses the `registry_root` property below.
    model_registry: str | None = Field(
        default=None, description="model registry root, local or hdfs:// (default: <work_dir>/models)"
    )

    # Read from TRAFFIC_FEATURE_TABLES; code uses the `feature_tables_root` property below.
    feature_tables: str | None = Field(
        default=None,
        description="where `traffic train` keeps the feature tables it builds, local or hdfs:// "
        "(default: <work_dir>/tables)",
    )

    @property
    def bootstrap_servers(self) -> str:
        """Where Kafka clients connect: the configured list, else the local broker."""
        return self.kafka_bootstrap_servers or f"{self.host}:{self.kafka_port}"

    @property
    def registry_root(self) -> str:
        """The model registry's root: ``$TRAFFIC_MODEL_REGISTRY``, else ``<work_dir>/models``."""
        return self.model_registry or str(self.work_dir / "models")

    @property
    def feature_tables_root(self) -> str:
        """The root of the training feature tables: ``$TRAFFIC_FEATURE_TABLES``, else ``<work_dir>/tables``."""
        return self.feature_tables or str(self.work_dir / "tables")

    @property
    def flink_rest_url(self) -> str:
        return f"http://{self.host}:{self.flink_rest_port}"

    @property
    def postgres_dsn(self) -> str:
        """libpq connection string of the store (password included: do not log it)."""
        password = self.postgres_password.get_secret_value()
        return (f"host={self.host} port={self.postgres_port} dbname={self.postgres_db} "
                f"user={self.postgres_user} password={password} connect_timeout=5")

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.work_dir / "run"


@lru_cache(maxsize=1)
def get_settings() -> PlatformSettings:
    """The process-wide platform settings (read once from the environment)."""
    return PlatformSettings()



def default_registry_root() -> str:
    """The registry root as the environment says now (not cached: tests and commands change it)."""
    return PlatformSettings().registry_root
