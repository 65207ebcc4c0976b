"""Flink jobs through Flink's own REST API (for what the Beam 2.62 job server cannot do).

Cancelling a streaming job through the job server ends the Beam invocation but
leaves the Flink job running (and restarting without its LOOPBACK worker), so
the ``traffic`` commands and the tests also cancel it here, by job name.
"""

from __future__ import annotations

import httpx

__all__ = ["flink_jobs", "cancel_flink_jobs"]


def flink_jobs(rest_url: str, name_prefix: str = "", timeout_s: float = 10.0) -> list[dict]:
    """Jobs (``jid``, ``name``, ``state``) whose name starts with ``name_prefix``."""
    jobs = httpx.get(f"{rest_url}/jobs/overview", timeout=timeout_s).json()["jobs"]
    return [job for job in jobs if job["name"].startswith(name_prefix)]


def cancel_flink_jobs(rest_url: str, name_prefix: str, timeout_s: float = 10.0) -> list[str]:
    """Cancel the running jobs whose name starts with ``name_prefix``; their ids."""
    cancelled = []
    for job in flink_jobs(rest_url, name_prefix, timeout_s):
        if job["state"] in ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING"):
            httpx.patch(f"{rest_url}/jobs/{job['jid']}", params={"mode": "cancel"}, timeout=timeout_s)
            cancelled.append(job["jid"])
    return cancelled
