"""What the Python SDK's state cache pays to weigh the pipeline's state at each commit.

    .venv/bin/python benchmarks/state_cache_weight.py

The SDK weighs every value it puts in its state cache (``statecache.get_deep_size``)
at each bundle's commit. For realistic state (one de-duplication shard after 6 h:
72 steps x 13 sensors; the lateness marks of a shard; the history table: 12 steps
x 207 sensors) this prints the time of one weighing as a plain dict (walked entry
by entry) and as the ``transforms/state_tables.py`` table (weighed from its entry
count), and the weight each reports.
"""

from __future__ import annotations

import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apache_beam.runners.worker.statecache import get_deep_size  # noqa: E402

from transforms.state_tables import HistoryTable, SeenTable, WatermarkTable  # noqa: E402

T0_MS = 1_336_000_000_000
STEP_MS = 300_000


def _contents() -> dict[str, tuple[type, dict]]:
    shard = [str(773_000 + i) for i in range(13)]
    seen = {(s, T0_MS + k * STEP_MS): (random.uniform(5, 70),) for k in range(72) for s in shard}
    marks = {s: T0_MS + 71 * STEP_MS for s in shard}
    history = {T0_MS + k * STEP_MS: {m: ((2, 1), random.uniform(5, 70)) for m in range(207)} for k in range(12)}
    return {"de-duplication shard (936 entries)": (SeenTable, seen),
            "lateness shard (13 entries)": (WatermarkTable, marks),
            "history (2,484 entries)": (HistoryTable, history)}


def _ms_per_weighing(value: object, rounds: int = 50) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        get_deep_size([value])  # the cache weighs the list it keeps a state cell's values in
    return (time.perf_counter() - started) / rounds * 1000


def main() -> int:
    print(f"date (UTC): {datetime.now(UTC).isoformat(timespec='minutes')}")
    print(f"machine: {os.cpu_count()} cores; load average (1 min) {os.getloadavg()[0]:.1f}")
    print("state | plain dict: ms per weighing, bytes | state table: ms per weighing, bytes")
    for name, (table_type, contents) in _contents().items():
        table = table_type(contents)
        print(f"{name} | {_ms_per_weighing(contents):.3f}, {get_deep_size([contents]):,} | "
              f"{_ms_per_weighing(table):.3f}, {get_deep_size([table]):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
