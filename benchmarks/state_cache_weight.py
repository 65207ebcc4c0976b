"""What the Python SDK's state cache pays to weigh the pipeline's state at each commit.

    .venv/bin/python benchmarks/state_cache_weight.py

The SDK weighs every value it puts in its state cache (``statecache.get_deep_size``)
at each bundle's commit. For realistic state (one de-duplication key after a
day: 288 steps x 52 sensors; the history table: 12 steps x 207 sensors) this
prints the time of one weighing for the per-record layout the pipelines used
before (dicts of tuples, walked entry by entry) and for the columnar layout
they use now (numpy arrays per sensor or step), and the weight each reports.
"""

from __future__ import annotations

import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from apache_beam.runners.worker.statecache import get_deep_size  # noqa: E402

T0_MS = 1_336_000_000_000
STEP_MS = 300_000


def _contents() -> dict[str, tuple[object, object]]:
    shard = [str(773_000 + i) for i in range(52)]
    times = [T0_MS + k * STEP_MS for k in range(288)]
    seen_dict = {(s, t): (random.uniform(5, 70),) for t in times for s in shard}
    seen_arrays = {s: (np.array(times, dtype=np.int64), np.random.uniform(5, 70, len(times))) for s in shard}
    history_dict = {T0_MS + k * STEP_MS: {m: ((2, 1), random.uniform(5, 70)) for m in range(207)} for k in range(12)}
    history_arrays = {T0_MS + k * STEP_MS: (np.full(207, 2 << 32, np.int64), np.random.uniform(5, 70, 207))
                      for k in range(12)}
    return {"de-duplication key (14,976 readings)": (seen_dict, seen_arrays),
            "history (12 steps x 207 sensors)": (history_dict, history_arrays)}


def _ms_per_weighing(value: object, rounds: int = 20) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        get_deep_size([value])  # the cache weighs the list it keeps a state cell's values in
    return (time.perf_counter() - started) / rounds * 1000


def main() -> int:
    print(f"date (UTC): {datetime.now(UTC).isoformat(timespec='minutes')}")
    print(f"machine: {os.cpu_count()} cores; load average (1 min) {os.getloadavg()[0]:.1f}")
    print("state | per-record dicts: ms per weighing, bytes | numpy arrays: ms per weighing, bytes")
    for name, (records, arrays) in _contents().items():
        print(f"{name} | {_ms_per_weighing(records):.3f}, {get_deep_size([records]):,} | "
              f"{_ms_per_weighing(arrays):.3f}, {get_deep_size([arrays]):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
