"""Flink jobs through Flink's own REST API (for what the Beam 2.62 job server cannot do).

Cancelling a streaming job through the job server ends the Beam invocation but
leaves the Flink job running (and restarting without its LOOPBACK worker), so
the ``traffic`` commands and the tests also cancel it here, by job name.

The job server cannot stop a job with a savepoint either:
:func:`stop_with_savepoint` asks Flink (``POST /jobs/<id>/stop``) and waits for
the savepoint's path; :func:`stop_flink_job_with_savepoint` does it by job name.
A job restores from that path when it is submitted with the Beam Flink option
``--savepoint_path=<path>`` (``traffic stream --from-savepoint <path>``).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from schemas.exceptions import TrafficError

__all__ = [
    "ACTIVE_STATES",
    "FlinkJobError",
    "FlinkUnavailableError",
    "SavepointError",
    "UnknownFlinkJobError",
    "cancel_flink_jobs",
    "flink_jobs",
    "stop_flink_job_with_savepoint",
    "stop_with_savepoint",
]

ACTIVE_STATES = ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING")


class FlinkJobError(TrafficError):
    """A request to Flink's REST API about a job failed."""


class FlinkUnavailableError(FlinkJobError):
    """Flink's REST endpoint does not answer."""


class UnknownFlinkJobError(FlinkJobError):
    """Flink has no (running) job with that id or name."""


class SavepointError(FlinkJobError):
    """Flink could not take the savepoint (the job may still be running)."""


def _request(method: str, url: str, timeout_s: float, **kwargs) -> httpx.Response:
    try:
        return httpx.request(method, url, timeout=timeout_s, **kwargs)
    except httpx.HTTPError as exc:
        base = url.split("/jobs", 1)[0]
        raise FlinkUnavailableError(
            f"Flink's REST API at {base} does not answer ({type(exc).__name__}); "
            "start it with `traffic platform up flink`"
        ) from None


def _error_text(response: httpx.Response) -> str:
    """Flink's first error line (its ``errors`` hold whole Java stack traces)."""
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        errors = []
    text = str(errors[0]) if errors else response.text or response.reason_phrase
    return text.strip().splitlines()[0][:300] if text.strip() else f"HTTP {response.status_code}"


def flink_jobs(rest_url: str, name_prefix: str = "", timeout_s: float = 10.0) -> list[dict]:
    """Jobs (``jid``, ``name``, ``state``) whose name starts with ``name_prefix``."""
    jobs = httpx.get(f"{rest_url}/jobs/overview", timeout=timeout_s).json()["jobs"]
    return [job for job in jobs if job["name"].startswith(name_prefix)]


def cancel_flink_jobs(rest_url: str, name_prefix: str, timeout_s: float = 10.0) -> list[str]:
    """Cancel the running jobs whose name starts with ``name_prefix``; their ids."""
    cancelled = []
    for job in flink_jobs(rest_url, name_prefix, timeout_s):
        if job["state"] in ACTIVE_STATES:
            httpx.patch(f"{rest_url}/jobs/{job['jid']}", params={"mode": "cancel"}, timeout=timeout_s)
            cancelled.append(job["jid"])
    return cancelled


def stop_with_savepoint(
    rest_url: str, job_id: str, target_dir: str | Path | None = None, timeout_s: float = 120.0,
    poll_s: float = 0.5,
) -> str:
    """Stop job ``job_id`` with a savepoint (no drain: timers and windows stay pending); the savepoint's path.

    ``target_dir``: a local directory (made absolute, created if missing) or a URI Flink can write
    (``file://``, ``hdfs://``); None uses the cluster's ``state.savepoints.dir``. Raises
    :class:`FlinkUnavailableError`, :class:`UnknownFlinkJobError` or :class:`SavepointError` (also when
    the savepoint does not complete within ``timeout_s``).
    """
    body: dict[str, object] = {"drain": False}
    if target_dir is not None:
        target = str(target_dir)
        if "://" not in target:
            path = Path(target).expanduser().resolve()
            path.mkdir(parents=True, exist_ok=True)
            target = path.as_uri()
        body["targetDirectory"] = target
    response = _request("POST", f"{rest_url}/jobs/{job_id}/stop", timeout_s=10.0, json=body)
    if response.status_code in (400, 404):
        raise UnknownFlinkJobError(f"Flink has no job {job_id}: {_error_text(response)}")
    if response.status_code >= 300:
        raise SavepointError(f"Flink refused to stop job {job_id} with a savepoint: {_error_text(response)}")
    trigger = response.json()["request-id"]
    deadline = time.monotonic() + timeout_s
    while True:
        status = _request("GET", f"{rest_url}/jobs/{job_id}/savepoints/{trigger}", timeout_s=10.0)
        if status.status_code >= 300:
            raise SavepointError(f"the savepoint of job {job_id} is unknown to Flink: {_error_text(status)}")
        info = status.json()
        if info.get("status", {}).get("id") == "COMPLETED":
            operation = info.get("operation") or {}
            if "location" in operation:
                return str(operation["location"])
            cause = operation.get("failure-cause") or {}
            trace = str(cause.get("stack-trace") or cause.get("class") or "no reason given").strip()
            first = trace.splitlines()[0][:300] if trace else "?"
            if "FlinkJobNotFoundException" in trace:
                raise UnknownFlinkJobError(f"Flink has no job {job_id}: {first}")
            raise SavepointError(f"the savepoint of job {job_id} failed: {first}")
        if time.monotonic() > deadline:
            raise SavepointError(f"the savepoint of job {job_id} did not complete within {timeout_s:.0f} s")
        time.sleep(poll_s)


def stop_flink_job_with_savepoint(
    rest_url: str, job_name: str, target_dir: str | Path | None = None, timeout_s: float = 120.0
) -> str:
    """Stop the one running job named ``job_name`` with a savepoint; the savepoint's path."""
    try:
        jobs = flink_jobs(rest_url, job_name)
    except httpx.HTTPError:
        raise FlinkUnavailableError(
            f"Flink's REST API at {rest_url} does not answer; start it with `traffic platform up flink`"
        ) from None
    running = [job for job in jobs if job["name"] == job_name and job["state"] in ACTIVE_STATES]
    if len(running) != 1:
        found = "no running job" if not running else f"{len(running)} running jobs"
        raise UnknownFlinkJobError(f"Flink at {rest_url} has {found} named {job_name!r}")
    return stop_with_savepoint(rest_url, running[0]["jid"], target_dir, timeout_s)
