"""EventTimeMerge: a topic's partitions read in step by event time, so a backlog waits in Kafka.

A Kafka consumer hands over a backlog one partition at a time: librdkafka
drains a partition's prefetched records before the next one's (measured on a
7-day backlog in 4 partitions: all of partition 0's week came before any record
of partition 1). The topic read's watermark is the oldest progress among the
partitions that still have records to read (:mod:`transforms.kafka_topic_reader`),
so it stays behind the slowest partition while the others flow whole into the
pipeline, and every event-time step downstream (windows, de-duplication,
network history, scoring) holds the whole backlog in its state until the
watermark comes. A week of backlog ran the Flink TaskManager out of heap.

The merge holds back what a partition reads beyond ``max_skew_ms`` past the
slowest partition (its *frontier*: the oldest record it holds back, or else the
newest it has released), and the reader pauses a partition once it holds many
of its records (``transforms.kafka_topic_reader``). Records leave the merge in step across partitions, the
watermark follows them, and what the pipeline holds is bounded by the skew and
the records in flight, not by the backlog.

* Only partitions that may still deliver records count (``active``: not caught
  up, or holding records). A caught-up or empty partition never holds others back.
* A partition that is active but has no frontier yet (nothing read) holds every
  other back: its first record may be the oldest of all.
* The partition at the floor always releases its oldest record, so the merge
  never blocks itself.
* Within a partition records leave in offset order; nothing is dropped. When
  the consumer is moved the reader starts a new merge (what the old one held
  is read again from the claimed offsets).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping

__all__ = ["EventTimeMerge"]


class EventTimeMerge:
    """Per-partition hold-back queues released in event-time step (see the module doc)."""

    def __init__(self, max_skew_ms: int) -> None:
        if max_skew_ms < 0:
            raise ValueError(f"max_skew_ms must be >= 0, got {max_skew_ms}")
        self.max_skew_ms = int(max_skew_ms)
        self._held: dict[int, deque[tuple[int, object]]] = {}

    def add(self, records: Iterable[tuple[int, int, object]]) -> None:
        """Hold ``(partition, timestamp_ms, record)`` triples, in the order read."""
        for partition, ts_ms, record in records:
            self._held.setdefault(partition, deque()).append((ts_ms, record))

    def holding(self) -> set[int]:
        """The partitions with records held back."""
        return {p for p, queue in self._held.items() if queue}

    def held_counts(self) -> dict[int, int]:
        """Records held per partition."""
        return {p: len(queue) for p, queue in self._held.items() if queue}

    def frontier(self, partition: int, newest_ms: Mapping[int, int | None]) -> int | None:
        """The oldest record the partition holds back, or else the newest it released (None: nothing read)."""
        queue = self._held.get(partition)
        return queue[0][0] if queue else newest_ms.get(partition)

    def release(self, newest_ms: Mapping[int, int | None], caught_up: Collection[int]) -> list[object]:
        """The held records that may go now, oldest partition first.

        ``newest_ms``: per partition, the newest timestamp released so far (None before any);
        it is updated in place as records are released. ``caught_up``: the partitions with
        nothing more to read as of the consumer's last fetch.
        """
        out: list[object] = []
        while True:
            active = self.holding() | {p for p in newest_ms if p not in caught_up}
            frontiers = [self.frontier(p, newest_ms) for p in active]
            if not active or any(f is None for f in frontiers):
                return out
            limit = min(f for f in frontiers if f is not None) + self.max_skew_ms
            released = 0
            for partition in sorted(self.holding()):
                queue = self._held[partition]
                while queue and queue[0][0] <= limit:
                    ts_ms, record = queue.popleft()
                    newest = newest_ms.get(partition)
                    newest_ms[partition] = ts_ms if newest is None else max(newest, ts_ms)
                    out.append(record)
                    released += 1
            if not released:
                return out
