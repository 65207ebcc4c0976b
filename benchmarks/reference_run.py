"""The reference loop run beside the streaming job (``benchmarks/streaming_pipeline.py``): over the job's
pre-loaded raw topic, into topics of its own, timed by a watcher like the job."""

from __future__ import annotations

import argparse
import shutil
import tempfile

from confluent_kafka.admin import AdminClient

from benchmarks.backlog_work import all_work_done_s, work_timeline
from benchmarks.bench_topics import create_topics, delete_topics, wait_for
from benchmarks.reference_loop import ReferenceLoop
from benchmarks.stream_watch import Arrivals, Watcher
from ml.dataset import network_sensor_ids
from ml.features import HORIZONS_MIN
from ml.registry import ModelRegistry
from schemas.topics import TopicSettings

__all__ = ["backlog_work", "print_timeline", "run_reference"]


def run_reference(admin: AdminClient, bootstrap: str, topics: TopicSettings, registry: str, run_id: str,
                  args: argparse.Namespace, readings: int, last_step_ms: int, sensors: int) -> dict:
    """The reference loop over the job's pre-loaded raw topic, into topics of its own (deleted after).

    Timed twice: by its own clock (first record consumed to last prediction delivered) and, like the job, by a
    watcher (the broker's append times of the first validated event and of the last step's last prediction),
    the figure the ratio uses.
    """
    own = create_topics(admin, run_id, args.partitions, prefix="bench-ref")
    watcher = Watcher(bootstrap, own, sensors * len(HORIZONS_MIN), sensors)
    out_dir = tempfile.mkdtemp(prefix="stream-bench-ref-")
    try:
        watcher.wait_ready()
        # The job's work, parts left out as the job's are (--without).
        loop = ReferenceLoop(bootstrap, own, ModelRegistry(registry).load(), network_sensor_ids(),
                             raw_topic=topics.raw, scores="scores" not in args.without,
                             incidents="incidents" not in args.without,
                             output=None if "files" in args.without else out_dir, file_window_s=args.file_window_s)
        figures = loop.run(last_step_ms, readings, timeout_s=args.timeout_s).as_dict()
        seen = watcher.arrivals
        wait_for(lambda: last_step_ms in seen.complete_s and seen.first_event_s is not None, 60,
                 "the reference loop's last step seen by the watcher", [])
        watched_s = seen.complete_s[last_step_ms] - seen.first_event_s
        work_s, figures["work_timeline"] = backlog_work(seen, last_step_ms, out_dir, args)
    finally:
        watcher.stop()
        delete_topics(admin, own)
        shutil.rmtree(out_dir, ignore_errors=True)
    figures["own_clock"] = {"elapsed_s": figures["elapsed_s"], "events_per_s": figures["events_per_s"]}
    figures["elapsed_s"], figures["events_per_s"] = round(watched_s, 2), round(readings / watched_s, 1)
    figures["all_work"] = work_s and {"elapsed_s": round(work_s, 2), "events_per_s": round(readings / work_s, 1)}
    print(f"reference loop: {readings:,} readings in {figures['elapsed_s']} s = "
          f"{figures['events_per_s']:,.0f} events/s as watched ({figures['own_clock']['events_per_s']:,.0f} by "
          f"its own clock; stages, s: {figures['stage_s']})", flush=True)
    print_timeline("reference loop", figures["work_timeline"])
    return figures


def backlog_work(arrivals: Arrivals, last_step_ms: int, out_dir: str, args: argparse.Namespace
                 ) -> tuple[float | None, dict[str, list[float] | None]]:
    """(from the first validated event to the end of the backlog's whole work, None when its scores were not all
    out within 30 s; when its predictions, scores and files came out): ``backlog_work``, with the parts left
    out of the run (``--without``) left out of the wait."""
    files = None if "files" in args.without else out_dir
    window_ms = args.file_window_s * 1000
    end = all_work_done_s(arrivals, last_step_ms, files, window_ms, "scores" not in args.without)
    return (None if end is None else end - arrivals.first_event_s,
            work_timeline(arrivals, last_step_ms, files, window_ms))


def print_timeline(who: str, figures: dict[str, list[float] | None]) -> None:
    """One line: the 10th / 50th / 90th percentile of when each kind of the backlog's work came out."""
    parts = [f"{kind} {' / '.join(f'{s:.1f}' for s in times)}" for kind, times in figures.items() if times]
    print(f"{who}: the backlog's work came out at (s after the first event, p10 / p50 / p90): "
          f"{', '.join(parts) or 'nothing'}", flush=True)
