"""The stage CPU meter adds up each fused stage's bundles, names the stage by its steps and puts the worker back."""

from __future__ import annotations

import time
from itertools import pairwise
from types import SimpleNamespace

from apache_beam.runners.worker import sdk_worker

from benchmarks.stage_cpu import StageCpu


class _Worker:
    """Stands in for the SDK worker: a descriptor's transforms, and a bundle that burns CPU."""

    def __init__(self) -> None:
        labels = {"1-1": ["Forecast/RunInference", "PostProcess/Clamp", "AllDeadLetters/Flatten"],
                  "1-2": ["WriteFiles/WriteFile"]}
        self.bundle_processor_cache = SimpleNamespace(fns={
            key: SimpleNamespace(transforms={n: SimpleNamespace(unique_name=n) for n in names})
            for key, names in labels.items()})

    def process_bundle(self, request, instruction_id):
        end = time.thread_time() + request.burn_s
        while time.thread_time() < end:
            pass
        return instruction_id


def test_each_stage_gets_its_bundles_and_cpu(monkeypatch) -> None:
    monkeypatch.setattr(sdk_worker.SdkWorker, "process_bundle", _Worker.process_bundle)
    meter, worker = StageCpu(), _Worker()
    meter.start()
    try:
        bundle = sdk_worker.SdkWorker.process_bundle
        assert bundle(worker, SimpleNamespace(process_bundle_descriptor_id="1-2", burn_s=0.01), "a") == "a"
        before = meter.snapshot()
        for _ in range(3):
            bundle(worker, SimpleNamespace(process_bundle_descriptor_id="1-1", burn_s=0.02), "b")
        bundle(worker, SimpleNamespace(process_bundle_descriptor_id="1-2", burn_s=0.01), "c")
    finally:
        meter.stop()
    assert sdk_worker.SdkWorker.process_bundle is _Worker.process_bundle  # put back
    since = meter.since(before)
    assert list(since) == ["Forecast+PostProcess", "WriteFiles"]  # the busiest first; dead-letter plumbing unnamed
    assert since["Forecast+PostProcess"]["bundles"] == 3 and since["WriteFiles"]["bundles"] == 1
    assert since["Forecast+PostProcess"]["cpu_s"] >= 0.06 - 0.005
    assert 0.01 - 0.005 <= since["WriteFiles"]["cpu_s"] < since["Forecast+PostProcess"]["cpu_s"]
    # every bundle is in the log, by stage name, in the order it ran
    assert [name for name, _, _ in meter.bundles] == ["WriteFiles", *["Forecast+PostProcess"] * 3, "WriteFiles"]
    assert all(start <= end for _, start, end in meter.bundles)
    assert all(a[2] <= b[1] for a, b in pairwise(meter.bundles))
