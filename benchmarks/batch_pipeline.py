"""Throughput of the batch pipeline (``traffic batch``) on this machine.

Runs ``features`` (and ``backfill`` when the registry has a model) over the
first N days of the bundled METR-LA data, all 207 sensors, and prints readings
per second through the whole chain (read -> ValidateEvents ->
DeduplicateEvents -> WindowedAggregate -> NetworkHistory -> features or
Forecast -> Parquet), the wall time (pipeline only, and with the launcher's
data loading and feature-context fit), and the stage counts.

In ``features`` mode the same feature code also runs in-process on the same
days (``ml.training_set.examples``, the reference) in the same invocation, and
the pipeline's rate is printed as a ratio to it. With ``--repeat N`` the
pipeline and the reference alternate N times and the medians (and ranges) are
compared: on a shared machine one run of each can differ 2x by load alone.
``--days all`` is the whole input.

    .venv/bin/python benchmarks/batch_pipeline.py --days 1 2
    .venv/bin/python benchmarks/batch_pipeline.py --days 7 --repeat 3
    .venv/bin/python benchmarks/batch_pipeline.py --days all
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
from pipelines.batch_cli import build_parser, execute, summarise  # noqa: E402
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


def _days_arg(value: str) -> float:
    if value == "all":
        return float("inf")
    try:
        days = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number of days nor 'all'") from None
    if days <= 0:
        raise argparse.ArgumentTypeError(f"--days must be positive, not {value}")
    return days


def _end_ms(t0: int, days: float) -> int | None:
    return None if days == float("inf") else t0 + int(days * 86_400_000)


def in_process_reference(days: float) -> dict:
    """The same days' feature rows built in-process (no pipeline): the batch pipeline's yardstick.

    Built twice, the faster one counts: a first call after the pipeline ran
    measured up to 2x slower (cold caches, BLAS threads), which would flatter
    the pipeline's ratio.
    """
    import time

    from ml.features import fit_context
    from ml.training_set import examples

    data = load_metrla()
    ctx = fit_context(data)
    t0 = int(data.times_ms[0])
    part = data.between(t0, _end_ms(t0, days))
    elapsed = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        x, _y, _meta = examples(part, ctx, "all")
        elapsed = min(elapsed, time.perf_counter() - started)
    readings = int(part.speed.size)
    return {"readings": readings, "rows": int(x.shape[0]), "s": round(elapsed, 2),
            "readings_per_s": round(readings / elapsed) if elapsed else 0}


def measure(mode: str, days: float, runner: str, registry: str | None, beam_args: str) -> dict:
    t0 = int(load_metrla().times_ms[0])
    out = tempfile.mkdtemp(prefix="batch-bench-")
    argv = [mode, "--start", _iso(t0), "--output", out, "--runner", runner, "--progress-every", "10000000"]
    if _end_ms(t0, days) is not None:
        argv += ["--end", _iso(_end_ms(t0, days))]
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
    parser.add_argument("--days", type=_days_arg, nargs="+", default=[1.0],
                        help="day counts to measure, or 'all' (default 1)")
    parser.add_argument("--repeat", type=int, default=1, help="features: alternate pipeline and reference N times "
                        "and compare medians (default 1)")
    parser.add_argument("--mode", choices=("features", "backfill"), default="features")
    parser.add_argument("--runner", default="direct", help="direct (default), prism or flink")
    parser.add_argument("--registry", help="model registry for backfill (default: the work directory's)")
    parser.add_argument("--beam-args", default="", help="extra Beam flags, e.g. '--direct_num_workers=1'")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object at the end")
    args = parser.parse_args()
    if args.mode == "backfill" and not args.registry:
        args.registry = ridge_registry()
    figures = []
    for days in args.days:
        runs, refs = [], []
        for _ in range(max(1, args.repeat) if args.mode == "features" else 1):
            runs.append(measure(args.mode, days, args.runner, args.registry, args.beam_args))
            if args.mode == "features":
                refs.append(in_process_reference(days))
        f = sorted(runs, key=lambda r: r["pipeline_s"])[len(runs) // 2]  # the median run
        if refs:
            f["in_process"] = sorted(refs, key=lambda r: r["s"])[len(refs) // 2]
            f["ratio_to_in_process"] = round(f["readings_per_s"] / f["in_process"]["readings_per_s"], 4)
            f["runs"] = [{"pipeline_s": r["pipeline_s"], "in_process_s": ref["s"]}
                         for r, ref in zip(runs, refs, strict=True)]
        figures.append(f)
    print(f"\nbatch pipeline ({args.mode}, {args.runner}), {os.cpu_count()} cores, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}")
    print(f"{'days':>5} {'readings':>9} {'pipeline s':>11} {'wall s':>8} {'readings/s':>11}")
    for f in figures:
        days = "all" if f["days"] == float("inf") else f"{f['days']:g}"
        print(f"{days:>5} {f['readings']:>9} {f['pipeline_s']:>11} {f['wall_s']:>8} {f['readings_per_s']:>11}")
        if "in_process" in f:
            ref = f["in_process"]
            median = " (medians)" if len(f["runs"]) > 1 else ""
            print(f"      in-process feature builder, same days: {ref['s']} s = {ref['readings_per_s']} readings/s; "
                  f"pipeline / in-process = {f['ratio_to_in_process']}{median}")
            if len(f["runs"]) > 1:
                print("      runs (pipeline s, in-process s): "
                      + ", ".join(f"({r['pipeline_s']}, {r['in_process_s']})" for r in f["runs"]))
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
