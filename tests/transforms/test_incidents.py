"""TrackIncidents: the same composite in batch (Create, any order) and streaming (TestStream) gives the
incidents that the pure lifecycle rules give for a real METR-LA congestion episode; the DoFn alone (in-memory
state) takes a complete first step at once and leaves an incomplete one to its timer."""

from __future__ import annotations

import random

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from incident_episode import HORIZONS, LINKS, SENSORS, STEP_MS, STEPS, T0_MS, episode, prediction_dicts, snapshots
from test_history import _State, _Timer
from test_incident_rules import run_steps

from transforms.incident_rules import IncidentRules
from transforms.incidents import TrackIncidents, _IncidentsFn

OBSERVED, PREDICTED = episode()


def expected() -> list[dict]:
    records = run_steps(OBSERVED, PREDICTED)
    for r in records:
        r["model_version"] = "oracle-test"
    return records


def _canonical(record: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in record.items()))


def _track(p: beam.Pipeline, snaps, preds) -> beam.PCollection:
    return {"snapshots": snaps, "predictions": preds} | TrackIncidents(SENSORS, LINKS, HORIZONS, step_s=300)


def test_batch_in_any_order_gives_the_incidents_of_the_rules() -> None:
    want = expected()
    assert len({r["incident_id"] for r in want}) == 1 and len(want) > 10
    preds = [p for t in range(STEPS) for p in prediction_dicts(PREDICTED, t)]
    snaps = snapshots(OBSERVED)
    random.Random(7).shuffle(preds)
    random.Random(8).shuffle(snaps)
    with TestPipeline() as p:
        s = p | "Snaps" >> beam.Create(snaps) | "StampS" >> beam.Map(
            lambda x: TimestampedValue(x, (x["step_ms"] + STEP_MS - 1) / 1000))
        q = p | "Preds" >> beam.Create(preds) | "StampP" >> beam.Map(
            lambda x: TimestampedValue(x, x["event_time"] / 1000))
        out = _track(p, s, q) | "Canon" >> beam.Map(_canonical)
        assert_that(out, equal_to([_canonical(r) for r in want]))


def test_streaming_step_by_step_gives_the_same_incidents_as_batch() -> None:
    want = expected()
    snaps = snapshots(OBSERVED)
    stream = test_stream.TestStream()
    stream.advance_watermark_to(T0_MS / 1000)
    for t in range(STEPS):
        step_ms = T0_MS + t * STEP_MS
        stream.add_elements([TimestampedValue(("s", snaps[t]), (step_ms + STEP_MS - 1) / 1000)])
        stream.add_elements([TimestampedValue(("p", p), step_ms / 1000) for p in prediction_dicts(PREDICTED, t)])
        stream.advance_watermark_to((step_ms + 1) / 1000)  # the step is complete before the watermark passes it
    stream.advance_watermark_to_infinity()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        tagged = p | stream
        s = tagged | "OnlySnaps" >> beam.Filter(lambda x: x[0] == "s") | "S" >> beam.Map(lambda x: x[1])
        q = tagged | "OnlyPreds" >> beam.Filter(lambda x: x[0] == "p") | "P" >> beam.Map(lambda x: x[1])
        out = _track(p, s, q)
        assert_that(out | "Canon" >> beam.Map(_canonical), equal_to([_canonical(r) for r in want]))
        # streaming emits each step once its inputs are complete: the record's timestamp is its step's end
        stamps = out | "Stamps" >> beam.Map(
            lambda r, ts=beam.DoFn.TimestampParam: (r["updated_at"], int(ts.micros // 1000)))
        assert_that(stamps, equal_to([(r["updated_at"], r["updated_at"] + STEP_MS - 1) for r in want]),
                    label="StampedAtStepEnd")


def test_missing_predictions_and_unknown_sensors_are_counted_not_fatal() -> None:
    preds = prediction_dicts(PREDICTED, 30) + [dict(prediction_dicts(PREDICTED, 30)[0], sensor_id="nope")]
    with TestPipeline() as p:
        s = p | "Snaps" >> beam.Create([snapshots(OBSERVED)[30], snapshots(OBSERVED)[31]])
        q = p | "Preds" >> beam.Create(preds)
        out = _track(p, s, q) | "Ids" >> beam.Map(lambda r: (r["updated_at"], len(r["sensor_ids"]) > 0))
        # step 30 alone (31 has no predictions): an incident that has not lasted open_steps is not announced
        assert_that(out, equal_to([]))
    assert not np.isnan(PREDICTED).any()



def _tracker(ordered: bool = True):
    """The DoFn alone, with in-memory state: feed(kind, step) -> the records it yields at once."""
    fn = _IncidentsFn(SENSORS, LINKS, HORIZONS, IncidentRules(), 300, ordered=ordered)
    pending, open_, last, timer_at, flush = _State(), _State(), _State(), _State(), _Timer()
    cells = (np.repeat(np.asarray(SENSORS), len(HORIZONS)), np.tile(np.asarray(HORIZONS), len(SENSORS)))

    def feed(kind: str, t: int) -> list:
        step_ms = T0_MS + t * STEP_MS
        x = (("obs", step_ms, OBSERVED[t], "") if kind == "obs"
             else ("pred", step_ms, (*cells, PREDICTED[t].T.ravel()), "oracle-test"))
        return list(fn.process(("network", x), pending, open_, last, timer_at, flush))

    def fire() -> list:
        return list(fn.on_flush(flush.at, pending, open_, last, timer_at, flush))

    return feed, fire, last, flush


def test_the_first_step_is_tracked_as_soon_as_its_inputs_are_complete() -> None:
    feed, _, last, _ = _tracker()
    feed("obs", 0)
    assert last.value is None  # predictions missing: it waits
    feed("pred", 0)
    assert last.value == T0_MS  # complete, and no earlier step has input: tracked before its timer
    feed("obs", 1)
    feed("pred", 1)
    assert last.value == T0_MS + STEP_MS


def test_a_first_step_that_is_not_complete_waits_for_its_timer_even_behind_a_complete_one() -> None:
    feed, fire, last, flush = _tracker()
    feed("obs", 0)  # step 0 has no predictions yet
    feed("obs", 1)
    feed("pred", 1)  # step 1 complete, but not the first
    assert last.value is None and flush.at == Timestamp(micros=(T0_MS + STEP_MS) * 1000)
    fire()  # step 0 is due; step 1 is complete and next
    assert last.value == T0_MS + STEP_MS


def test_on_a_bounded_input_a_complete_first_step_waits_for_its_timer() -> None:
    """A bounded input comes in any order: the first complete step read may not be the data's first."""
    feed, fire, last, flush = _tracker(ordered=False)
    feed("obs", 1)
    feed("pred", 1)
    assert last.value is None and flush.at == Timestamp(micros=(T0_MS + 2 * STEP_MS) * 1000)
    feed("obs", 0)
    fire()
    assert last.value == T0_MS + STEP_MS  # both steps, in order, on the timer
