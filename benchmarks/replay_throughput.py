"""Maximum events/s of the replay producer on this machine (``replay(..., speed=inf)``).

Replays ``--days`` days of the bundled METR-LA copy (207 sensors, 288 steps a
day) as fast as possible into a fresh topic on the local Kafka, for a few
producer settings, ``--repeats`` times each, and prints the median, min and max
events/s (events = readings + injected bad records, counted until the producer
has flushed, i.e. every record acknowledged by the broker). Also measured:
Avro encoding alone, the ceiling the Python producer loop cannot beat.
With ``--write-doc`` the report goes to ``.work/benchmarks/replay.md`` (raw output; the figures
are recorded in a new section at the end of ``docs/benchmarks.md``, their one home).

    .venv/bin/python benchmarks/replay_throughput.py --days 7 --repeats 3 --write-doc
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import confluent_kafka
from confluent_kafka.admin import NewTopic

from config.settings import REPO_ROOT, get_settings
from kafka_client import admin_client, delete_topics, producer_config
from ml.dataset import load_metrla
from pipelines.replay import replay
from pipelines.replay_encoding import RawReadingEncoder
from schemas.codec import AvroCodec

__all__ = ["main"]

T0 = 1_330_560_000_000  # 2012-03-01T00:00Z
DAY_MS = 24 * 3600 * 1000

# (label, producer settings, bad-record fraction)
CASES: list[tuple[str, dict, float]] = [
    ("zstd, linger 20 ms, batch 1 MB (default)", {"compression": "zstd", "linger_ms": 20.0}, 0.0),
    ("lz4, linger 20 ms", {"compression": "lz4", "linger_ms": 20.0}, 0.0),
    ("no compression, linger 20 ms", {"compression": "none", "linger_ms": 20.0}, 0.0),
    ("zstd, linger 0 ms", {"compression": "zstd", "linger_ms": 0.0}, 0.0),
    ("zstd, linger 20 ms, --inject-bad 0.01", {"compression": "zstd", "linger_ms": 20.0}, 0.01),
]


def encode_rate(n: int = 200_000) -> float:
    codec = AvroCodec("raw_reading")
    started = time.perf_counter()
    for i in range(n):
        codec.encode({"sensor_id": "773869", "event_time": T0 + i, "speed_mph": 64.25})
    return n / (time.perf_counter() - started)


def step_encode_rate(days: int = 7) -> float:
    data = load_metrla().between(T0, T0 + days * DAY_MS)
    encoder = RawReadingEncoder.for_codec(AvroCodec("raw_reading"), data.sensor_ids)
    assert encoder is not None
    started = time.perf_counter()
    for i in range(data.n_steps):
        encoder.step(int(data.times_ms[i]), data.speed[i])
    return data.speed.size / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", default=get_settings().bootstrap_servers)
    parser.add_argument("--days", type=int, default=7, help="days of data per run (%(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--write-doc", action="store_true",
                        help="also write the report to .work/benchmarks/replay.md (record it in docs/benchmarks.md)")
    args = parser.parse_args(argv)

    data = load_metrla().between(T0, T0 + args.days * DAY_MS)
    admin = admin_client(args.bootstrap_servers)
    print(f"{args.days} days x {len(data.sensor_ids)} sensors = {data.speed.size:,} readings per run", flush=True)
    encode = encode_rate()
    print(f"Avro encoding alone (fastavro, one record at a time): {encode:,.0f} records/s", flush=True)
    fast = step_encode_rate()
    print(f"Replay's step encoder alone (byte-identical): {fast:,.0f} records/s", flush=True)

    results: list[tuple[str, list[float], int]] = []
    for label, settings, bad in CASES:
        rates = []
        events = 0
        for _ in range(args.repeats):
            topic = f"bench-replay-{uuid.uuid4().hex[:10]}"
            futures = admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])
            for future in futures.values():
                future.result(timeout=30)
            time.sleep(1.0)  # let the new topic's metadata reach the broker
            try:
                report = replay(data, producer_config(args.bootstrap_servers, **settings), topic, speed=math.inf,
                                inject_bad=bad, progress=False)
            finally:
                delete_topics(admin, [topic])
            rates.append(report.events_per_s)
            events = report.events
        results.append((label, rates, events))
        print(f"{label:45s} median {statistics.median(rates):>9,.0f} events/s"
              f"  (min {min(rates):,.0f}, max {max(rates):,.0f}; {events:,} events per run)", flush=True)

    load = os.getloadavg()
    print(f"load average during the run (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    if args.write_doc:
        write_doc(args, (encode, fast), results, load)
    return 0


def write_doc(
    args: argparse.Namespace,
    encode_rates: tuple[float, float],
    results: list[tuple[str, list[float], int]],
    load: tuple[float, ...],
) -> None:
    encode, fast = encode_rates
    command = f".venv/bin/python benchmarks/replay_throughput.py --days {args.days} --repeats {args.repeats} " \
              f"--partitions {args.partitions} --write-doc"
    lines = [
        "# Replay producer throughput",
        "",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()} cores, 24 GiB, shared with the other local services "
        f"(Python {platform.python_version()}, confluent-kafka {confluent_kafka.__version__}, librdkafka "
        f"{confluent_kafka.libversion()[0]}; the local broker of `traffic platform up kafka`, "
        f"heap {get_settings().kafka_heap_mb} MB, on the same machine)",
        f"- Command: `{command}`",
        f"- Load average at the end (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(other services and test runs share the 2 cores, so runs vary; median, min and max are given)",
        f"- Workload: {args.days} days of the bundled METR-LA copy at `--speed max` "
        f"({results[0][2]:,} readings per run) into a fresh topic with {args.partitions} partitions; "
        "idempotent producer (acks=all); the time runs until the final flush, so every record was acknowledged.",
        "",
        "| producer settings | median events/s | min | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, rates, _ in results:
        lines.append(f"| {label} | {statistics.median(rates):,.0f} | {min(rates):,.0f} | {max(rates):,.0f} |")
    lines += [
        "",
        f"Encoding alone: fastavro `schemaless_writer`, one record at a time, {encode:,.0f} records/s; the"
        f" byte-identical step-at-a-time encoder replay uses (`pipelines/replay_encoding.py`) {fast:,.0f}"
        " records/s. So the producer (librdkafka: batching, compression, acknowledgements) is the limit, not"
        " Python.",
        "",
    ]
    path = REPO_ROOT / ".work" / "benchmarks" / "replay.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else ""
    notes = existing.split("<!-- notes -->", 1)[1] if "<!-- notes -->" in existing else ""
    path.write_text("\n".join(lines) + ("<!-- notes -->" + notes if notes else ""))
    print(f"wrote {Path(path).relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
