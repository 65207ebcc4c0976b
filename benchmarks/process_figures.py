"""CPU time and resident memory of local processes, read from ``/proc``: the benchmarks' cost figures."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from config.settings import PlatformSettings

__all__ = ["RssSampler", "cpu_by_process", "cpu_s", "platform_pids"]


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def platform_pids(settings: PlatformSettings) -> dict[str, int]:
    """The local platform's processes (Kafka, Flink's JobManager and TaskManager, the job server) by name."""
    pids = {}
    for pid_file in sorted(settings.run_dir.glob("*.pid")):
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if Path(f"/proc/{pid}").exists():
            pids[pid_file.stem] = pid
    return pids


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a service's PID file may name the script that started its JVM)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], ()))
    return tree


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process with its descendants."""
    out = {}
    for name, pid in pids.items():
        total = 0.0
        for member in _tree(pid):
            try:
                total += cpu_s(member)
            except OSError:
                continue
        out[name] = total
    return out


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
