"""Throughput of the batch pipeline (``traffic batch``) on this machine.

Runs ``features`` (and ``backfill`` when the registry has a model) over the
first N days of the bundled METR-LA data, all 207 sensors, and prints readings
per second through the whole chain (read -> ValidateEvents ->
DeduplicateEvents -> WindowedAggregate -> NetworkHistory -> features or
Forecast -> Parquet), the wall time (pipeline only, and with the launcher's
data loading and feature-context fit), and the stage counts.

In ``features`` mode the same feature code also runs in-process on the same
days (``ml.training_set.examples``, the reference) in the same invocation, and
the pipeline's rate is printed as a ratio to it.

    .venv/bin/python benchmarks/batch_pipeline.py --days 1 2
    .venv/bin/python benchmarks/batch_pipeline.py --days 1 --mode backfill [--registry .work/models]

Without ``--registry``, backfill uses a ridge model fitted here on the first
two days (all sensors) in a temporary registry: the figure is the pipeline's,
RunInference included, not a model's accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.dataset import load_metrla  # noqa: E402
from pipelines.batch import build_parser, execute, summarise  # noqa: E402
from pipelines.beam_flags import parse_args  # noqa: E402


def _iso(ms: int) -> str:
    return str(np.datetime64(ms, "ms"))


def ridge_registry() -> str:
    """A temporary registry holding a ridge model (per horizon) fitted on the first two days, all sensors."""
    from ml.registry import ModelRegistry
    from ml.residual_ridge import fit_residual_ridge

    data = load_metrla()
    data = data.between(None, int(data.times_ms[0]) + 2 * 86_400_000)
    bundle = fit_residual_ridge(data, alpha=10.0, stride=4, min_bin_rows=2000)
    root = tempfile.mkdtemp(prefix="batch-bench-registry-")
    ModelRegistry(root).register(bundle)
    return root


def in_process_reference(days: float) -> dict:
    """The same days' feature rows built in-process (no pipeline): the batch pipeline's yardstick."""
    import time

    from ml.features import fit_context
    from ml.training_set import examples

    data = load_metrla()
    ctx = fit_context(data)
    t0 = int(data.times_ms[0])
    part = data.between(t0, t0 + int(days * 86_400_000))
    started = time.perf_counter()
    x, _y, _meta = examples(part, ctx, "all")
    elapsed = time.perf_counter() - started
    readings = int(part.speed.size)
    return {"readings": readings, "rows": int(x.shape[0]), "s": round(elapsed, 2),
            "readings_per_s": round(readings / elapsed) if elapsed else 0}


def measure(mode: str, days: float, runner: str, registry: str | None, beam_args: str) -> dict:
    t0 = int(load_metrla().times_ms[0])
    out = tempfile.mkdtemp(prefix="batch-bench-")
    argv = [mode, "--start", _iso(t0), "--end", _iso(t0 + int(days * 86_400_000)), "--output", out,
            "--runner", runner, "--progress-every", "10000000"]
    if registry:
        argv += ["--registry", registry]
    if beam_args:
        argv += ["--", *shlex.split(beam_args)]
    try:
        result = execute(parse_args(build_parser(), argv))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    readings = result.counts.get("in", 0)
    print(summarise(result.cfg, result.counts, result.wall_s)[0], flush=True)
    return {
        "mode": mode,
        "days": days,
        "runner": runner,
        "readings": readings,
        "pipeline_s": round(result.pipeline_s, 1),
        "wall_s": round(result.wall_s, 1),
        "readings_per_s": round(readings / result.pipeline_s) if result.pipeline_s else 0,
        "counts": result.counts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, nargs="+", default=[1.0], help="day counts to measure (default 1)")
    parser.add_argument("--mode", choices=("features", "backfill"), default="features")
    parser.add_argument("--runner", default="direct", help="direct (default), prism or flink")
    parser.add_argument("--registry", help="model registry for backfill (default: the work directory's)")
    parser.add_argument("--beam-args", default="", help="extra Beam flags, e.g. '--direct_num_workers=1'")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object at the end")
    args = parser.parse_args()
    if args.mode == "backfill" and not args.registry:
        args.registry = ridge_registry()
    figures = [measure(args.mode, d, args.runner, args.registry, args.beam_args) for d in args.days]
    if args.mode == "features":
        for f in figures:
            f["in_process"] = in_process_reference(f["days"])
            f["ratio_to_in_process"] = round(f["readings_per_s"] / f["in_process"]["readings_per_s"], 4)
    print(f"\nbatch pipeline ({args.mode}, {args.runner}), {os.cpu_count()} cores, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}")
    print(f"{'days':>5} {'readings':>9} {'pipeline s':>11} {'wall s':>8} {'readings/s':>11}")
    for f in figures:
        print(f"{f['days']:>5g} {f['readings']:>9} {f['pipeline_s']:>11} {f['wall_s']:>8} {f['readings_per_s']:>11}")
        if "in_process" in f:
            ref = f["in_process"]
            print(f"      in-process feature builder, same days: {ref['s']} s = {ref['readings_per_s']} readings/s; "
                  f"pipeline / in-process = {f['ratio_to_in_process']}")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
