"""``traffic run``'s timeline: later runs continue after earlier ones by whole weeks."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from cli.run_cmd import WEEK_MS, _watermark_offsets, newest_event_time_ms, week_aligned_shift_ms
from kafka_client import producer_config
from ml.dataset import STEP_MS, TRAIN_END_MS
from pipelines.replay import replay
from schemas.codec import AvroCodec


class _ElectingConsumer:
    """Answers like a broker whose just-created partition has no leader yet, ``failures`` times."""

    def __init__(self, failures: int, code: int = KafkaError.NOT_LEADER_FOR_PARTITION) -> None:
        self.failures, self.code, self.calls = failures, code, 0

    def get_watermark_offsets(self, partition, timeout):
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(self.code))
        return 0, 42


def test_watermark_offsets_wait_out_a_leader_election() -> None:
    consumer = _ElectingConsumer(failures=2)
    assert _watermark_offsets(consumer, None, timeout_s=5) == (0, 42)
    assert consumer.calls == 3


def test_watermark_offsets_give_up_at_the_timeout_and_on_other_errors() -> None:
    with pytest.raises(KafkaException):
        _watermark_offsets(_ElectingConsumer(failures=10**6), None, timeout_s=0.5)
    other = _ElectingConsumer(failures=1, code=KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        _watermark_offsets(other, None, timeout_s=5)
    assert other.calls == 1


def test_no_shift_when_the_topic_is_empty_or_older() -> None:
    assert week_aligned_shift_ms(TRAIN_END_MS, None) == 0
    assert week_aligned_shift_ms(TRAIN_END_MS, TRAIN_END_MS - STEP_MS) == 0


@pytest.mark.parametrize("newest_offset_ms", [0, STEP_MS, WEEK_MS - 1, WEEK_MS, 3 * WEEK_MS + 7])
def test_shift_is_the_smallest_whole_number_of_weeks_past_the_newest(newest_offset_ms: int) -> None:
    shift = week_aligned_shift_ms(TRAIN_END_MS, TRAIN_END_MS + newest_offset_ms)
    assert shift % WEEK_MS == 0
    assert TRAIN_END_MS + shift > TRAIN_END_MS + newest_offset_ms  # strictly after what is there
    assert TRAIN_END_MS + shift - WEEK_MS <= TRAIN_END_MS + newest_offset_ms  # and no week more than needed


@pytest.mark.integration
def test_newest_event_time_is_read_from_the_raw_topic(kafka_bootstrap, fresh_topic) -> None:
    topic = fresh_topic("run-newest", partitions=3)
    assert newest_event_time_ms(kafka_bootstrap, topic) is None
    report = replay(None, producer_config(kafka_bootstrap), topic, speed=float("inf"), start_ms=TRAIN_END_MS,
                    end_ms=TRAIN_END_MS + 4 * STEP_MS, sensors=["773869", "717490"], inject_bad=0.2, seed=3,
                    progress=False)
    assert report.last_event_ms == TRAIN_END_MS + 3 * STEP_MS
    # a well-formed reading from the far future, as injected bad records are, must not move the timeline
    future = AvroCodec("raw_reading").encode({"sensor_id": "773869", "event_time": int(time.time() * 1000) + 86400_000,
                                              "speed_mph": 60.0})
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    try:
        for partition in range(3):
            producer.produce(topic, future, b"773869", partition=partition)
        assert producer.flush(30) == 0
    finally:
        producer.close()
    assert newest_event_time_ms(kafka_bootstrap, topic) == report.last_event_ms


class _Proc:
    """A background process double: alive for ``alive_checks`` pid() calls."""

    def __init__(self, name: str, alive_checks: int) -> None:
        self.name, self.alive_checks = name, alive_checks
        self.log_file = f"/logs/{name}.log"

    def pid(self):
        self.alive_checks -= 1
        return 1234 if self.alive_checks >= 0 else None

    def exit_reason(self) -> str:
        return "exited with code 2"


def test_the_watch_says_which_background_process_stopped() -> None:
    from cli.run_cmd import RunError, _Watch

    watch = _Watch([_Proc("api", 10**6), _Proc("stream", 3)], every_s=0.01)
    assert watch.died.wait(5)
    with pytest.raises(RunError, match=r"^stream stopped \(exited with code 2\); read /logs/stream.log$"):
        watch.check()


def test_the_watch_stays_quiet_while_everything_runs() -> None:
    from cli.run_cmd import _Watch

    watch = _Watch([_Proc("api", 10**6), _Proc("stream", 10**6)], every_s=0.01)
    assert not watch.died.wait(0.3)
    watch.check()  # nothing to report
    watch.died.set()  # ends the watch thread
