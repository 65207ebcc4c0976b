"""CPU cost of one step's forecast, as the streaming job's inference stage computes it.

    .venv/bin/python benchmarks/inference_step.py [--registry DIR] [--steps 288]

For consecutive validation-period steps of the bundled METR-LA data it builds
each step's network snapshot (the last 12 steps of all the model's sensors)
and runs the RunInference handler on it alone, as the job does: features,
the three horizons' models, the intervals, and the per-sensor output rows.
It does this once with the handler's default of one OpenMP thread and once
with the libraries' default (one per core), and prints milliseconds per step
and what one core could sustain: steps/s and the matching readings/s (one
reading per sensor per step). That is a ceiling of the streaming throughput
from inference alone, before reading, validation, state and publishing.
Then it times a catch-up: the same steps given to the handler ``--batch`` at a
time (by default as many as the streaming job's Forecast batches; one
``bundle.predict`` call per batch), in CPU ms per step.
First it times what a worker pays before its first forecast, as the job's
RunInference stage does on its first bundle and on every hot swap: the
handler's model load (the registry's files read and parsed), and the first
call, which prepares the compiled trees.
Exits 2 with one line when the registry has no model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.settings import default_registry_root  # noqa: E402
from ml.dataset import TRAIN_END_MS, load_metrla  # noqa: E402
from ml.features import HISTORY_STEPS, history_from_speeds  # noqa: E402
from ml.handler import HandlerConfig, make_model_handler  # noqa: E402
from ml.registry import ModelRegistry  # noqa: E402
from transforms.forecast import MAX_BATCH_STEPS  # noqa: E402

__all__ = ["main"]


def _snapshots(sensor_ids: tuple[str, ...], steps: int) -> list[dict]:
    data = load_metrla().only(list(sensor_ids))
    first = int((data.times_ms < TRAIN_END_MS).sum())  # the first validation step
    last = min(first + steps, len(data.times_ms))
    return [
        {"step_ms": int(data.times_ms[t]), "speeds": history_from_speeds(data.speed[t - HISTORY_STEPS + 1 : t + 1])}
        for t in range(first, last)
    ]


def _time_per_step(registry: str, threads: int | None, snapshots: list[dict], batch: int = 1) -> list[float]:
    """CPU ms per step, one figure per handler call of ``batch`` snapshots."""
    handler = make_model_handler(HandlerConfig(registry, threads=threads))
    model = handler.load_model()
    list(handler.run_inference(snapshots[:3], model))  # warm: imports, the trees' first call
    cpu_ms = []
    for first in range(0, len(snapshots), batch):
        calls = snapshots[first:first + batch]
        started = time.process_time()
        results = list(handler.run_inference(calls, model))
        cpu_ms.append((time.process_time() - started) * 1000 / len(calls))
        assert len(results) == len(calls) and all(r.inference for r in results)
    return cpu_ms


def _start_cost(registry: str, snapshots: list[dict], rounds: int = 3) -> tuple[float, float]:
    """Median CPU s of the handler's model load, and CPU ms of the first one-step call after it beyond a warm
    call's (the compiled trees' flat arrays are built then)."""
    load_s, first_ms = [], []
    for _ in range(rounds):
        handler = make_model_handler(HandlerConfig(registry, threads=1))
        started = time.process_time()
        model = handler.load_model()
        load_s.append(time.process_time() - started)
        timed = []
        for _ in range(2):
            started = time.process_time()
            list(handler.run_inference(snapshots[:1], model))
            timed.append((time.process_time() - started) * 1000)
        first_ms.append(timed[0] - timed[1])
    return statistics.median(load_s), statistics.median(first_ms)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", help="model registry root (default: $TRAFFIC_MODEL_REGISTRY or <work>/models)")
    parser.add_argument("--steps", type=int, default=288, help="validation steps timed (default: one day)")
    parser.add_argument("--batch", type=int, default=MAX_BATCH_STEPS,
                        help=f"snapshots a call in the catch-up figure (default: the job's {MAX_BATCH_STEPS})")
    args = parser.parse_args(argv)
    registry = args.registry or default_registry_root()
    version = ModelRegistry(registry).latest_version()
    if version is None:
        print(f"inference_step: no model registered in {registry} (run `traffic train`)", file=sys.stderr)
        return 2
    bundle = ModelRegistry(registry).load(version)
    snapshots = _snapshots(bundle.context.sensor_ids, args.steps)
    n = bundle.context.n_sensors
    print(f"date (UTC): {datetime.now(UTC).isoformat(timespec='minutes')}")
    print(f"machine: {os.cpu_count()} cores; load average (1 min) {os.getloadavg()[0]:.1f}")
    print(f"model: {version} ({n} sensors; horizons {bundle.horizons_min}); {len(snapshots)} validation steps")
    load_s, first_ms = _start_cost(registry, snapshots)
    print(f"before the first forecast (CPU, median of 3): model load {load_s:.3f} s; "
          f"the first call {first_ms:.1f} ms more than the next")
    print("calls | threads | CPU ms per step p50 / mean / p99 | one core: steps/s | readings/s")
    for batch in (1, max(1, args.batch)):
        for threads in (1, None):
            cpu_ms = sorted(_time_per_step(registry, threads, snapshots, batch))
            mean = statistics.fmean(cpu_ms)
            p99 = cpu_ms[min(len(cpu_ms) - 1, int(0.99 * len(cpu_ms)))]
            calls = "one step a call" if batch == 1 else f"catch-up, {batch} steps a call"
            label = "1" if threads == 1 else f"default ({os.cpu_count()})"
            print(f"{calls} | {label} | {statistics.median(cpu_ms):.2f} / {mean:.2f} / {p99:.2f} | "
                  f"{1000 / mean:.0f} | {1000 / mean * n:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
