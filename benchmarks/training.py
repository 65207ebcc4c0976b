"""Wall-clock and CPU time of a full `traffic train` on the bundled METR-LA data.

    .venv/bin/python benchmarks/training.py [--registry DIR] [--candidates a,b,...]

Runs the same code as `traffic train` (features for every training and
validation window, the default candidates (or ``--candidates``, as `traffic train`: ``all`` for every one) for
each of the three horizons,
selection, calibration, registration) into a temporary registry unless
``--registry`` is given, and prints the wall time, the process CPU time and
the load average before and after (the machine may be shared: a load above the
core count stretches the wall time), the peak resident memory of the process,
then the validation table and the intervals' coverage and width (normalised
conformal, and the earlier binned intervals for comparison).
"""

from __future__ import annotations

import argparse
import os
import platform as host_platform
import resource
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime

import psutil

from ml.dataset import load_metrla
from ml.exceptions import DataError
from ml.models import DEFAULT_CANDIDATES, parse_candidates
from ml.registry import ModelRegistry
from ml.train import train

__all__ = ["main"]


def _cpu_s() -> float:
    """CPU time of this process and of its finished children (the perceptron bag's fitting processes)."""
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                          resource.RUSAGE_CHILDREN)))


class _TreePeak:
    """The largest sum of RSS over this process and its children, sampled in a thread (``resource`` reports each
    process's own peak, and a spawned child's includes the parent's pages it shared before its exec)."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every_s,), daemon=True)
        self._thread.start()

    def _sample(self, every_s: float) -> None:
        me = psutil.Process()
        while not self._done.wait(every_s):
            total = 0
            for proc in (me, *me.children(recursive=True)):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass  # a child that just ended
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", help="registry root (default: a temporary directory)")
    parser.add_argument("--candidates", help="comma-separated candidates or 'all', as `traffic train --candidates` "
                        f"(default: {','.join(DEFAULT_CANDIDATES)})")
    args = parser.parse_args(argv)
    try:
        candidates = parse_candidates(args.candidates)
    except DataError as exc:
        parser.error(str(exc))
    load_before = os.getloadavg()
    tree_peak = _TreePeak()
    started, cpu_started = time.perf_counter(), _cpu_s()
    with tempfile.TemporaryDirectory() as tmp:
        bundle, table = train(load_metrla(), candidates=candidates)
        bundle.metadata["training_seconds"] = round(time.perf_counter() - started, 1)
        version = ModelRegistry(args.registry or tmp).register(bundle)
    wall_s, cpu_s = time.perf_counter() - started, _cpu_s() - cpu_started
    load_after = os.getloadavg()
    print(f"date (UTC): {datetime.now(UTC).isoformat(timespec='minutes')}")
    print(f"machine: {os.cpu_count()} cores, {host_platform.python_implementation()} {host_platform.python_version()}")
    flags = f" --candidates {args.candidates}" if args.candidates is not None else ""
    print(f"command: .venv/bin/python benchmarks/training.py{flags}")
    print(f"OMP_NUM_THREADS: {os.environ.get('OMP_NUM_THREADS', '(unset: one per core)')}")
    print(f"full training wall time: {wall_s:.0f} s ({wall_s / 60:.1f} min); CPU time (with the fitting "
          f"processes): {cpu_s:.0f} s")
    print(f"load average (1 min) before / after: {load_before[0]:.1f} / {load_after[0]:.1f}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"peak RSS: {peak_mib:,.0f} MiB; with the fitting processes, sampled every 0.5 s: "
          f"{tree_peak.stop() / 2**20:,.0f} MiB")
    print(f"model version: {version}")
    print(f"candidates: {','.join(candidates or DEFAULT_CANDIDATES)}")
    print("horizon | model | val MAE | val RMSE | fit s | selected")
    for row in table:
        print(
            f"{row['horizon_min']} | {row['model']} | {row['val_mae']:.3f} | {row['val_rmse']:.3f} | "
            f"{row['fit_s']:.1f} | {'*' if row.get('selected') else ''}"
        )
    for h, m in bundle.metadata["validation_metrics"].items():
        print(
            f"{h} min: {m['model']} val MAE {m['val_mae']:.3f}; intervals cover {m['val_select_coverage']:.1%} "
            f"of the selection days, mean width {m['val_select_width']:.1f} mph (binned intervals: "
            f"{m['val_select_binned_coverage']:.1%}, {m['val_select_binned_width']:.1f} mph)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
