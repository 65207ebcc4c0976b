"""WindowedAggregate: per-sensor statistics of event-time fixed windows.

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
use it for bounded (batch) input, whose arrival order means nothing. On bounded
input without early firings it also computes windows as part of the key, which
spares batch runners Beam's trigger machinery (same output).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms import trigger as tr
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import FixedWindows, GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms.exceptions import TransformConfigError
from transforms.keys import sensor_shard
from transforms.state_tables import WatermarkTable

__all__ = [
    "AGGREGATES_TAG",
    "LATE_TAG",
    "SpeedStatsFn",
    "TaggedOutputs",
    "WindowedAggregate",
    "speed_stats",
    "window_aggregate",
]

AGGREGATES_TAG = "aggregates"
LATE_TAG = "late"
STEP = "WindowedAggregate"
DEFAULT_LATENESS_GRACE_S = 24 * 3600
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


class SpeedStatsFn(beam.CombineFn):
    """Combines speeds (``None`` = missing reading) into :func:`speed_stats`."""

    def create_accumulator(self) -> tuple[list[float], int]:
        return [], 0

    def add_input(self, accumulator: tuple[list[float], int], speed: float | None) -> tuple[list[float], int]:
        speeds, missing = accumulator
        if speed is None:
            return speeds, missing + 1
        speeds.append(float(speed))
        return speeds, missing

    def merge_accumulators(self, accumulators) -> tuple[list[float], int]:
        speeds: list[float] = []
        missing = 0
        for part, part_missing in accumulators:
            speeds.extend(part)
            missing += part_missing
        return speeds, missing

    def extract_output(self, accumulator: tuple[list[float], int]) -> dict[str, Any]:
        speeds, missing = accumulator
        return speed_stats(list(speeds), missing)


class _FlagLateFn(beam.DoFn):
    # Keyed by sensor shard (transforms.keys): sensor_id -> the sensor's high-water mark (ms).
    HIGH_WATER_MARKS = ReadModifyWriteStateSpec("high_water_marks_ms", PickleCoder())
    HIGH_WATER_MARKS_PARAM = beam.DoFn.StateParam(HIGH_WATER_MARKS)

    def __init__(self, window_ms: int, allowed_lateness_ms: int | None) -> None:
        self.window_ms = window_ms
        self.allowed_lateness_ms = allowed_lateness_ms
        self.late = Metrics.counter(STEP, "late")

    def process(self, element: tuple[int, dict[str, Any]], high_water_marks=HIGH_WATER_MARKS_PARAM) -> Iterator[Any]:
        _, event = element
        sensor_id = event["sensor_id"]
        event_time = int(event["event_time"])
        if self.allowed_lateness_ms is not None:
            marks = WatermarkTable.of(high_water_marks.read())
            seen = marks.get(sensor_id)
            mark = event_time if seen is None else max(seen, event_time)
            if mark != seen:
                marks[sensor_id] = mark
                high_water_marks.write(marks)
            window_end = event_time - event_time % self.window_ms + self.window_ms
            if window_end + self.allowed_lateness_ms <= mark:
                self.late.inc()
                yield TaggedOutput(LATE_TAG, event)
                return
        yield sensor_id, event.get("speed_mph")


class _NoLateFn(beam.DoFn):
    """``allowed_lateness_s=None``: nothing is late; stateless, so batch runners need no keyed state."""

    def process(self, element: tuple[str, dict[str, Any]]) -> Iterator[tuple[str, float | None]]:
        sensor_id, event = element
        yield sensor_id, event.get("speed_mph")


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


def _by_shard(element: tuple[str, dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    return sensor_shard(element[0]), element[1]


def _key_by_window(element: tuple[str, dict[str, Any]], window_ms: int) -> tuple[tuple[str, int], float | None]:
    sensor_id, event = element
    event_time = int(event["event_time"])
    return (sensor_id, event_time - event_time % window_ms), event.get("speed_mph")


class _BoundedAggregateFn(beam.DoFn):
    """Bounded input: the whole window is known, so its one pane is ON_TIME.

    It is stamped 1 ms before the window end: the window's last millisecond, as portable runners stamp a pane.
    """

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms

    def process(self, element: tuple[tuple[str, int], dict[str, Any]]) -> Iterator[TimestampedValue]:
        (sensor_id, start_ms), stats = element
        end_ms = start_ms + self.window_ms
        yield TimestampedValue(
            window_aggregate(sensor_id, start_ms, end_ms, stats, "ON_TIME"), Timestamp(micros=(end_ms - 1) * 1000)
        )


class _ToWindowAggregateFn(beam.DoFn):
    def process(
        self,
        element: tuple[str, dict[str, Any]],
        window=beam.DoFn.WindowParam,
        pane=beam.DoFn.PaneInfoParam,
    ) -> Iterator[dict[str, Any]]:
        sensor_id, stats = element
        timing = _TIMING.get(pane.timing, "UNKNOWN")
        yield window_aggregate(sensor_id, window.start.micros // 1000, window.end.micros // 1000, stats, timing)


class WindowedAggregate(beam.PTransform):
    """TrafficEvent dicts -> ``aggregates`` (WindowAggregate dicts) and ``late`` (TrafficEvent dicts).

    Event-time fixed windows of ``window_s`` per sensor. Fires ON_TIME when the
    watermark passes the window end, EARLY panes every ``early_firing_s`` of
    processing time and/or every ``early_firing_count`` readings when set, and
    a LATE pane per admitted late reading. ``accumulate=True`` makes each pane
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

    def _expand_bounded(self, keyed: beam.PCollection) -> TaggedOutputs:
        """Bounded input without a lateness limit or early panes: windows as part of the key.

        The same aggregates as the windowed path (one ON_TIME pane per window, in
        FixedWindows, stamped with the window end), but batch runners combine them
        without the trigger machinery, several times faster on the DirectRunner.
        """
        window_ms = self.window_s * 1000
        aggregates = (
            keyed
            | "KeyByWindow"
            >> beam.Map(_key_by_window, window_ms).with_output_types(tuple[tuple[str, int], float | None])
            | "SpeedStats" >> beam.CombinePerKey(SpeedStatsFn())
            | "ToWindowAggregate" >> beam.ParDo(_BoundedAggregateFn(window_ms))
            | "FixedWindows" >> beam.WindowInto(FixedWindows(self.window_s))
        )
        late = keyed | "NothingLate" >> beam.FlatMap(lambda _: ())
        return TaggedOutputs({AGGREGATES_TAG: aggregates, LATE_TAG: late})

    def expand(self, events: beam.PCollection) -> TaggedOutputs:
        lateness_ms = None if self.allowed_lateness_s is None else self.allowed_lateness_s * 1000
        mode = tr.AccumulationMode.ACCUMULATING if self.accumulate else tr.AccumulationMode.DISCARDING
        flag_late = _NoLateFn() if lateness_ms is None else _FlagLateFn(self.window_s * 1000, lateness_ms)
        keyed = (
            events
            | "ToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyBySensor" >> beam.Map(lambda e: (e["sensor_id"], e)).with_output_types(tuple[str, dict[str, Any]])
        )
        if self._bounded_batch(events):
            return self._expand_bounded(keyed)
        if lateness_ms is not None:  # the lateness state lives per sensor shard
            keyed = keyed | "KeyByShard" >> beam.Map(_by_shard).with_output_types(tuple[int, dict[str, Any]])
        flagged = keyed | "FlagLate" >> beam.ParDo(flag_late).with_outputs(LATE_TAG, main="on_time")
        aggregates = (
            flagged.on_time
            | "FixedWindows"
            >> beam.WindowInto(
                FixedWindows(self.window_s),
                trigger=self._trigger(),
                accumulation_mode=mode,
                allowed_lateness=Duration(seconds=(self.allowed_lateness_s or 0) + self.lateness_grace_s),
            )
            | "SpeedStats" >> beam.CombinePerKey(SpeedStatsFn())
            | "ToWindowAggregate" >> beam.ParDo(_ToWindowAggregateFn())
        )
        return TaggedOutputs({AGGREGATES_TAG: aggregates, LATE_TAG: flagged[LATE_TAG]})
