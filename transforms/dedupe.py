"""DeduplicateEvents: one TrafficEvent per (sensor_id, event_time).

The first event seen for a (sensor, event time) pair passes; every repeat goes
to the ``dead_letter`` output (reason ``duplicate``, or ``conflicting_duplicate``
when its speed differs from the first one), so in = valid + dead letters holds
exactly. The transform is a stateful DoFn in the global window keyed by sensor
shard (:mod:`transforms.keys`; the (sensor, event time) pairs it has seen, with
their speeds), identical in batch and streaming. An event-time timer per shard
forgets an event time once the watermark is ``ttl_s`` (at most about twice
that) past it; a repeat arriving after that is not recognised as a duplicate
(``ttl_s`` bounds the state kept, and how late a replayed duplicate can still be
caught). Few keys matter both to the batch runners and to streaming latency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Timestamp

from schemas.codec import AvroCodec, codec_for
from transforms.exceptions import TransformConfigError
from transforms.keys import sensor_shard
from transforms.state_tables import SeenTable
from transforms.validate import DEAD_LETTER_TAG, VALID_TAG, make_dead_letter, system_now_ms

__all__ = ["DEFAULT_DEDUPE_TTL_S", "DeduplicateEvents"]

STEP = "DeduplicateEvents"
DEFAULT_DEDUPE_TTL_S = 6 * 3600


def _by_shard(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return sensor_shard(event["sensor_id"]), event


class _FirstWinsFn(beam.DoFn):
    # (sensor_id, event_time ms) -> (speed,) of the first event seen, per shard; pruned by the expiry timer.
    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())
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
        self._codec = codec_for("traffic_event", self.registry_url)

    def process(
        self,
        element: tuple[int, dict[str, Any]],
        seen_state=SEEN_PARAM,
        expiry_at=EXPIRY_AT_PARAM,
        expiry=EXPIRY_PARAM,
    ) -> Iterator[Any]:
        _, event = element
        sensor_id = event["sensor_id"]
        event_time = int(event["event_time"])
        seen = SeenTable.of(seen_state.read())
        first = seen.get((sensor_id, event_time))
        if first is None:
            seen[(sensor_id, event_time)] = (event.get("speed_mph"),)
            seen_state.write(seen)
            due = event_time + self.ttl_ms
            armed = expiry_at.read()
            if armed is None or due < armed:
                expiry.set(Timestamp(micros=due * 1000))
                expiry_at.write(due)
            self.kept.inc()
            yield event
            return
        conflicting = first[0] != event.get("speed_mph")
        reason = "conflicting_duplicate" if conflicting else "duplicate"
        (self.conflicts if conflicting else self.duplicates).inc()
        error = f"sensor {sensor_id} already has a reading at {event_time}"
        if conflicting:
            error += f" with speed {first[0]} (this one: {event.get('speed_mph')})"
        now = int(self.now_ms_fn()) if self.now_ms_fn is not None else system_now_ms()
        yield TaggedOutput(
            DEAD_LETTER_TAG,
            make_dead_letter(
                self._payload(event),
                reason=reason,
                error=error,
                step=STEP,
                failed_at=now,
                key=str(sensor_id).encode("utf-8"),
            ),
        )

    @on_timer(EXPIRY)
    def expire(
        self,
        fired_at=beam.DoFn.TimestampParam,
        seen_state=SEEN_PARAM,
        expiry_at=EXPIRY_AT_PARAM,
        expiry=EXPIRY_PARAM,
    ) -> None:
        horizon_ms = fired_at.micros // 1000 - self.ttl_ms
        seen = SeenTable((key, v) for key, v in SeenTable.of(seen_state.read()).items() if key[1] > horizon_ms)
        if not seen:
            seen_state.clear()
            expiry_at.clear()
            return
        seen_state.write(seen)
        # Re-arm at the newest entry's expiry, not the oldest's: a timer cannot tell how far the watermark
        # has gone, and in batch (watermark at +inf) one more firing then clears everything instead of one
        # firing per event time. An event time is so forgotten between ttl_s and about 2 x ttl_s after it.
        due = max(t for _, t in seen) + self.ttl_ms
        expiry.set(Timestamp(micros=due * 1000))
        expiry_at.write(due)

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

    Input: TrafficEvent dicts with event-time timestamps (the ``valid`` output
    of :class:`~transforms.validate.ValidateEvents`). Output elements keep
    their timestamps and are in the global window. The dead letter's payload
    is the repeated event in the ``traffic_event`` wire format.
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
            | "KeyByShard" >> beam.Map(_by_shard).with_output_types(tuple[int, dict[str, Any]])
            | "KeepFirst"
            >> beam.ParDo(_FirstWinsFn(self.ttl_s, self.now_ms_fn, self.registry_url)).with_outputs(
                DEAD_LETTER_TAG, main=VALID_TAG
            )
        )
