"""WindowedAggregate: per-sensor statistics of event-time fixed windows, a batch at a time.

Input: ``traffic_event`` :class:`~schemas.batches.Columns` batches. Each batch
is split by sensor shard (:mod:`transforms.keys`) and by window; the parts of
one shard and window are combined with numpy (:class:`BatchSpeedStatsFn`) in
Beam's event-time windows, with Beam's triggers. Output: one
``window_aggregate`` batch per shard, window and pane, holding every sensor
of the shard with readings in the window so far (accumulating panes); on
bounded input without lateness limit or early panes, one batch per UTC day
of windows holding every sensor (the only pane; see ``_expand_bounded``).

Lateness policy (see docs/transforms.md): a Python DoFn cannot read the
watermark, so lateness is decided deterministically by ``FlagLate``, a stateful
DoFn (state per sensor shard, :mod:`transforms.keys`) that keeps each sensor's
event-time high-water mark (the largest event time seen so far). An event is *late* when the end of its window
plus ``allowed_lateness_s`` is at or before that mark, i.e. when the sensor has
already reported from a time at which Beam's watermark (if it tracked this
sensor) would have closed the window. Late events go to the ``late`` output
(and a counter); nothing vanishes. The GroupByKey behind the statistics keeps
windows for ``allowed_lateness_s + lateness_grace_s`` so that its own lateness
rule cannot drop what ``FlagLate`` let through unless the runner's watermark is
more than ``lateness_grace_s`` ahead of a sensor's own readings. Such an event
still reaches the statistics as a LATE pane when it is within that grace.

``allowed_lateness_s=None`` switches the filter off (every event is aggregated):
use it for bounded (batch) input, whose arrival order means nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms import trigger as tr
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import FixedWindows, GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from ml.dataset import DAY_MS
from schemas.batches import Columns
from transforms.exceptions import TransformConfigError
from transforms.keys import shard_parts, time_parts
from transforms.state_tables import StatefulFn

__all__ = [
    "AGGREGATES_TAG",
    "AGGREGATE_KIND",
    "LATE_TAG",
    "BatchSpeedStatsFn",
    "TaggedOutputs",
    "WindowedAggregate",
    "aggregate_columns",
    "speed_stats",
    "window_aggregate",
    "window_stats",
]

AGGREGATES_TAG = "aggregates"
LATE_TAG = "late"
STEP = "WindowedAggregate"
DEFAULT_LATENESS_GRACE_S = 24 * 3600
BLOCK_MS = DAY_MS  # bounded input: the windows of a day are aggregated, and go downstream, as one batch
_TIMING = {PaneInfoTiming.EARLY: "EARLY", PaneInfoTiming.ON_TIME: "ON_TIME", PaneInfoTiming.LATE: "LATE"}


class TaggedOutputs(dict):
    """A composite's named outputs: ``result["late"]`` or ``result.late``."""

    def __getattr__(self, name: str) -> beam.PCollection:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def speed_stats(speeds: list[float], missing_count: int) -> dict[str, Any]:
    """Mean, min, max and population stddev of ``speeds``; exact whatever their order.

    ``math.fsum`` rounds the sums once, so the result does not depend on the
    order the runner combined the readings in (batch and streaming agree bit for bit).
    """
    count = len(speeds) + missing_count
    if not speeds:
        return {"mean": None, "min": None, "max": None, "stddev": None, "count": count, "missing": missing_count}
    mean = math.fsum(speeds) / len(speeds)
    variance = math.fsum((s - mean) ** 2 for s in speeds) / len(speeds)
    return {
        "mean": mean,
        "min": min(speeds),
        "max": max(speeds),
        "stddev": math.sqrt(variance),
        "count": count,
        "missing": missing_count,
    }


AGGREGATE_KIND = "window_aggregate"
AGGREGATE_NULLABLE = frozenset({"mean_speed_mph", "min_speed_mph", "max_speed_mph", "stddev_speed_mph"})


# Rows from which window_stats ranks the sensors (and windows) by a hash pass before it sorts: a day of a
# network's windows sorts faster so (18 ms against 26 ms for 59,616 readings), a pane of a few hundred rows
# faster by its text directly (a pass costs more than such a sort).
HASHED_SORT_FROM = 32_768


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """True where a run of equal keys begins."""
    first = np.ones(len(sorted_keys), dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return first


def _stats_order(sensor_ids: np.ndarray, speeds: np.ndarray, window_starts: np.ndarray | None) -> np.ndarray:
    """The rows in order of (window,) sensor and speed."""
    if len(sensor_ids) < HASHED_SORT_FROM:
        return np.lexsort((speeds, sensor_ids) if window_starts is None else (speeds, sensor_ids, window_starts))
    # Each sensor (and window) as its rank in sorted order: the sort compares integers, not text.
    codes, uniques = pd.factorize(sensor_ids, sort=True)
    key = codes.astype(np.int64)
    if window_starts is not None:
        key += pd.factorize(window_starts, sort=True)[0].astype(np.int64) * len(uniques)
    order = np.argsort(key, kind="stable")
    if _group_starts(key[order]).all():
        return order
    return np.lexsort((speeds, key))  # some sensor has several readings in a window: summed in order of speed


def window_stats(sensor_ids: np.ndarray, speeds: np.ndarray,
                 window_starts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`speed_stats` of every sensor's speeds (NaN = missing reading) at once, sensors in sorted order.

    With ``window_starts`` (one per reading) the stats are those of every
    (window, sensor) pair, ordered by window then sensor, and the result holds
    a ``window_start`` column. The readings are sorted by (window,) sensor and
    speed before they are summed, so the result does not depend on the order
    they arrived or were combined in, nor on what other windows came with
    them: batch and streaming agree bit for bit.
    """
    order = _stats_order(sensor_ids, speeds, window_starts)
    s, v = sensor_ids[order], speeds[order]
    first = _group_starts(s)
    if window_starts is not None:
        w = np.asarray(window_starts, dtype=np.int64)[order]
        first |= _group_starts(w)
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(s)))
    observed = ~np.isnan(v)
    if len(s) == 0:
        n_obs = mean = stddev = low = high = np.empty(0)
    else:
        n_obs = np.add.reduceat(observed.astype(np.int64), starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.add.reduceat(np.where(observed, v, 0.0), starts) / n_obs
            deviation = np.where(observed, (v - np.repeat(mean, counts)) ** 2, 0.0)
            stddev = np.sqrt(np.add.reduceat(deviation, starts) / n_obs)
        low = np.fmin.reduceat(v, starts)
        high = np.fmax.reduceat(v, starts)
    none = n_obs == 0
    stats = {"sensor_id": s[starts], "mean": np.where(none, np.nan, mean), "min": np.where(none, np.nan, low),
             "max": np.where(none, np.nan, high), "stddev": np.where(none, np.nan, stddev),
             "count": counts.astype(np.int64), "missing": (counts - n_obs).astype(np.int64)}
    if window_starts is not None:
        stats["window_start"] = w[starts]
    return stats


def aggregate_columns(stats: dict[str, np.ndarray], start_ms: int | np.ndarray, end_ms: int | np.ndarray,
                      timing: str) -> Columns:
    """A ``window_aggregate`` batch from :func:`window_stats`: of one window, or of one window per row (arrays)."""
    n = len(stats["sensor_id"])
    return Columns(AGGREGATE_KIND, {
        "sensor_id": np.asarray(stats["sensor_id"], dtype=str),
        "window_start": np.broadcast_to(np.asarray(start_ms, dtype=np.int64), (n,)).copy(),
        "window_end": np.broadcast_to(np.asarray(end_ms, dtype=np.int64), (n,)).copy(),
        "mean_speed_mph": stats["mean"],
        "min_speed_mph": stats["min"],
        "max_speed_mph": stats["max"],
        "stddev_speed_mph": stats["stddev"],
        "count": stats["count"],
        "missing_count": stats["missing"],
        "pane_timing": np.full(n, timing),
    }, AGGREGATE_NULLABLE)


class BatchSpeedStatsFn(beam.CombineFn):
    """Combines ``traffic_event`` batches of one window into :func:`window_stats` (accumulators are arrays).

    With ``window_ms`` the batches may span many windows (a block of them):
    the output is then the stats of every (window, sensor), with a
    ``window_start`` column.
    """

    def __init__(self, window_ms: int | None = None) -> None:
        self.window_ms = window_ms

    def create_accumulator(self) -> list[tuple[np.ndarray, ...]]:
        return []

    def add_input(self, accumulator: list, batch: Columns) -> list:
        part = (batch["sensor_id"], batch["speed_mph"])
        if self.window_ms is not None:
            part += (batch["event_time"] - batch["event_time"] % self.window_ms,)
        accumulator.append(part)
        return accumulator

    def merge_accumulators(self, accumulators) -> list:
        return [part for accumulator in accumulators for part in accumulator]

    def compact(self, accumulator: list) -> list:
        if len(accumulator) <= 1:
            return accumulator
        return [tuple(np.concatenate(columns) for columns in zip(*accumulator, strict=True))]

    def extract_output(self, accumulator: list) -> dict[str, np.ndarray]:
        empty = (np.empty(0, str), np.empty(0)) + ((np.empty(0, np.int64),) if self.window_ms is not None else ())
        (sensors, speeds, *starts), = self.compact(accumulator) or [empty]
        return window_stats(sensors, speeds, *starts)


def _stamped(shard: int, part: Columns) -> TimestampedValue:
    return TimestampedValue((shard, part), Timestamp(micros=int(part["event_time"].min()) * 1000))


class _FlagLateFn(StatefulFn):
    """Per shard: splits batches by window and flags the late rows (see the module doc)."""

    # sensor_id -> the sensor's high-water mark (ms)
    HIGH_WATER_MARKS = ReadModifyWriteStateSpec("high_water_marks_ms", PickleCoder())
    HIGH_WATER_MARKS_PARAM = beam.DoFn.StateParam(HIGH_WATER_MARKS)

    def __init__(self, window_ms: int, allowed_lateness_ms: int) -> None:
        self.window_ms = window_ms
        self.allowed_lateness_ms = allowed_lateness_ms
        self.late = Metrics.counter(STEP, "late")

    def process(self, element: tuple[int, Columns], high_water_marks=HIGH_WATER_MARKS_PARAM) -> Iterator[Any]:
        shard, batch = element
        marks = high_water_marks.read() or {}
        times = batch["event_time"]
        late = np.zeros(len(batch), dtype=bool)
        unique, inverse = np.unique(batch["sensor_id"], return_inverse=True)
        for k, sensor in enumerate(unique.tolist()):
            rows = np.flatnonzero(inverse == k)
            before = marks.get(sensor, np.iinfo(np.int64).min)
            running = np.maximum.accumulate(np.maximum(times[rows], before))
            window_end = times[rows] - times[rows] % self.window_ms + self.window_ms
            late[rows] = window_end + self.allowed_lateness_ms <= running
            marks[sensor] = int(running[-1])
        high_water_marks.write(marks)
        if late.any():
            self.late.inc(int(late.sum()))
            yield TaggedOutput(LATE_TAG, batch.take(late))
            batch = batch.take(~late)
        for _start, part in time_parts(batch, self.window_ms):
            yield _stamped(shard, part)


def _split_windows(element: tuple[int, Columns], window_ms: int) -> Iterator[TimestampedValue]:
    """``allowed_lateness_s=None``: nothing is late; stateless, so batch runners need no keyed state."""
    shard, batch = element
    for _start, part in time_parts(batch, window_ms):
        yield _stamped(shard, part)


def _block_aggregates(element: tuple[int, dict[str, np.ndarray]], window_ms: int) -> Iterator[TimestampedValue]:
    """A block's stats -> one ``window_aggregate`` batch of its windows, stamped 1 ms before the last one's end."""
    _, stats = element
    if len(stats["sensor_id"]):
        starts = stats["window_start"]
        yield TimestampedValue(aggregate_columns(stats, starts, starts + window_ms, "ON_TIME"),
                               Timestamp(micros=(int(starts.max()) + window_ms - 1) * 1000))


def window_aggregate(sensor_id: str, start_ms: int, end_ms: int, stats: dict[str, Any], timing: str) -> dict[str, Any]:
    """A WindowAggregate record (schemas/avro/window_aggregate.avsc) of one sensor's window and its stats."""
    return {
        "sensor_id": sensor_id,
        "window_start": start_ms,
        "window_end": end_ms,
        "mean_speed_mph": stats["mean"],
        "min_speed_mph": stats["min"],
        "max_speed_mph": stats["max"],
        "stddev_speed_mph": stats["stddev"],
        "count": stats["count"],
        "missing_count": stats["missing"],
        "pane_timing": timing,
    }


class _ToWindowAggregateFn(beam.DoFn):
    def process(self, element: tuple[int, dict[str, np.ndarray]], window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam) -> Iterator[Columns]:
        _, stats = element
        if len(stats["sensor_id"]):
            timing = _TIMING.get(pane.timing, "UNKNOWN")
            yield aggregate_columns(stats, window.start.micros // 1000, window.end.micros // 1000, timing)


class WindowedAggregate(beam.PTransform):
    """``traffic_event`` batches -> ``aggregates`` (``window_aggregate`` batches) and ``late`` (event batches).

    Event-time fixed windows of ``window_s`` per sensor. Fires ON_TIME when the
    watermark passes the window end, EARLY panes every ``early_firing_s`` of
    processing time and/or every ``early_firing_count`` input parts (a part is
    one batch's readings of one shard and window) when set, and a LATE pane per
    admitted late part. ``accumulate=True`` makes each pane
    hold every reading so far (what :class:`~transforms.history.NetworkHistory`
    expects: the latest pane wins). Aggregates carry the window end as their
    timestamp.
    """

    def __init__(
        self,
        window_s: int = 300,
        allowed_lateness_s: int | None = 0,
        early_firing_s: int | None = None,
        early_firing_count: int | None = None,
        accumulate: bool = True,
        lateness_grace_s: int = DEFAULT_LATENESS_GRACE_S,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        if window_s <= 0:
            raise TransformConfigError(f"window_s must be positive, got {window_s}")
        if allowed_lateness_s is not None and allowed_lateness_s < 0:
            raise TransformConfigError(f"allowed_lateness_s must be >= 0 or None, got {allowed_lateness_s}")
        if (early_firing_s is not None and early_firing_s <= 0) or (
            early_firing_count is not None and early_firing_count <= 0
        ):
            raise TransformConfigError("early_firing_s and early_firing_count must be positive when set")
        if lateness_grace_s < 0:
            raise TransformConfigError(f"lateness_grace_s must be >= 0, got {lateness_grace_s}")
        self.window_s = int(window_s)
        self.allowed_lateness_s = None if allowed_lateness_s is None else int(allowed_lateness_s)
        self.early_firing_s = early_firing_s
        self.early_firing_count = early_firing_count
        self.accumulate = accumulate
        self.lateness_grace_s = int(lateness_grace_s)

    def _trigger(self) -> tr.TriggerFn:
        early: list[tr.TriggerFn] = []
        if self.early_firing_s is not None:
            early.append(tr.AfterProcessingTime(self.early_firing_s))
        if self.early_firing_count is not None:
            early.append(tr.AfterCount(self.early_firing_count))
        if not early:
            # Fires when the watermark passes the window end, then once per late reading: the same panes
            # as AfterWatermark(late=AfterCount(1)), but lets batch runners lift the combiner.
            return tr.DefaultTrigger()
        early_trigger = early[0] if len(early) == 1 else tr.AfterAny(*early)
        return tr.AfterWatermark(early=early_trigger, late=tr.AfterCount(1))

    def _bounded_batch(self, events: beam.PCollection) -> bool:
        no_early = self.early_firing_s is None and self.early_firing_count is None
        return self.allowed_lateness_s is None and no_early and bool(getattr(events, "is_bounded", False))

    def _expand_bounded(self, events: beam.PCollection) -> TaggedOutputs:
        """Bounded input without a lateness limit or early panes: a block of windows (a day's) is the key.

        The same aggregates as the windowed path (one ON_TIME pane per window
        and sensor), but batch runners combine them without the trigger
        machinery (which took most of a DirectRunner batch run), and one batch
        holds a block's windows: a day of 5-minute windows is 288 elements
        fewer through every stage downstream. The batches stay in the global
        window, stamped 1 ms before their last window's end.
        """
        window_ms = self.window_s * 1000
        block_ms = window_ms * max(1, BLOCK_MS // window_ms)  # whole windows: each lies in one block
        aggregates = (
            events
            | "KeyByBlock" >> beam.FlatMap(time_parts, block_ms).with_output_types(tuple[int, Any])
            | "SpeedStats" >> beam.CombinePerKey(BatchSpeedStatsFn(window_ms))
            | "ToWindowAggregates" >> beam.FlatMap(_block_aggregates, window_ms)
        )
        late = events | "NothingLate" >> beam.FlatMap(lambda _: ())
        return TaggedOutputs({AGGREGATES_TAG: aggregates, LATE_TAG: late})

    def expand(self, events: beam.PCollection) -> TaggedOutputs:
        window_ms = self.window_s * 1000
        mode = tr.AccumulationMode.ACCUMULATING if self.accumulate else tr.AccumulationMode.DISCARDING
        global_events = events | "ToGlobalWindow" >> beam.WindowInto(GlobalWindows())
        if self._bounded_batch(events):
            return self._expand_bounded(global_events)
        keyed = global_events | "KeyByShard" >> beam.FlatMap(shard_parts).with_output_types(tuple[int, Any])
        if self.allowed_lateness_s is None:
            parts = keyed | "SplitWindows" >> beam.FlatMap(_split_windows, window_ms).with_output_types(
                tuple[int, Any])
            late = keyed | "NothingLate" >> beam.FlatMap(lambda _: ())
        else:
            flagged = keyed | "FlagLate" >> beam.ParDo(
                _FlagLateFn(window_ms, self.allowed_lateness_s * 1000)).with_outputs(LATE_TAG, main="on_time")
            parts, late = flagged.on_time, flagged[LATE_TAG]
        aggregates = (
            parts
            | "FixedWindows"
            >> beam.WindowInto(
                FixedWindows(self.window_s),
                trigger=self._trigger(),
                accumulation_mode=mode,
                allowed_lateness=Duration(seconds=(self.allowed_lateness_s or 0) + self.lateness_grace_s),
            )
            | "SpeedStats" >> beam.CombinePerKey(BatchSpeedStatsFn())
            | "ToWindowAggregate" >> beam.ParDo(_ToWindowAggregateFn())
        )
        return TaggedOutputs({AGGREGATES_TAG: aggregates, LATE_TAG: late})
