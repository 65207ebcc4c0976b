"""TrafficSpine: raw readings -> events -> window aggregates -> network steps, for batch and streaming alike.

::

    RawBatch -> ValidateEvents -> DeduplicateEvents -> events
                     '-> dead letters     '-> dead letters
    events -> WindowedAggregate -> aggregates -> NetworkHistory -> snapshots
                     '-> late events -> dead letters (reason "late")

Every element is a batch (:mod:`schemas.batches`): a RawBatch per Kafka read
(all partitions) or per chunk of a history file, a ``traffic_event`` batch per
(shard, day) part of it, a ``window_aggregate`` batch per shard, window and
pane (per day of windows on bounded input), and one snapshot per network step.
Records are counted once, by :class:`~transforms.counting.CountRecords` under
the pipeline's namespace:
``in = valid + dead_letters`` (invalid and duplicate records); ``late`` counts
the valid events that came after their window closed (dead letters of reason
``late``); then ``aggregates`` and ``snapshots``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

import apache_beam as beam

from schemas.batches import Columns
from schemas.codec import AvroCodec
from transforms.aggregate import DEFAULT_LATENESS_GRACE_S, TaggedOutputs, WindowedAggregate
from transforms.counting import CountRecords
from transforms.dedupe import DeduplicateEvents
from transforms.history import NetworkHistory
from transforms.validate import ValidateEvents, make_dead_letter, system_now_ms

__all__ = ["TrafficSpine", "late_to_dead_letters"]


@lru_cache(maxsize=1)
def _event_codec() -> AvroCodec:
    return AvroCodec("traffic_event")  # loaded once per process, not once per late batch


def late_to_dead_letters(events: Columns) -> Iterator[dict[str, Any]]:
    """Events later than the allowed lateness keep their content as dead letters (one per event)."""
    codec = _event_codec()
    now = system_now_ms()
    for event in events.records():
        yield make_dead_letter(
            codec.encode(event),
            reason="late",
            error=f"event at {event['event_time']} arrived after its window closed",
            step="WindowedAggregate",
            failed_at=now,
            key=str(event.get("sensor_id", "")).encode(),
        )


class TrafficSpine(beam.PTransform):
    """RawBatches -> ``events``, ``aggregates``, ``snapshots`` and ``dead_letters`` (see the module doc).

    ``known_sensor_ids`` pass validation; ``network_sensor_ids`` are the
    columns of the snapshots (the model's sensors). ``allowed_lateness_s=None``
    aggregates every event (bounded input); ``early_firing_count`` makes a
    window fire an early pane per that many input parts (streaming).
    """

    def __init__(self, known_sensor_ids: Sequence[str], network_sensor_ids: Sequence[str], *, namespace: str,
                 window_s: int = 300, history_steps: int = 12, allowed_lateness_s: int | None = None,
                 early_firing_count: int | None = None, lateness_grace_s: int = DEFAULT_LATENESS_GRACE_S,
                 progress_every: int | None = None, label: str | None = None) -> None:
        super().__init__(label)
        self.known = sorted(set(known_sensor_ids) | set(network_sensor_ids))
        self.network = list(network_sensor_ids)
        self.namespace = namespace
        self.window_s = window_s
        self.history_steps = history_steps
        self.allowed_lateness_s = allowed_lateness_s
        self.early_firing_count = early_firing_count
        self.lateness_grace_s = lateness_grace_s
        self.progress_every = progress_every

    def _count(self, pcoll: beam.PCollection, name: str, label: str) -> beam.PCollection:
        return pcoll | label >> beam.ParDo(CountRecords(self.namespace, name, self.progress_every))

    def expand(self, raw: beam.PCollection) -> TaggedOutputs:
        counted = self._count(raw, "in", "CountIn")
        checked = counted | "ValidateEvents" >> ValidateEvents(self.known)
        deduped = checked.valid | "DeduplicateEvents" >> DeduplicateEvents()
        events = self._count(deduped.valid, "valid", "CountValid")
        windowed = events | "WindowedAggregate" >> WindowedAggregate(
            window_s=self.window_s, allowed_lateness_s=self.allowed_lateness_s,
            early_firing_count=self.early_firing_count, lateness_grace_s=self.lateness_grace_s,
        )
        late = (
            self._count(windowed.late, "late", "CountLate")
            | "LateToDeadLetters" >> beam.FlatMap(late_to_dead_letters)
        )
        aggregates = self._count(windowed.aggregates, "aggregates", "CountAggregates")
        snapshots = self._count(
            aggregates | "NetworkHistory" >> NetworkHistory(self.network, self.history_steps, self.window_s),
            "snapshots", "CountSnapshots",
        )
        # Counted per input before the Flatten: a runner may fuse a Flatten's consumer into each input's stage,
        # and Flink then reports only one copy's counter.
        dead = [self._count(pcoll, "dead_letters", f"Count{name}DeadLetters")
                for name, pcoll in (("Invalid", checked.dead_letter), ("Duplicate", deduped.dead_letter))]
        dead.append(late)  # counted as late: those events are valid ones the windows no longer take
        return TaggedOutputs({
            "events": events, "aggregates": aggregates, "snapshots": snapshots,
            "dead_letters": dead | "SpineDeadLetters" >> beam.Flatten(),
        })
