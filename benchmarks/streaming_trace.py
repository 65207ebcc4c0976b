"""Where a paced step's latency goes: how long each stage's SDK bundles stay open during the paced phase.

Runs ``benchmarks/streaming_pipeline.py`` (same flags) with the Python worker's
bundles timed by :class:`benchmarks.stage_cpu.StageCpu` (a stage is named by
the steps it holds). A stage hands its output on only when its bundle ends, so
bundle durations show where a step waits (a reader call blocked on the broker,
a stateful stage committing state key by key). With ``LOOPBACK`` the worker is
this process, so the hook sees every bundle.

    .venv/bin/python benchmarks/streaming_trace.py --runner flink --hours 1 --steps 8

Prints the benchmark's JSON line, then per stage the bundles that ran between
the first paced step and the end: count, p50 / p90 / max duration (ms).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streaming_pipeline  # noqa: E402

from benchmarks.stage_cpu import StageCpu  # noqa: E402


def paced_bundle_ms(bundles: list[tuple[str, float, float]], paced_from: float) -> dict[str, dict[str, float]]:
    """Per stage: the bundles that started at ``paced_from`` or later, and their duration percentiles in ms."""
    by_stage: dict[str, list[float]] = {}
    for stage, start, end in bundles:
        if start >= paced_from:
            by_stage.setdefault(stage, []).append((end - start) * 1000)
    figures: dict[str, dict[str, float]] = {}
    for stage, ms in sorted(by_stage.items()):
        ms.sort()
        figures[stage] = {"bundles": len(ms), "p50_ms": round(statistics.median(ms), 1),
                          "p90_ms": round(streaming_pipeline.pct(ms, 0.9), 1), "max_ms": round(ms[-1], 1)}
    return figures


def main(argv: list[str] | None = None) -> int:
    meter, paced_from = StageCpu(), []
    original_paced = streaming_pipeline.paced_steps

    def marked_paced(*args, **kwargs):
        paced_from.append(time.time())
        return original_paced(*args, **kwargs)

    streaming_pipeline.paced_steps = marked_paced
    meter.start()
    try:
        code = streaming_pipeline.main(argv)
    finally:
        meter.stop()
        streaming_pipeline.paced_steps = original_paced
    if code != 0 or not paced_from:
        return code
    figures = paced_bundle_ms(meter.bundles, paced_from[0])
    print(json.dumps({"bundle_ms_by_stage": figures}), flush=True)
    print(f"{'bundles':>8}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}  stage")
    for stage, f in figures.items():
        print(f"{f['bundles']:>8}{f['p50_ms']:>9}{f['p90_ms']:>9}{f['max_ms']:>9}  {stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
