"""Settings of the "no progress while behind" check of the streaming job (env prefix ``TRAFFIC_STREAM_WATCH_``).

Read by ``traffic platform status`` and the API's ``/health`` alike (docs/faults.md, "A stalled job is
reported"). Example: ``TRAFFIC_STREAM_WATCH_STALL_AFTER_S=300``.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["StreamWatchSettings"]


class StreamWatchSettings(BaseSettings):
    """When the streaming job counts as behind, and how long it may be behind without output before it is stalled."""

    model_config = SettingsConfigDict(env_prefix="TRAFFIC_STREAM_WATCH_", extra="ignore")

    behind_after_s: float = Field(
        default=900.0, ge=0, description="the job is behind when the newest raw record's event time is more than "
        "this ahead of the newest prediction's (3 steps: a window, its allowed lateness and a step of slack)")
    stall_after_s: float = Field(
        default=120.0, gt=0, description="behind with no new record on the job's output topics (events, dead "
        "letters, predictions) for this long = stalled")
    sample_every_s: float = Field(
        default=5.0, ge=0, description="/health reads the topics' ends at most this often (more calls reuse it)")
    samples_kept: int = Field(default=32, ge=2, description="samples kept per watcher (the current run's first "
                              "one is always among them)")
