"""DeduplicateEvents: one TrafficEvent per (sensor_id, event_time), a batch at a time.

Input and output: ``traffic_event`` :class:`~schemas.batches.Columns` batches.
The first event seen for a (sensor, event time) pair passes; every repeat goes
to the ``dead_letter`` output (reason ``duplicate``, or ``conflicting_duplicate``
when its speed differs from the first one), so in = valid + dead letters holds
exactly. Within a batch, arrival order decides which one is first.

Each batch is split by sensor shard (:mod:`transforms.keys`; one key per
shard, so a shard's batches keep their arrival order). A shard's state holds,
per UTC day of the event times, the times each of its sensors has reported
with their speeds, as sorted arrays. A bounded input is keyed by shard *and*
day instead (:func:`shard_day_parts`; its arrival order means nothing): there
no timer fires before the input ends, so a shard's state held every day, and a
run over months rewrote all of them at every commit (the whole bundled history
took 45 s, against 27-29 s keyed by day). An event-time timer forgets a day once
the watermark is ``ttl_s`` past the day's end; a repeat arriving after that is
not recognised as a duplicate (``ttl_s`` bounds how late a replayed duplicate
can still be caught). The same code runs in batch and streaming; the output
batches keep their input's timestamp.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Timestamp

from ml.dataset import DAY_MS
from schemas.batches import Columns
from schemas.codec import AvroCodec, codec_for
from transforms.exceptions import TransformConfigError
from transforms.keys import DEFAULT_SHARDS, shard_parts, time_parts
from transforms.state_tables import StatefulFn
from transforms.validate import DEAD_LETTER_TAG, VALID_TAG, make_dead_letter, system_now_ms

__all__ = ["DAY_MS", "DEFAULT_DEDUPE_TTL_S", "DeduplicateEvents", "first_wins", "shard_day_parts"]

STEP = "DeduplicateEvents"
DEFAULT_DEDUPE_TTL_S = 6 * 3600

# sensor_id -> (event times sorted, their first speeds): one key's memory.
Seen = dict[str, tuple[np.ndarray, np.ndarray]]


def first_wins(seen: Seen, sensors: np.ndarray, times: np.ndarray,
               speeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marks the repeats in a batch and records the rest in ``seen``.

    Returns (keep, first_speed): ``keep[i]`` is False for a row whose (sensor,
    time) was seen before (earlier in the batch or in ``seen``), and then
    ``first_speed[i]`` is the speed of the first one (NaN = no reading).
    """
    n = len(sensors)
    keep = np.ones(n, dtype=bool)
    first_speed = np.full(n, np.nan)
    if n == 0:
        return keep, first_speed
    codes, distinct = pd.factorize(sensors)
    names = distinct.tolist()
    known = [seen.get(name) for name in names]
    # One table of what is known (ahead of every arrival, rank -1) and the batch (ranked by arrival), sorted by
    # sensor, time and rank: a row is a repeat when the row before it has its sensor and time.
    known_sizes = np.array([0 if k is None else len(k[0]) for k in known], np.int64)
    all_codes = np.concatenate([np.repeat(np.arange(len(names)), known_sizes), codes])
    all_times = np.concatenate([*(k[0] for k in known if k is not None), np.asarray(times, np.int64)])
    all_speeds = np.concatenate([*(k[1] for k in known if k is not None), np.asarray(speeds, np.float64)])
    ranks = np.concatenate([np.full(int(known_sizes.sum()), -1, np.int64), np.arange(n)])
    order = np.lexsort((ranks, all_times, all_codes))
    c, t = all_codes[order], all_times[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (c[1:] != c[:-1]) | (t[1:] != t[:-1])
    group_first = order[np.flatnonzero(first)[np.cumsum(first) - 1]]  # each row's group's first row
    arrivals = ranks[order]  # -1 for what was known
    repeat = (arrivals >= 0) & ~first
    batch_rows = arrivals[repeat]
    keep[batch_rows] = False
    first_speed[batch_rows] = all_speeds[group_first[repeat]]
    # The new memory: each sensor's first rows (what was known and what is new), sorted by time.
    firsts = order[first]
    bounds = np.flatnonzero(np.diff(all_codes[firsts])) + 1
    for rows in np.split(firsts, bounds):
        seen[names[int(all_codes[rows[0]])]] = (all_times[rows], all_speeds[rows])
    return keep, first_speed


def shard_day_parts(batch: Columns) -> Iterator[tuple[int, Columns]]:
    """``(key, the batch's rows of one shard and UTC day of the event times)``, rows in order: bounded input's keys.

    A repeat has its first's sensor and event time, so it has its key too. The
    key is one int, ``day * DEFAULT_SHARDS + shard``.
    """
    for shard, part in shard_parts(batch, DEFAULT_SHARDS):
        for day_start, rows in time_parts(part, DAY_MS):
            yield day_start // DAY_MS * DEFAULT_SHARDS + shard, rows


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


class _FirstWinsFn(StatefulFn):
    SEEN = ReadModifyWriteStateSpec("seen_by_day", PickleCoder())
    EXPIRY_AT = ReadModifyWriteStateSpec("expiry_at_ms", PickleCoder())
    EXPIRY = TimerSpec("dedupe_expiry", TimeDomain.WATERMARK)
    SEEN_PARAM = beam.DoFn.StateParam(SEEN)
    EXPIRY_AT_PARAM = beam.DoFn.StateParam(EXPIRY_AT)
    EXPIRY_PARAM = beam.DoFn.TimerParam(EXPIRY)

    def __init__(self, ttl_s: int, now_ms_fn: Callable[[], int] | None, registry_url: str | None) -> None:
        self.ttl_ms = int(ttl_s) * 1000
        self.registry_url = registry_url
        self.now_ms_fn = now_ms_fn
        self._codec: AvroCodec | None = None
        self.kept = Metrics.counter(STEP, "kept")
        self.duplicates = Metrics.counter(STEP, "dead_letter_duplicate")
        self.conflicts = Metrics.counter(STEP, "dead_letter_conflicting_duplicate")

    def setup(self) -> None:
        super().setup()
        self._codec = codec_for("traffic_event", self.registry_url)

    def process(self, element: tuple[int, Columns], seen_state=SEEN_PARAM, expiry_at=EXPIRY_AT_PARAM,
                expiry=EXPIRY_PARAM) -> Iterator[Any]:
        _, batch = element
        by_day: dict[int, Seen] = seen_state.read() or {}
        days = batch["event_time"] // DAY_MS
        keep = np.ones(len(batch), dtype=bool)
        first_speed = np.full(len(batch), np.nan)
        for day in np.unique(days).tolist():
            rows = np.flatnonzero(days == day)
            day_keep, day_first = first_wins(by_day.setdefault(int(day), {}), batch["sensor_id"][rows],
                                             batch["event_time"][rows], batch["speed_mph"][rows])
            keep[rows], first_speed[rows] = day_keep, day_first
        seen_state.write(by_day)
        self._arm(by_day, expiry_at, expiry)
        kept = int(keep.sum())
        if kept:
            self.kept.inc(kept)
            yield batch.take(keep) if kept < len(batch) else batch
        if kept == len(batch):
            return
        now = int(self.now_ms_fn()) if self.now_ms_fn is not None else system_now_ms()
        for i in np.flatnonzero(~keep).tolist():
            yield TaggedOutput(DEAD_LETTER_TAG, self._dead_letter(batch, i, float(first_speed[i]), now))

    def _arm(self, by_day: dict[int, Seen], expiry_at, expiry) -> None:
        """The timer at the oldest remembered day's end + ttl (a timer cannot tell how far the watermark is)."""
        due = (min(by_day) + 1) * DAY_MS + self.ttl_ms if by_day else None
        if due is not None and due != expiry_at.read():
            expiry.set(Timestamp(micros=due * 1000))
            expiry_at.write(due)

    def _dead_letter(self, batch: Columns, i: int, first: float, now: int) -> dict[str, Any]:
        event = batch.take([i]).records()[0]
        speed = float(batch["speed_mph"][i])
        conflicting = not _same(first, speed)
        (self.conflicts if conflicting else self.duplicates).inc()
        error = f"sensor {event['sensor_id']} already has a reading at {event['event_time']}"
        if conflicting:
            error += f" with speed {None if math.isnan(first) else first} (this one: {event['speed_mph']})"
        return make_dead_letter(self._payload(event), reason="conflicting_duplicate" if conflicting else "duplicate",
                                error=error, step=STEP, failed_at=now, key=str(event["sensor_id"]).encode("utf-8"))

    @on_timer(EXPIRY)
    def expire(self, fired_at=beam.DoFn.TimestampParam, seen_state=SEEN_PARAM, expiry_at=EXPIRY_AT_PARAM,
               expiry=EXPIRY_PARAM) -> None:
        fired_ms = fired_at.micros // 1000
        by_day = {day: seen for day, seen in (seen_state.read() or {}).items()
                  if (day + 1) * DAY_MS + self.ttl_ms > fired_ms}
        expiry_at.clear()
        if not by_day:
            seen_state.clear()
            return
        seen_state.write(by_day)
        self._arm(by_day, expiry_at, expiry)

    def _payload(self, event: dict[str, Any]) -> bytes:
        if self._codec is None:
            self.setup()
        assert self._codec is not None
        try:
            return self._codec.encode(event)
        except Exception:  # noqa: BLE001 - an event that does not fit the schema is kept as text
            return repr(event).encode("utf-8", "backslashreplace")


class DeduplicateEvents(beam.PTransform):
    """Drop exact repeats of (sensor_id, event_time) into ``dead_letter``; outputs ``valid`` and ``dead_letter``.

    Input: ``traffic_event`` batches (the ``valid`` output of
    :class:`~transforms.validate.ValidateEvents`). Output batches are in the
    global window, one per shard (and UTC day, on bounded input) of each input batch. The dead letter's
    payload is the repeated event in the ``traffic_event`` wire format.
    """

    def __init__(
        self,
        ttl_s: int = DEFAULT_DEDUPE_TTL_S,
        now_ms_fn: Callable[[], int] | None = None,
        registry_url: str | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        if ttl_s <= 0:
            raise TransformConfigError(f"ttl_s must be positive, got {ttl_s}")
        self.ttl_s = int(ttl_s)
        self.now_ms_fn = now_ms_fn
        self.registry_url = registry_url

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            events
            | "ToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "SplitByShard" >> beam.FlatMap(shard_day_parts if events.is_bounded else shard_parts).with_output_types(
                tuple[int, Any])
            | "KeepFirst"
            >> beam.ParDo(_FirstWinsFn(self.ttl_s, self.now_ms_fn, self.registry_url)).with_outputs(
                DEAD_LETTER_TAG, main=VALID_TAG
            )
        )
