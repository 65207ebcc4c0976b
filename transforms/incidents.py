"""``TrackIncidents``: network snapshots and predictions -> incident records (opened / updated / closed).

Input: ``{"snapshots": NetworkHistory output, "predictions": PostProcess
predictions}``, both for the same sensors (``sensor_ids``, in the snapshot's
column order). Output: ``incident`` records (schemas/avro/incident.avsc), one
per open incident per step, stamped at the end of their step. The lifecycle
rules are :mod:`transforms.incident_rules` (docs/incidents.md).

Steps are tracked in step order on one key (the whole network), with the same
emission rule as NetworkHistory, which makes batch and streaming agree:

* a step is taken as soon as its observation and every sensor x horizon
  prediction have arrived *and* the previous step has been taken, or, for the
  first step of an unbounded input, no earlier step has any input (the history
  emits a stream's steps in order; a bounded input comes in any order, and its
  first step waits for the timer);
* otherwise when the watermark passes the end of the step (event-time timer),
  with what has arrived (NaN for the rest).

In batch every timer fires after all input is read, so the output is a
function of the data alone. A step with no prediction at all is not tracked
(counted as ``steps_without_predictions``); input for a step already tracked is
counted as ``stale_inputs`` and ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.batches import Columns
from transforms.exceptions import TransformConfigError
from transforms.incident_rules import IncidentRules, OpenIncident, advance
from transforms.state_tables import StatefulFn

__all__ = ["TrackIncidents", "road_neighbours"]

STEP = "Incidents"
_KEY = "network"


def road_neighbours(sensor_ids: Sequence[str], links: Sequence[tuple[str, str]]) -> dict[int, tuple[int, ...]]:
    """Each sensor's neighbours on the road (links taken both ways), as column indices; links outside are ignored."""
    index = {s: i for i, s in enumerate(sensor_ids)}
    neighbours: dict[int, set[int]] = {}
    for a, b in links:
        if a in index and b in index:
            neighbours.setdefault(index[a], set()).add(index[b])
            neighbours.setdefault(index[b], set()).add(index[a])
    return {k: tuple(sorted(v)) for k, v in neighbours.items()}


def _observed(snapshot: dict[str, Any]) -> tuple[str, int, Any, str]:
    speeds = np.asarray(snapshot["speeds"], dtype=np.float64)
    return "obs", int(snapshot["step_ms"]), speeds[-1] if speeds.ndim == 2 else speeds, ""


def _predicted(predictions: Any) -> Iterator[tuple[str, int, Any, str]]:
    """A ``prediction`` batch (or one dict) -> per step: its (sensors, horizons, speeds) cells and model."""
    batch = predictions if isinstance(predictions, Columns) else Columns.from_records(
        "prediction", [predictions], ("sensor_id", "event_time", "horizon_min", "predicted_speed_mph",
                                      "model_version"), {"event_time": np.int64, "horizon_min": np.int64,
                                                         "predicted_speed_mph": np.float64})
    steps = batch["event_time"].astype(np.int64)
    for step_ms in np.unique(steps).tolist():
        part = batch.take(steps == step_ms)
        cells = (part["sensor_id"].astype(str), part["horizon_min"].astype(np.int64),
                 part["predicted_speed_mph"].astype(np.float64))
        model = max((str(m or "") for m in part["model_version"].tolist()), default="")
        yield "pred", int(step_ms), cells, model


class _IncidentsFn(StatefulFn):
    PENDING = ReadModifyWriteStateSpec("incident_pending_steps", PickleCoder())
    OPEN = ReadModifyWriteStateSpec("incident_open", PickleCoder())
    LAST = ReadModifyWriteStateSpec("incident_last_step_ms", PickleCoder())
    TIMER_AT = ReadModifyWriteStateSpec("incident_timer_at_ms", PickleCoder())
    FLUSH = TimerSpec("incident_flush", TimeDomain.WATERMARK)

    def __init__(self, sensor_ids: Sequence[str], links: Sequence[tuple[str, str]], horizons: Sequence[int],
                 rules: IncidentRules, step_s: int, ordered: bool = False) -> None:
        self.sensor_ids = tuple(sensor_ids)
        self.index = {s: i for i, s in enumerate(self.sensor_ids)}
        self.neighbours = road_neighbours(self.sensor_ids, links)
        self.horizons = tuple(int(h) for h in horizons)
        self.h_index = {h: k for k, h in enumerate(self.horizons)}
        self.rules = rules
        self.step_ms = int(step_s) * 1000
        self.ordered = ordered  # steps come in order (a stream): a complete first step may go before its timer
        self.steps = Metrics.counter(STEP, "steps_tracked")
        self.records = Metrics.counter(STEP, "incident_records")
        self.stale = Metrics.counter(STEP, "stale_inputs")
        self.unknown = Metrics.counter(STEP, "unknown_sensor_or_horizon")
        self.no_predictions = Metrics.counter(STEP, "steps_without_predictions")

    def _new_step(self) -> dict[str, Any]:
        n = len(self.sensor_ids)
        return {"obs": None, "pred": np.full((len(self.horizons), n), np.nan), "model": ""}

    def _complete(self, step: dict[str, Any]) -> bool:
        return step["obs"] is not None and bool(np.isfinite(step["pred"]).all())

    def process(self, element: tuple[str, tuple[str, int, Any, str]], pending=beam.DoFn.StateParam(PENDING),
                open_=beam.DoFn.StateParam(OPEN), last=beam.DoFn.StateParam(LAST),
                timer_at=beam.DoFn.StateParam(TIMER_AT), flush=beam.DoFn.TimerParam(FLUSH)) -> Iterator[Any]:
        _, (kind, step_ms, value, model) = element
        done = last.read()
        if done is not None and step_ms <= done:
            self.stale.inc()
            return
        table = pending.read() or {}
        step = table.setdefault(step_ms, self._new_step())
        if kind == "obs":
            step["obs"] = np.asarray(value, dtype=np.float64)
        else:
            sensors, horizons, speeds = value
            i = np.fromiter((self.index.get(s, -1) for s in sensors.tolist()), np.int64, len(sensors))
            k = np.fromiter((self.h_index.get(h, -1) for h in horizons.tolist()), np.int64, len(horizons))
            known = (i >= 0) & (k >= 0)
            if not known.all():
                self.unknown.inc(int((~known).sum()))
                if not known.any():
                    return
            step["pred"][k[known], i[known]] = speeds[known]
            step["model"] = max(step["model"], model)
        pending.write(table)
        due = timer_at.read()
        if due is None or step_ms + self.step_ms < due:
            flush.set(Timestamp(micros=(step_ms + self.step_ms) * 1000))
            timer_at.write(step_ms + self.step_ms)
        head = (min(table) if self.ordered else None) if done is None else done + self.step_ms
        if step_ms == head and self._complete(step):
            yield from self._advance(table, done, None, pending, open_, last, timer_at, flush)

    @on_timer(FLUSH)
    def on_flush(self, fired_at=beam.DoFn.TimestampParam, pending=beam.DoFn.StateParam(PENDING),
                 open_=beam.DoFn.StateParam(OPEN), last=beam.DoFn.StateParam(LAST),
                 timer_at=beam.DoFn.StateParam(TIMER_AT), flush=beam.DoFn.TimerParam(FLUSH)) -> Iterator[Any]:
        timer_at.clear()
        table = pending.read() or {}
        yield from self._advance(table, last.read(), fired_at.micros // 1000, pending, open_, last, timer_at, flush)

    def _advance(self, table, done, watermark_ms, pending, open_, last, timer_at, flush) -> Iterator[Any]:
        """Track pending steps in order while they are due (watermark) or complete and next (or first)."""
        incidents: list[OpenIncident] = open_.read() or []
        for step_ms in sorted(table):
            step = table[step_ms]
            due = watermark_ms is not None and step_ms + self.step_ms <= watermark_ms
            nxt = ((self.ordered if done is None else step_ms == done + self.step_ms)  # the first: the earliest
                   and self._complete(step))
            if not (due or nxt):
                break
            del table[step_ms]
            done = step_ms
            if not np.isfinite(step["pred"]).any():
                self.no_predictions.inc()
                continue
            observed = step["obs"] if step["obs"] is not None else np.full(len(self.sensor_ids), np.nan)
            records, incidents = advance(incidents, step_ms, observed, step["pred"], self.sensor_ids,
                                         self.horizons, self.neighbours, self.rules, step["model"])
            self.steps.inc()
            self.records.inc(len(records))
            stamp = Timestamp(micros=(step_ms + self.step_ms - 1) * 1000)
            for record in records:
                yield TimestampedValue(record, stamp)
        open_.write(incidents)
        pending.write(table)
        if done is not None:
            last.write(done)
        if table:
            # The newest pending step's end: in batch (watermark at +inf) one more firing flushes them all.
            due_ms = max(table) + self.step_ms
            flush.set(Timestamp(micros=due_ms * 1000))
            timer_at.write(due_ms)
        else:
            # Cleared, not left to fire for nothing (Prism holds later input behind a live timer, see history.py).
            flush.clear()
            timer_at.clear()


class TrackIncidents(beam.PTransform):
    """``{"snapshots", "predictions"}`` -> incident records, tracked over ``links`` (see the module doc)."""

    def __init__(self, sensor_ids: Sequence[str], links: Sequence[tuple[str, str]], horizons: Sequence[int],
                 rules: IncidentRules | None = None, step_s: int = 300, label: str | None = None) -> None:
        super().__init__(label)
        if not sensor_ids or not horizons or step_s <= 0:
            raise TransformConfigError("TrackIncidents needs sensor_ids, horizons and step_s > 0")
        self.sensor_ids = tuple(str(s) for s in sensor_ids)
        self.links = tuple((str(a), str(b)) for a, b in links)
        self.horizons = tuple(sorted(int(h) for h in horizons))
        self.rules = rules or IncidentRules()
        self.step_s = int(step_s)

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        ordered = not (inputs["snapshots"].is_bounded or inputs["predictions"].is_bounded)
        observed = inputs["snapshots"] | "ObservedSpeeds" >> beam.Map(_observed)
        predicted = inputs["predictions"] | "PredictedSpeeds" >> beam.FlatMap(_predicted)
        return (
            (observed, predicted)
            | "StepInputs" >> beam.Flatten()
            | "ToGlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyByNetwork" >> beam.Map(lambda x: (_KEY, x)).with_output_types(tuple[str, Any])
            | "TrackSteps" >> beam.ParDo(_IncidentsFn(self.sensor_ids, self.links, self.horizons, self.rules,
                                                      self.step_s, ordered=ordered))
        )
