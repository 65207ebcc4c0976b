"""kafka_client/stream_progress.py: the stalled/behind/caught-up verdict over samples (pure, no broker)."""

from __future__ import annotations

import json

import pytest

from kafka_client.stream_progress import StreamSample, StreamVerdict, is_behind, judge, trim

BEHIND_S, STALL_S = 900.0, 120.0
T0_MS = 1_330_000_000_000  # an event time in the data's range (2012)


def sample(at_s: float, raw: int, outputs: tuple[int, int, int], newest_in_s: float | None,
           newest_out_s: float | None, newest_event_s: float | None = None) -> StreamSample:
    """A sample at wall clock ``at_s``; ``outputs``: events, dead letters, predictions; event times as seconds
    after T0 (newest raw record, prediction, valid event; None: no such record)."""
    def ms(s: float | None) -> int | None:
        return None if s is None else T0_MS + int(s * 1000)
    return StreamSample(at_s, raw, outputs, ms(newest_in_s), ms(newest_out_s), ms(newest_event_s))


def verdict(samples: list[StreamSample]) -> StreamVerdict:
    return judge(samples, BEHIND_S, STALL_S)


def test_no_raw_record_is_no_input_and_fine() -> None:
    result = verdict([sample(0, 0, (0, 0, 0), None, None), sample(600, 0, (0, 0, 0), None, None)])
    assert result.state == "no_input" and result.ok and result.behind_s is None and result.no_progress_s == 0


def test_raw_records_without_any_prediction_are_behind_and_stall_after_the_period() -> None:
    first = sample(1000, 5000, (0, 0, 0), 3600, None)
    assert is_behind(first, BEHIND_S)
    assert verdict([first]).state == "behind"  # one sample: never stalled
    later = sample(1000 + STALL_S - 1, 5000, (0, 0, 0), 3600, None)
    assert verdict([first, later]).state == "behind" and verdict([first, later]).no_progress_s == STALL_S - 1
    stalled = verdict([first, later, sample(1000 + STALL_S, 5000, (0, 0, 0), 3600, None)])
    assert stalled.state == "stalled" and not stalled.ok
    assert stalled.no_progress_s == STALL_S and stalled.unprocessed_records == 5000 and stalled.behind_s is None


def test_caught_up_and_idle_is_never_stalled() -> None:
    """No new input for an hour, the output ends still: the newest prediction is within the tolerance."""
    samples = [sample(at, 10_000, (9_700, 300, 2_000), 7200, 7200 - 300) for at in range(0, 3600, 60)]
    result = verdict(samples)
    assert result.state == "caught_up" and result.ok and result.behind_s == 300 and result.no_progress_s == 0


def test_a_backlog_worked_off_slowly_but_steadily_is_behind_not_stalled() -> None:
    """Far behind for an hour, but the events topic grows a little between every two samples (60 s apart)."""
    samples = [sample(at, 3_000_000, (1_000_000 + at, 0, 50_000), 86_400 * 57, 3600) for at in range(0, 3600, 60)]
    result = verdict(samples)
    assert result.state == "behind" and result.ok
    assert result.no_progress_s == 0 and result.unprocessed_records == 3_000_000 - 1_000_000 - 3540


def test_predictions_alone_moving_count_as_progress() -> None:
    samples = [sample(at, 3_000_000, (2_000_000, 100, 50_000 + at), 86_400 * 57, 3600) for at in range(0, 600, 60)]
    assert verdict(samples).state == "behind"


def test_run_4_the_stall_of_the_overload_test() -> None:
    """Working the backlog off until t = 695 s, then no output for 490 s with 2,168,899 records not validated."""
    moving = [sample(at, 3_491_978, (1_303_079 - (695 - at) * 1310, 20_000, 700_000 + at), 86_400 * 57,
                     86_400 * 10) for at in range(355, 705, 10)]  # 1,310 records/s validated
    frozen_ends = moving[-1].output_ends  # as of t = 695
    still = [sample(at, 3_491_978, frozen_ends, 86_400 * 57, 86_400 * 10) for at in range(705, 1195, 10)]
    seen = [verdict(moving + still[: i + 1]) for i in range(len(still))]
    assert [v.state for v in seen] == ["behind"] * 11 + ["stalled"] * (len(still) - 11)  # from t = 815 s
    assert seen[10].no_progress_s == 110 and seen[11].no_progress_s == 120
    assert seen[-1].no_progress_s == 490
    assert seen[-1].unprocessed_records == 2_168_899


def test_the_clock_starts_when_the_job_fell_behind_not_at_its_last_output() -> None:
    """Caught up and idle for an hour, then input arrives and nothing follows: stalled only STALL_S after that."""
    idle = [sample(at, 1000, (1000, 0, 621), 3600, 3600) for at in range(0, 3600, 60)]
    behind = [sample(at, 50_000, (1000, 0, 621), 3600 + 86_400, 3600) for at in (3660, 3700, 3780)]
    assert verdict(idle + behind[:2]).state == "behind" and verdict(idle + behind[:2]).no_progress_s == 40
    assert verdict(idle + behind).state == "stalled" and verdict(idle + behind).no_progress_s == 120


def test_samples_minutes_apart_with_the_same_ends_prove_a_stall() -> None:
    """`traffic platform status` samples only when called: equal end offsets mean no output in between."""
    result = verdict([sample(0, 9000, (10, 0, 0), 7200, 0), sample(600, 9000, (10, 0, 0), 7200, 0)])
    assert result.state == "stalled" and result.no_progress_s == 600


def test_new_output_clears_a_stall() -> None:
    stalled = [sample(0, 9000, (10, 0, 0), 7200, None), sample(300, 9000, (10, 0, 0), 7200, None)]
    assert verdict(stalled).state == "stalled"
    assert verdict([*stalled, sample(310, 9000, (9000, 0, 621), 7200, 7200 - 600, 7200)]).state == "caught_up"
    still_behind = verdict([*stalled, sample(310, 9000, (20, 0, 0), 7200, None)])
    assert still_behind.state == "behind" and still_behind.no_progress_s == 0


def test_validated_with_no_prediction_yet_is_not_behind() -> None:
    """A fresh network's first hour: every reading validated, no prediction before 12 steps of history exist;
    live input comes every 300 s (longer than the stall period) and the job keeps up."""
    samples = [sample(at, 207 * (at // 300 + 1), (207 * (at // 300 + 1), 0, 0), 300 * (at // 300), None,
                      300 * (at // 300)) for at in range(0, 3300, 30)]
    result = verdict(samples)
    assert result.state == "caught_up" and result.ok and result.behind_s is None
    assert result.describe() == "caught up; 0 raw records not validated, no prediction yet"


def test_old_raw_records_the_job_never_reads_are_not_behind() -> None:
    """Started at `latest` over 50,000 older raw records: they stay unread, but nothing newer waits."""
    samples = [sample(at, 50_000 + 207 * (at // 300 + 1), (207 * (at // 300 + 1), 0, 621 * (at // 300)),
                      86_400 + 300 * (at // 300), 86_400 + 300 * (at // 300 - 1), 86_400 + 300 * (at // 300))
               for at in range(0, 1800, 30)]
    result = verdict(samples)
    assert result.state == "caught_up" and result.unprocessed_records == 50_000


def test_all_validated_but_predictions_frozen_far_behind_is_a_stall() -> None:
    """The prediction stages stop while a backlog's readings are all validated (events stop growing too)."""
    frozen = [sample(at, 476_928, (476_928, 0, 1_000_000), 86_400 * 8, 86_400 * 4, 86_400 * 8)
              for at in range(0, 200, 20)]
    result = verdict(frozen)
    assert result.state == "stalled" and result.unprocessed_records == 0 and result.behind_s == 86_400 * 4
    assert result.newest_event_ms == result.newest_input_ms


def test_trim_keeps_the_first_sample_of_the_run_and_the_newest() -> None:
    samples = [sample(at, 9000, (10, 0, 0), 7200, None) for at in range(100)]
    kept = trim(samples, BEHIND_S, keep=4)
    assert [s.at_s for s in kept] == [0, 97, 98, 99]
    assert verdict(kept) == verdict(samples)
    caught_up = [*samples, sample(100, 9000, (9000, 0, 621), 7200, 7200)]
    assert trim(caught_up, BEHIND_S, keep=4) == [caught_up[-1]]


def test_a_sample_round_trips_through_json_and_the_verdict_describes_itself() -> None:
    one = sample(5, 9000, (10, 2, 0), 7200, None)
    assert StreamSample.from_dict(json.loads(json.dumps(one.to_dict()))) == one
    early = verdict([sample(0, 9000, (10, 2, 0), 7200, None), one]).as_dict()
    assert early["ok"] is True and early["state"] == "behind" and early["no_progress_s"] == 5
    stalled = verdict([sample(0, 9000, (10, 2, 0), 7200, None), sample(200, 9000, (10, 2, 0), 7200, None)])
    assert stalled.describe() == ("STALLED: behind with no new output for 200 s (limit 120 s); 8,988 raw records "
                                  "not validated, no prediction yet")
    assert json.loads(json.dumps(stalled.as_dict()))["behind_s"] is None  # valid JSON: no infinity


def test_judge_needs_a_sample() -> None:
    with pytest.raises(ValueError):
        judge([], BEHIND_S, STALL_S)
