"""Beam's HDFS options for the platform's WebHDFS, built in this one place."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from config.settings import PlatformSettings, get_settings

__all__ = ["hdfs_options", "hdfs_options_for"]


def hdfs_options(settings: PlatformSettings | None = None) -> dict[str, Any]:
    """Beam's HDFS options for the platform's WebHDFS: ``hdfs_host``, ``hdfs_port`` (HTTP) and ``hdfs_user``."""
    s = settings or get_settings()
    return {"hdfs_host": s.host, "hdfs_port": s.hdfs_http_port, "hdfs_user": s.hdfs_user}


def hdfs_options_for(paths: Iterable[str | None], settings: PlatformSettings | None = None) -> dict[str, Any]:
    """:func:`hdfs_options` when any of ``paths`` is ``hdfs://``, else an empty dict."""
    if any(str(p).startswith("hdfs://") for p in paths if p):
        return hdfs_options(settings)
    return {}
