"""benchmarks/backlog_work.py and the watcher's score counts: when a backlog's whole work is out."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.backlog_work import (  # noqa: E402
    SETTLED_BEHIND_STEPS,
    all_work_done_s,
    files_done_s,
    scores_done_s,
    work_timeline,
)
from benchmarks.stream_watch import Arrivals, predicted_per_target, score_progress  # noqa: E402
from ml.dataset import STEP_MS  # noqa: E402
from ml.features import HORIZONS_MIN  # noqa: E402
from transforms.publish import window_file_name  # noqa: E402

HOUR = 3_600_000
T0 = 1_338_508_800_000  # 2012-06-01 00:00 UTC
HORIZONS = HORIZONS_MIN  # what the benchmark waits for
SENSORS = 2


def _arrivals(steps: int) -> Arrivals:
    arrivals = Arrivals(expected_per_step=SENSORS * len(HORIZONS), sensors=SENSORS, first_event_s=100.0)
    arrivals.complete_s = {T0 + k * STEP_MS: 101.0 + k for k in range(steps)}
    return arrivals


def test_predictions_per_target_count_every_sensor_of_every_complete_step() -> None:
    counts = predicted_per_target(_arrivals(4), HORIZONS)
    assert counts[T0 + 15 * 60_000] == SENSORS  # step 0's 15-minute predictions
    assert counts[T0 + 30 * 60_000] == 2 * SENSORS  # step 3's 15-minute and step 0's 30-minute ones
    assert counts[T0 + 60 * 60_000] == SENSORS  # step 0's 60-minute ones
    assert sum(counts.values()) == 4 * SENSORS * len(HORIZONS)


def test_scores_are_done_once_every_prediction_of_every_target_up_to_the_mark_is_scored() -> None:
    arrivals = _arrivals(12)
    through = T0 + 11 * STEP_MS
    wanted = {t: n for t, n in predicted_per_target(arrivals, HORIZONS).items() if t <= through}
    arrivals.scored = {t: [n, 200.0 + i] for i, (t, n) in enumerate(sorted(wanted.items()))}
    last = max(at for _, at in arrivals.scored.values())
    assert scores_done_s(arrivals, through) == last
    assert all(got == n for n, got, _ in score_progress(arrivals, through, HORIZONS).values())
    first = min(wanted)
    arrivals.scored[first] = [wanted[first] - 1, 150.0]  # one score still to come
    assert scores_done_s(arrivals, through) is None
    assert score_progress(arrivals, through, HORIZONS)[first] == (wanted[first], wanted[first] - 1, 150.0)
    arrivals.scored[T0 + 30 * HOUR] = [1, 900.0]  # a target after the mark: not waited for, not counted
    arrivals.scored[first] = [wanted[first], 150.0]
    assert scores_done_s(arrivals, through) == last
    assert scores_done_s(_arrivals(0), through) is None  # nothing predicted: nothing to wait for yet


def test_files_of_windows_closed_by_the_mark_give_their_last_write(tmp_path: Path) -> None:
    for hour, written in ((0, 1000.0), (1, 1300.0), (2, 5000.0)):
        name = window_file_name("part", T0 + hour * HOUR, T0 + (hour + 1) * HOUR, 0)
        path = tmp_path / "predictions" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (written, written))
    later_pane = tmp_path / "predictions" / window_file_name("part", T0, T0 + HOUR, 1)
    later_pane.write_bytes(b"x")  # a later pane: not the window's first file
    assert files_done_s(str(tmp_path), T0 + 2 * HOUR) == (2, 1300.0)
    assert files_done_s(str(tmp_path), T0 + HOUR - 1) == (0, None)


def test_the_clock_stops_at_the_latest_of_predictions_scores_and_files(tmp_path: Path) -> None:
    steps = 24
    arrivals = _arrivals(steps)
    last_step = T0 + (steps - 1) * STEP_MS
    through = last_step - SETTLED_BEHIND_STEPS * STEP_MS
    wanted = {t: n for t, n in predicted_per_target(arrivals, HORIZONS).items() if t <= through}
    arrivals.scored = {t: [n, 130.0] for t, n in wanted.items()}
    predictions_done = arrivals.complete_s[last_step]
    assert all_work_done_s(arrivals, last_step, None, HOUR, scores=True, timeout_s=1) == 130.0
    arrivals.scored = {t: [n, 110.0] for t, n in wanted.items()}
    assert all_work_done_s(arrivals, last_step, None, HOUR, scores=True, timeout_s=1) == predictions_done
    path = tmp_path / window_file_name("part", T0, T0 + HOUR, 0)
    path.write_bytes(b"x")
    os.utime(path, (140.0, 140.0))
    assert all_work_done_s(arrivals, last_step, str(tmp_path), HOUR, scores=True, timeout_s=1) == 140.0
    arrivals.scored.pop(min(wanted))
    assert all_work_done_s(arrivals, last_step, None, HOUR, scores=True, timeout_s=0.3) is None


def test_the_timeline_gives_when_each_kind_of_work_came_out_after_the_first_event(tmp_path: Path) -> None:
    steps = 24
    arrivals = _arrivals(steps)  # step k's predictions complete at 101 + k: 1 to 24 s after the first event
    last_step = T0 + (steps - 1) * STEP_MS
    through = last_step - SETTLED_BEHIND_STEPS * STEP_MS
    wanted = sorted(t for t in predicted_per_target(arrivals, HORIZONS) if t <= through)
    arrivals.scored = {t: [predicted_per_target(arrivals, HORIZONS)[t], 200.0 + i] for i, t in enumerate(wanted)}
    arrivals.scored[wanted[-1]][0] -= 1  # a target still short of a score: not counted
    for hour, written in ((0, 300.0), (1, 310.0)):  # the second hour ends after the mark: not counted
        path = tmp_path / window_file_name("part", T0 + hour * HOUR, T0 + (hour + 1) * HOUR, 0)
        path.write_bytes(b"x")
        os.utime(path, (written, written))
    timeline = work_timeline(arrivals, last_step, str(tmp_path), HOUR)
    assert timeline["predictions"] == [3.0, 13.0, 22.0]  # nearest rank of 24 values: the 3rd, 13th and 22nd
    n = len(wanted) - 1
    assert timeline["scores"] == [100.0 + n // 10, 100.0 + n // 2, 100.0 + 9 * n // 10]
    assert timeline["files"] == [200.0, 200.0, 200.0]
    assert work_timeline(_arrivals(0), last_step, None, HOUR) == {"predictions": None, "scores": None, "files": None}
