"""Typed settings of the prediction API (env prefix ``TRAFFIC_API_``).

Examples: ``TRAFFIC_API_PORT=8010``, ``TRAFFIC_API_ADMIN_KEY=...`` (a secret),
``TRAFFIC_API_BOOTSTRAP_SERVERS=kafka:9092`` (``TRAFFIC_API_KAFKA_BOOTSTRAP`` is still read),
``TRAFFIC_API_CORS_ORIGINS='["https://ops.example.org"]'``,
``TRAFFIC_API_TILE_URL='https://tile.openstreetmap.org/{z}/{x}/{y}.png'``.
Served by the cached :func:`get_settings`; tests build their own ``ApiSettings(...)``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.settings import REPO_ROOT, default_registry_root
from config.settings import get_settings as get_platform_settings

__all__ = ["ApiSettings", "get_settings"]


def _default_bootstrap() -> str:
    return get_platform_settings().bootstrap_servers


def _default_registry() -> Path:
    """The one registry root of ``config.settings`` (so ``traffic train`` and ``traffic serve`` agree)."""
    return Path(default_registry_root())


class ApiSettings(BaseSettings):
    """How the API binds, consumes Kafka, fans out, and protects itself."""

    model_config = SettingsConfigDict(env_prefix="TRAFFIC_API_", extra="ignore", populate_by_name=True)

    host: str = Field(default="127.0.0.1", description="bind address of `traffic serve`")
    port: int = Field(default=8000, ge=0, le=65535)

    bootstrap_servers: str = Field(
        default_factory=_default_bootstrap,
        validation_alias=AliasChoices(
            "TRAFFIC_API_BOOTSTRAP_SERVERS", "TRAFFIC_API_KAFKA_BOOTSTRAP", "bootstrap_servers"
        ),
        description="Kafka bootstrap servers (default: the platform's, TRAFFIC_KAFKA_BOOTSTRAP_SERVERS)",
    )
    kafka_timeout_s: float = Field(default=5.0, gt=0, description="health-check and metadata timeout")
    metadata_refresh_s: float = Field(default=5.0, gt=0, description="how often new topics/partitions are picked up")
    backfill_per_partition: int = Field(
        default=2_000, ge=0, description="records re-read per partition at start-up to rebuild the latest state"
    )
    consume_actuals: bool = Field(default=True, description="also consume traffic-aggregates as the actual speeds")
    consume_batch_size: int = Field(default=5_000, ge=1, description="most records handed to the fan-out at once")
    consume_linger_ms: float = Field(default=5.0, ge=0, description="after a record arrives, wait this long for "
                                     "more, so a model step published at once is one delivery (one write per client)")

    step_gather_ms: float = Field(default=50.0, ge=0, description="while the newest model step in hand is smaller "
                                  "than a whole step, keep reading this long at most (stopping when half of it "
                                  "passes without a record), so a step reaches the clients as one frame")

    model_registry: Path = Field(default_factory=_default_registry, description="root of the model registry")

    client_queue_size: int = Field(default=5_000, ge=1, description="events buffered per SSE client before it lags")
    coalesce_ms: float = Field(default=100.0, ge=0, description="a client gets at most one write per this interval; "
                               "events arriving meanwhile share it (fewer syscalls with many clients)")
    gc_freeze: bool = Field(default=True, description="gc.freeze() after start-up: full collections skip it")
    gc_threshold0: int = Field(default=50_000, ge=1, description="allocations between young collections "
                               "(Python's default is 700; 50,000 cut GC time ~40x in the fan-out benchmark)")
    ring_buffer_size: int = Field(default=20_000, ge=1, description="recent events kept for Last-Event-ID resume")
    event_journal: Path | None = Field(default=None, description="file recording which Kafka record each recent "
                                       "event id was, so Last-Event-ID resumes survive a restart (api/journal.py); "
                                       "unset = ids start at 1 in every process")
    restore_wait_s: float = Field(default=30.0, gt=0, description="how long a resume waits at start-up for the "
                                  "journaled events to be read back")
    ping_s: float = Field(default=15.0, gt=0, description="a stream that wrote nothing this long gets a keep-alive "
                          "comment (checked once a second)")
    send_timeout_s: float = Field(default=10.0, gt=0, description="a client whose write stays blocked this "
                                  "long is dropped (one deadline per client, checked once a second)")
    shutdown_grace_s: float = Field(default=2.0, ge=0, description="time SSE streams get to say goodbye on shutdown")
    history_steps: int = Field(default=288, ge=1, description="steps of actuals/predictions kept per sensor (5 min)")
    alerts_kept: int = Field(default=1_000, ge=1, description="recent alerts served by GET /alerts")
    incidents_kept: int = Field(default=500, ge=1, description="closed incidents kept for GET /incidents "
                                "(open ones are always kept)")

    admin_key: SecretStr | None = Field(default=None, description="X-API-Key for /admin; admin is off when unset")
    cors_origins: list[str] = Field(default_factory=list, description="CORS allowlist; empty = same origin only")
    max_request_bytes: int = Field(default=64 * 1024, ge=1, description="larger request bodies get 413")
    rate_limit_per_s: float = Field(default=20.0, ge=0, description="requests per second per client IP; 0 = off")
    rate_limit_burst: int = Field(default=60, ge=1, description="token-bucket size of the rate limit")

    # The PostgreSQL store (TRAFFIC_POSTGRES_* of the platform settings): history, accuracy and drift.
    use_store: bool = Field(default=True, description="serve /history and /accuracy from the store")
    history_max_days: int = Field(default=31, ge=1, description="longest time range one /history call returns")
    accuracy_refresh_s: float = Field(default=15.0, gt=0, description="how often the accuracy gauges are refreshed")
    drift_window_s: int = Field(default=3600, ge=300, description="drift rules judge this rolling window")
    drift_coverage_min: float = Field(default=0.8, gt=0, le=1, description="coverage alarm below this share")
    drift_mae_factor: float = Field(default=1.5, gt=1, description="MAE alarm above this x the validation MAE")
    drift_min_scores: int = Field(default=30, ge=1, description="no alarm on fewer scored forecasts than this")

    tile_url: str | None = Field(default=None, description="map tile URL template; unset = offline map, no tiles")
    tile_attribution: str = Field(default="&copy; OpenStreetMap contributors")
    static_dir: Path = Field(default=REPO_ROOT / "api" / "static")
    require_vendor: bool = Field(default=True, description="refuse to start without Leaflet in static/vendor")


@lru_cache(maxsize=1)
def get_settings() -> ApiSettings:
    """The process-wide API settings (read once from the environment)."""
    return ApiSettings()
