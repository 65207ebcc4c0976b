"""CPU time and resident memory of local processes: the benchmarks' cost figures.

The platform's own process records (:mod:`runners.platform`) name the services'
processes; ``psutil`` reads their counters.
"""

from __future__ import annotations

import threading

import psutil

from config.settings import PlatformSettings
from runners.platform import Platform
from runners.platform.process import process_tree

__all__ = ["RssSampler", "cpu_by_process", "cpu_s", "platform_pids"]


def platform_pids(settings: PlatformSettings) -> dict[str, int]:
    """The running local services' processes by name (Kafka, Flink's JobManager and TaskManager, ...)."""
    pids = {}
    for service in Platform(settings).services.values():
        for proc in service.processes():
            if (pid := proc.pid()) is not None:
                pids[proc.name] = pid
    return pids


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads) so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process with its descendants (a service's recorded process may be the
    script that started its JVM)."""
    out = {}
    for name, pid in pids.items():
        total = 0.0
        for proc in process_tree(pid):
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        out[name] = total
    return out


def _rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


class RssSampler(threading.Thread):
    """The resident set of one process, sampled every 0.5 s until :meth:`stop`: start, peak and end, in MB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = [_rss_mb(pid)]
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.samples.append(_rss_mb(self.pid))

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.join(timeout=5)
        self.samples.append(_rss_mb(self.pid))
        return {"start_mb": round(self.samples[0], 1), "peak_mb": round(max(self.samples), 1),
                "end_mb": round(self.samples[-1], 1)}
