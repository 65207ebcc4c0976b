"""Where a paced step's latency goes: how long each stage's SDK bundles stay open during the paced phase.

Runs ``benchmarks/streaming_pipeline.py`` (same flags) with the Python worker's
``BundleProcessor.process_bundle`` timed. A stage hands its output on only when
its bundle ends, so bundle durations show where a step waits (a reader call
blocked on the broker, a stateful stage committing state key by key). With
``LOOPBACK`` the worker is this process, so the hook sees every bundle.

    .venv/bin/python benchmarks/streaming_trace.py --runner flink --hours 1 --steps 8

Prints the benchmark's JSON line, then per stage the bundles that ran between
the first paced step and the end: count, p50 / p90 / max duration (ms).
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streaming_pipeline  # noqa: E402
from apache_beam.runners.worker import bundle_processor  # noqa: E402

# The first label found among a bundle's transforms names its stage (the fused stages of pipelines/streaming.py).
STAGES = ("ReadRaw", "DeduplicateEvents", "FlagLate", "ToWindowAggregate", "NetworkHistory",
          "WriteAggregatesFiles", "WritePredictionsFiles")

_bundles: list[tuple[str, float, float]] = []  # (stage, start, end) wall times
_lock = threading.Lock()
_paced_from: list[float] = []


def _stage(processor: bundle_processor.BundleProcessor) -> str:
    names = [t.unique_name for t in processor.process_bundle_descriptor.transforms.values()]
    return next((s for s in STAGES if any(s in n for n in names)), "other")


def _install() -> None:
    original_bundle = bundle_processor.BundleProcessor.process_bundle
    original_paced = streaming_pipeline.paced_steps

    def timed_bundle(self, *args, **kwargs):
        start = time.time()
        try:
            return original_bundle(self, *args, **kwargs)
        finally:
            with _lock:
                _bundles.append((_stage(self), start, time.time()))

    def marked_paced(*args, **kwargs):
        _paced_from.append(time.time())
        return original_paced(*args, **kwargs)

    bundle_processor.BundleProcessor.process_bundle = timed_bundle
    streaming_pipeline.paced_steps = marked_paced


def summary() -> dict[str, dict[str, float]]:
    """Per stage: bundles that started in the paced phase, and their duration percentiles in ms."""
    with _lock:
        paced = [(s, b, e) for s, b, e in _bundles if _paced_from and b >= _paced_from[0]]
    figures: dict[str, dict[str, float]] = {}
    for stage in (*STAGES, "other"):
        ms = sorted((e - b) * 1000 for s, b, e in paced if s == stage)
        if ms:
            figures[stage] = {"bundles": len(ms), "p50_ms": round(statistics.median(ms), 1),
                              "p90_ms": round(streaming_pipeline.pct(ms, 0.9), 1), "max_ms": round(ms[-1], 1)}
    return figures


def main(argv: list[str] | None = None) -> int:
    _install()
    code = streaming_pipeline.main(argv)
    if code != 0:
        return code
    figures = summary()
    print(json.dumps({"bundle_ms_by_stage": figures}), flush=True)
    print(f"{'stage':<24}{'bundles':>8}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}")
    for stage, f in figures.items():
        print(f"{stage:<24}{f['bundles']:>8}{f['p50_ms']:>9}{f['p90_ms']:>9}{f['max_ms']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
