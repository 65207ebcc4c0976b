"""CPU of each fused stage of a LOOPBACK job, measured in the benchmark's own process (the SDK worker).

The worker runs each bundle of a stage in one ``SdkWorker.process_bundle`` call on one thread;
:class:`StageCpu` wraps that method (a benchmark's instrument, not the job's code) and adds up, per
process-bundle descriptor (a fused stage), the bundles, their wall time and the CPU time of the thread
that ran them. A stage is named by the top-level steps it holds. Work a bundle hands to other threads
(the Kafka producer's I/O, Arrow's writer threads) is not in it: the figures say which stage the
worker's own time goes to, not the process total.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from apache_beam.runners.worker import sdk_worker

__all__ = ["StageCpu"]


class StageCpu:
    """Per fused stage: ``[bundles, wall s, thread CPU s]``, from :meth:`start` on; :meth:`since` a snapshot.

    ``bundles`` lists every bundle as (stage name, start, end) wall-clock times, for timelines.
    """

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}
        self.names: dict[str, str] = {}
        self.bundles: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()
        self._original: Any = None

    def start(self) -> None:
        self._original = original = sdk_worker.SdkWorker.process_bundle
        meter = self

        def process_bundle(worker, request, instruction_id):
            started, cpu = time.time(), time.thread_time()
            try:
                return original(worker, request, instruction_id)
            finally:
                meter._add(worker, request.process_bundle_descriptor_id, started, time.time(),
                           time.thread_time() - cpu)

        sdk_worker.SdkWorker.process_bundle = process_bundle

    def stop(self) -> None:
        if self._original is not None:
            sdk_worker.SdkWorker.process_bundle = self._original
            self._original = None

    def _add(self, worker: Any, descriptor: str, started: float, ended: float, cpu_s: float) -> None:
        with self._lock:
            if descriptor not in self.names:
                self.names[descriptor] = _stage_name(worker, descriptor)
            total = self.totals.setdefault(descriptor, [0, 0.0, 0.0])
            total[0] += 1
            total[1] += ended - started
            total[2] += cpu_s
            self.bundles.append((self.names[descriptor], started, ended))

    def snapshot(self) -> dict[str, list[float]]:
        with self._lock:
            return {key: list(value) for key, value in self.totals.items()}

    def since(self, before: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        """Per stage (by name), bundles, wall and CPU seconds since ``before``; the busiest first."""
        now = self.snapshot()
        out = {}
        for key, (bundles, wall, cpu) in now.items():
            b0, w0, c0 = before.get(key, [0, 0.0, 0.0])
            if bundles > b0:
                out[self.names[key]] = {"bundles": int(bundles - b0), "wall_s": round(wall - w0, 2),
                                        "cpu_s": round(cpu - c0, 2)}
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["cpu_s"]))


def _stage_name(worker: Any, descriptor: str) -> str:
    """The top-level steps a stage holds (``Forecast+PostProcess+PublishPredictions``), or its descriptor id."""
    try:
        transforms = worker.bundle_processor_cache.fns[descriptor].transforms.values()
    except (AttributeError, KeyError):
        return descriptor
    steps = {t.unique_name.split("/")[0] for t in transforms if t.unique_name}
    work = sorted(s for s in steps if not s.startswith(("AllDeadLetters", "PublishDeadLetters", "Count")))
    return "+".join(work or sorted(steps)) or descriptor
