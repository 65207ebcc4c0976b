"""`traffic train`'s feature tables: the first build through the batch pipeline, a reuse, and the in-process oracle.

    .venv/bin/python benchmarks/training_tables.py [--days N] [--tables DIR]

On the same data in one invocation, prints the wall time of (1) building the
tables as `traffic train` does (``pipelines.training_tables.ensure_tables``:
`traffic batch features` on DirectRunner, then the manifest), (2) what a later
`traffic train` pays for up-to-date tables (the staleness check and reading
the train and val tables back), and (3) the in-process builder
(``ml.training_set.examples`` for train and val, the tests' oracle); their
ratios; whether the two feature matrices agree within 1e-9; and the peak RSS
of this process and of its worker processes. Default: the whole bundled data;
``--days N``: the N days that end one day after the validation period starts.
"""

from __future__ import annotations

import argparse
import os
import platform as host_platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime

import numpy as np

from ml.dataset import TRAIN_END_MS, load_metrla
from ml.features import fit_context
from ml.training_set import examples
from pipelines.training_tables import TableRequest, ensure_tables, read_training_tables

__all__ = ["main"]

DAY_MS = 24 * 3600 * 1000


def _peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, help="only the N days ending a day into validation (default: all)")
    parser.add_argument("--tables", help="build the tables here (default: a temporary directory)")
    args = parser.parse_args(argv)
    request = TableRequest()
    if args.days:
        request = TableRequest(start_ms=TRAIN_END_MS - (args.days - 1) * DAY_MS, end_ms=TRAIN_END_MS + DAY_MS)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.tables or os.path.join(tmp, "tables")
        started = time.perf_counter()
        manifest, built = ensure_tables(directory, request, say=lambda line: print(f"  {line}", flush=True))
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        _, again = ensure_tables(directory, request, say=lambda _: None)
        (x, y, meta), _ = read_training_tables(os.path.join(directory, "features"))
        reuse_s = time.perf_counter() - started
    started = time.perf_counter()
    data = load_metrla().between(request.start_ms, request.end_ms)
    ctx = fit_context(data)
    parts = [examples(data, ctx, split) for split in ("train", "val")]
    oracle_s = time.perf_counter() - started
    ex = np.concatenate([p[0] for p in parts])
    worst = float(np.max(np.abs(x.astype(np.float64) - ex.astype(np.float64)))) if x.shape == ex.shape else np.inf
    same = worst <= 1e-9
    readings = data.speed.size
    print(f"date (UTC): {datetime.now(UTC).isoformat(timespec='minutes')}")
    print(f"machine: {os.cpu_count()} cores, {host_platform.python_implementation()} {host_platform.python_version()}")
    print(f"command: .venv/bin/python benchmarks/training_tables.py{f' --days {args.days}' if args.days else ''}")
    print(f"load average (1 min) before: {load_before[0]:.1f}, after: {os.getloadavg()[0]:.1f}")
    print(f"data: {data.n_steps:,} steps x {len(data.sensor_ids)} sensors = {readings:,} readings; "
          f"train+val rows {len(x):,}")
    print(f"1. build (batch pipeline, DirectRunner, built={built}): {build_s:.1f} s, {readings / build_s:,.0f} "
          f"readings/s, {manifest['feature_rows']:,} rows in all splits")
    print(f"2. reuse (up-to-date check + read train/val, rebuilt={again}): {reuse_s:.1f} s")
    print(f"3. in-process oracle (fit_context + examples train/val): {oracle_s:.1f} s")
    print(f"build / in-process: {build_s / oracle_s:.1f}x the time; reuse / in-process: {reuse_s / oracle_s:.2f}x")
    print(f"feature matrices equal within 1e-9: {same} (shapes {x.shape} / {ex.shape}, largest difference {worst:.3g})")
    print(f"peak RSS: this process {_peak_mib(resource.RUSAGE_SELF):,.0f} MiB, "
          f"largest worker {_peak_mib(resource.RUSAGE_CHILDREN):,.0f} MiB")
    return 0 if same and not again else 1


if __name__ == "__main__":
    sys.exit(main())
