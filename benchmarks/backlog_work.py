"""When a backlog's whole work is out, for the streaming benchmark: not only its last step's predictions.

The job scores a target, and writes an hour's Parquet files, when the watermark passes them (event-time
timers); the reference loop does both inline, before the step that closes them is predicted. Timed to the last
prediction alone, a job whose watermark stayed behind until the backlog was read did that work after the clock
stopped, and one whose watermark moved during the drain did it inside. :func:`all_work_done_s` stops the clock
for both at the latest of: the last step's predictions, the last score of a target up to two steps before that
step (every prediction for it scored once, SCORED or MISSING), and the last file of an hour closed by then.
Two steps before, because the job's watermark passes the last window only when the next step's readings come
(that window's ON_TIME panes, and the timers of targets without an observation, wait for it), while the loop
closes a window once its step is complete. Incidents are not waited for (one small record a step).
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.stream_watch import Arrivals, score_progress
from ml.dataset import STEP_MS
from ml.features import HORIZONS_MIN
from transforms.publish import file_window

__all__ = ["SETTLED_BEHIND_STEPS", "all_work_done_s", "files_done_s", "scores_done_s", "work_timeline"]

# The targets and file windows waited for end this many steps before the backlog's last (see the module doc).
SETTLED_BEHIND_STEPS = 2


def _marks(last_step_ms: int, file_window_ms: int) -> tuple[int, int]:
    """(the last target waited for, the end of the last file window waited for): see the module doc."""
    through = last_step_ms - SETTLED_BEHIND_STEPS * STEP_MS
    return through, through - through % file_window_ms


def _file_times(directory: str, through_ms: int) -> list[float]:
    """When each first-pane file under ``directory`` of a window ending by ``through_ms`` was written."""
    return [path.stat().st_mtime for path in Path(directory).rglob("*.parquet")
            if (window := file_window(path.name)) is not None and window[2] == 0 and window[1] <= through_ms]


def files_done_s(directory: str, through_ms: int) -> tuple[int, float | None]:
    """The first-pane files under ``directory`` of windows ending by ``through_ms``: (how many, when the last was
    written: its modification time, None for none)."""
    times = _file_times(directory, through_ms)
    return len(times), max(times, default=None)


def scores_done_s(arrivals: Arrivals, through_ms: int) -> float | None:
    """When the last score of a target up to ``through_ms`` arrived, once every prediction for those targets has
    its score (each is scored once, SCORED or MISSING); None while some are still to come."""
    progress = score_progress(arrivals, through_ms, HORIZONS_MIN)
    if not progress or any(got < n for n, got, _ in progress.values()):
        return None
    return max(at for _, _, at in progress.values())


def _settled_files(directory: str, through_ms: int, timeout_s: float, quiet_s: float = 3.0) -> float | None:
    """:func:`files_done_s` once their number has held for ``quiet_s`` (the times are the writes' own)."""
    deadline = time.monotonic() + timeout_s
    count, last = files_done_s(directory, through_ms)
    still_since = time.monotonic()
    while time.monotonic() - still_since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.2)
        now_count, now_last = files_done_s(directory, through_ms)
        if now_count != count:
            count, last, still_since = now_count, now_last, time.monotonic()
    return last


def all_work_done_s(arrivals: Arrivals, last_step_ms: int, out_dir: str | None, file_window_ms: int,
                    scores: bool, timeout_s: float = 30.0) -> float | None:
    """The end of a backlog's work (see the module doc), as the broker or the file system stamped it; None (and
    the targets still short printed) when its scores were not all out within ``timeout_s`` of the call."""
    end = arrivals.complete_s[last_step_ms]
    through, files_through = _marks(last_step_ms, file_window_ms)
    if scores:
        deadline = time.monotonic() + timeout_s
        while (done := scores_done_s(arrivals, through)) is None:
            if time.monotonic() > deadline:
                short = {t: (n, got) for t, (n, got, _) in score_progress(arrivals, through, HORIZONS_MIN).items()
                         if got < n}
                print("scores not all out: " + ", ".join(f"{(t - last_step_ms) // 60_000:+d} min {got}/{n}"
                                                       for t, (n, got) in sorted(short.items())), flush=True)
                return None
            time.sleep(0.1)
        end = max(end, done)
    if out_dir is not None:
        files = _settled_files(out_dir, files_through, timeout_s)
        end = end if files is None else max(end, files)
    return end


def _deciles(times: list[float], origin: float) -> list[float] | None:
    """The 10th, 50th and 90th percentile (nearest rank) of ``times`` - ``origin``, None for no times."""
    ordered = sorted(times)
    return [round(ordered[min(len(ordered) - 1, len(ordered) * q // 10)] - origin, 2) for q in (1, 5, 9)] \
        if ordered else None


def work_timeline(arrivals: Arrivals, last_step_ms: int, out_dir: str | None,
                  file_window_ms: int) -> dict[str, list[float] | None]:
    """When a backlog's work came out, in seconds after the first validated event: the 10th, 50th and 90th
    percentile of the steps' last predictions, of the targets' last scores and of the closed hours' files (the
    work :func:`all_work_done_s` waits for). A job that forecast, scored and wrote files as it read shows them
    spread over the drain; one whose watermark reached a stage late shows that stage's work at the end."""
    through, files_through = _marks(last_step_ms, file_window_ms)
    origin = arrivals.first_event_s
    scored = [at for n, got, at in score_progress(arrivals, through, HORIZONS_MIN).values() if got >= n]
    files = _file_times(out_dir, files_through) if out_dir is not None else []
    return {"predictions": _deciles(list(arrivals.complete_s.values()), origin),
            "scores": _deciles(scored, origin), "files": _deciles(files, origin)}
