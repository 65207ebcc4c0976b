"""The trace's summary: per stage, the bundles of the paced phase and their duration percentiles."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.streaming_trace import paced_bundle_ms  # noqa: E402


def test_only_bundles_from_the_paced_phase_count() -> None:
    bundles = [("ReadRaw+Spine", 9.0, 9.5),  # before the paced phase: left out
               ("ReadRaw+Spine", 10.0, 10.010), ("ReadRaw+Spine", 10.1, 10.130), ("ReadRaw+Spine", 10.2, 10.220),
               ("Forecast+PostProcess", 10.3, 10.305)]
    figures = paced_bundle_ms(bundles, paced_from=10.0)
    assert set(figures) == {"ReadRaw+Spine", "Forecast+PostProcess"}
    read = figures["ReadRaw+Spine"]
    assert read["bundles"] == 3 and read["p50_ms"] == 20.0 and read["max_ms"] == 30.0
    assert figures["Forecast+PostProcess"] == {"bundles": 1, "p50_ms": 5.0, "p90_ms": 5.0, "max_ms": 5.0}
