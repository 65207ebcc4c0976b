"""Start-up time and resident memory of each local service.

    .venv/bin/python benchmarks/platform_startup.py [--rounds 2] [--port-offset 15000] \
        [--write .work/benchmarks/platform.md]

Runs in a fresh temporary work directory on ports shifted by ``--port-offset``
(so the platform on the default ports is left alone) with the default heaps.
Each service is started alone, in dependency order (the job server after
Flink); the time is `Platform.up([service])` until the health probe passes
(the first round includes formatting Kafka's and HDFS's storage). RSS is the
sum over the service's processes and their children, read after a short settle.
"""

from __future__ import annotations

import argparse
import os
import platform as host_platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

from config.settings import PlatformSettings
from runners.platform import ALL_SERVICES, Platform

__all__ = ["main", "measure"]

_PORT_FIELDS = (
    "kafka_port", "kafka_controller_port", "flink_rest_port", "flink_rpc_port", "job_server_port",
    "job_server_artifact_port", "job_server_expansion_port", "hdfs_namenode_port", "hdfs_http_port",
    "hdfs_datanode_port", "hdfs_datanode_http_port", "hdfs_datanode_ipc_port",
)


def _rss_mb(pids: tuple[int, ...]) -> float:
    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            total += sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            continue
    return total / 2**20


def measure(settings: PlatformSettings, rounds: int, settle_s: float) -> list[dict[str, object]]:
    platform = Platform(settings)
    rows: list[dict[str, object]] = []
    try:
        for round_no in range(1, rounds + 1):
            for name in ALL_SERVICES:
                started = time.monotonic()
                platform.up([name])
                startup_s = time.monotonic() - started
                time.sleep(settle_s)
                status = platform.status([name])[0]
                rows.append({"round": round_no, "service": name, "startup_s": startup_s,
                             "rss_mb": _rss_mb(status.pids), "processes": len(status.pids)})
                print(f"round {round_no}  {name:10} start-up {startup_s:6.1f} s   RSS {rows[-1]['rss_mb']:7.0f} MB",
                      flush=True)
            platform.down()
    finally:
        platform.down()
    return rows


def _markdown(rows: list[dict[str, object]], settings: PlatformSettings, command: str) -> str:
    heaps = {"kafka": f"heap {settings.kafka_heap_mb} MB",
             "flink": (f"JM heap {settings.flink_jobmanager_heap_mb} MB, "
                       f"TM process {settings.flink_taskmanager_process_mb} MB"),
             "jobserver": f"heap {settings.job_server_heap_mb} MB",
             "hdfs": f"NN + DN heap {settings.hdfs_heap_mb} MB each"}
    lines = [
        "# Local platform: start-up time and resident memory",
        "",
        (f"- Machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"{host_platform.system()} {host_platform.release()}, shared with other work while measuring"),
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `{command}`",
        ("- Start-up: `Platform.up([service])` until its health probe passes (Kafka: metadata from the broker; "
        "Flink: REST `/overview` with a TaskManager; job server: job and artifact ports served; HDFS: a live "
        "DataNode, safe mode off and WebHDFS answering). Round 1 starts from an empty work directory "
        "(formats Kafka's and HDFS's storage), later rounds restart on existing data."),
        "- RSS: summed over the service's processes (and their children) after a short settle, idle.",
        "",
        "| round | service | processes | start-up (s) | RSS (MB) | sizing |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(f"| {row['round']} | {row['service']} | {row['processes']} | {row['startup_s']:.1f} | "
                     f"{row['rss_mb']:.0f} | {heaps[str(row['service'])]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port-offset", type=int, default=15_000)
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--write", type=Path, help="also write the figures as Markdown to this file")
    args = parser.parse_args(argv)
    defaults = PlatformSettings()
    work_dir = Path(tempfile.mkdtemp(prefix="traffic-bench-"))
    overrides = {field: getattr(defaults, field) + args.port_offset for field in _PORT_FIELDS}
    settings = PlatformSettings(work_dir=work_dir, cache_dir=defaults.cache_dir, **overrides)
    try:
        rows = measure(settings, args.rounds, args.settle_s)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    if args.write:
        command = "python benchmarks/platform_startup.py " + " ".join(argv if argv is not None else sys.argv[1:])
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(_markdown(rows, settings, command.strip()))
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
