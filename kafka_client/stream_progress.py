"""Is the streaming job behind, and does it make progress? A pure verdict over samples of its topics' ends.

The definitions (docs/faults.md, "A stalled job is reported"):

* **behind**: raw records wait that are newer than every validated event
  (``unprocessed_records`` above 0 and the newest raw record's event time
  after the newest valid event's), or the newest raw record's event time is
  more than ``behind_after_s`` ahead of the newest prediction's
  ``event_time``. Event times guard the count: a job started at ``latest``
  over older raw records is not behind for those, and a job that has
  validated everything but has no prediction yet (the first hour of history
  a fresh network needs) is not behind either; a caught-up job waiting for
  the next step is not behind at all (idle is not stalled).
* **progress**: any of the job's output topics (valid events, dead letters,
  predictions) grew. Validated events and dead letters flow record by record,
  so a job working a backlog off slowly shows progress between the bursts of
  predictions that a passing watermark releases.
* **stalled**: behind without progress for ``stall_after_s`` or longer,
  counted from the first sample of the current run of samples that are all
  behind with the same output ends as the newest one. End offsets only grow, so
  two samples with equal ends prove there was no output between them however
  far apart they were taken (the command line's samples are minutes apart, the
  API's seconds).

``unprocessed_records`` is raw records minus valid events minus dead letters:
dead letters of unusable predictions and repeats read after a restore make it
an underestimate, so the prediction clause above does not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["StreamSample", "StreamVerdict", "is_behind", "judge", "trim"]

State = Literal["no_input", "caught_up", "behind", "stalled"]


@dataclass(frozen=True)
class StreamSample:
    """The ends of the streaming job's topics at one moment (wall clock ``at_s``, epoch s)."""

    at_s: float
    input_records: int  # raw records ever written (sum of the raw topic's end offsets; 0 when it does not exist)
    output_ends: tuple[int, ...]  # end offsets summed per output topic: events, dead letters, predictions
    newest_input_ms: int | None  # timestamp (event time) of the newest raw record; None when there is none
    newest_output_ms: int | None  # event_time of the newest prediction; None when there is none
    newest_event_ms: int | None = None  # event_time of the newest valid event; None when there is none

    @property
    def unprocessed_records(self) -> int:
        """Raw records not yet validated or dead-lettered (an underestimate, see the module doc)."""
        return max(0, self.input_records - sum(self.output_ends[:2]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamSample:
        return cls(float(data["at_s"]), int(data["input_records"]), tuple(int(v) for v in data["output_ends"]),
                   data["newest_input_ms"], data["newest_output_ms"], data.get("newest_event_ms"))


@dataclass(frozen=True)
class StreamVerdict:
    """What :func:`judge` concluded from the newest sample and the ones before it."""

    state: State
    unprocessed_records: int
    behind_s: float | None  # event time the newest prediction trails the newest raw record by (None: either is missing)
    newest_input_ms: int | None
    newest_event_ms: int | None
    newest_prediction_ms: int | None
    no_progress_s: float  # how long the job has been behind with unchanged output ends (0 when not behind)
    behind_after_s: float
    stall_after_s: float

    @property
    def ok(self) -> bool:
        return self.state != "stalled"

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}

    def describe(self) -> str:
        """One line for people: the state and the figures behind it."""
        if self.state == "no_input":
            return "no input yet"
        trail = "no prediction yet" if self.behind_s is None else \
            f"predictions {self.behind_s:,.0f} s of event time behind the input"
        figures = f"{self.unprocessed_records:,} raw records not validated, {trail}"
        if self.state == "stalled":
            return (f"STALLED: behind with no new output for {self.no_progress_s:,.0f} s "
                    f"(limit {self.stall_after_s:,.0f} s); {figures}")
        if self.state == "behind":
            quiet = f", no new output for {self.no_progress_s:,.0f} s" if self.no_progress_s > 0 else ""
            return f"behind{quiet}; {figures}"
        return f"caught up; {figures}"


def _behind_by_s(sample: StreamSample) -> float | None:
    """Event time the newest prediction trails the newest raw record by (None: no input or no prediction)."""
    if sample.newest_input_ms is None or sample.newest_output_ms is None:
        return None
    return (sample.newest_input_ms - sample.newest_output_ms) / 1000.0


def _unvalidated(sample: StreamSample) -> bool:
    """Raw records wait, and the newest of them is newer than every valid event (so the reader has not got there)."""
    return sample.unprocessed_records > 0 and sample.newest_input_ms is not None and (
        sample.newest_event_ms is None or sample.newest_input_ms > sample.newest_event_ms)


def is_behind(sample: StreamSample, behind_after_s: float) -> bool:
    """Unvalidated raw records newer than any valid event, or predictions more than ``behind_after_s`` behind."""
    gap = _behind_by_s(sample)
    return _unvalidated(sample) or (gap is not None and gap > behind_after_s)


def _run_start(samples: Sequence[StreamSample], behind_after_s: float) -> int:
    """Index of the first sample of the trailing run that is all behind with the newest sample's output ends."""
    last = samples[-1]
    start = len(samples) - 1
    for i in range(len(samples) - 1, -1, -1):
        sample = samples[i]
        if not is_behind(sample, behind_after_s) or sample.output_ends != last.output_ends:
            break
        start = i
    return start


def judge(samples: Sequence[StreamSample], behind_after_s: float, stall_after_s: float) -> StreamVerdict:
    """The verdict on the newest of ``samples`` (oldest first); a single sample is never stalled."""
    if not samples:
        raise ValueError("judge needs at least one sample")
    last = samples[-1]
    gap = _behind_by_s(last)
    no_progress_s = 0.0
    if last.newest_input_ms is None:
        state: State = "no_input"
    elif not is_behind(last, behind_after_s):
        state = "caught_up"
    else:
        no_progress_s = max(0.0, last.at_s - samples[_run_start(samples, behind_after_s)].at_s)
        state = "stalled" if no_progress_s >= stall_after_s else "behind"
    return StreamVerdict(state, last.unprocessed_records, gap, last.newest_input_ms, last.newest_event_ms,
                         last.newest_output_ms, round(no_progress_s, 1), behind_after_s, stall_after_s)


def trim(samples: Sequence[StreamSample], behind_after_s: float, keep: int) -> list[StreamSample]:
    """At most ``keep`` (>= 2) samples that give the same verdict: the current run's first one and the newest."""
    if not samples:
        return []
    start = _run_start(samples, behind_after_s)
    run = list(samples[start:])
    if len(run) <= keep:
        return run
    return [run[0], *run[len(run) - keep + 1:]]
