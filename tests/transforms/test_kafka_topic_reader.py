"""The topic-wide unbounded reader's restriction tracker and watermark rule (units).

On the real broker and runners it is exercised by tests/runners/test_pipelines_on_platform.py
and the streaming pipeline's tests.
"""

from __future__ import annotations

from transforms.kafka_topic_reader import (
    PartitionProgress,
    TopicRead,
    TopicRestriction,
    _TopicRestrictions,
    topic_watermark_ms,
)


def _tracker(starts=((0, 5), (1, 0))):
    provider = _TopicRestrictions()
    return provider.create_tracker(provider.initial_restriction(TopicRead("t", starts)))


def test_claims_advance_each_partition_and_reject_rereads() -> None:
    tracker = _tracker()
    assert tracker.try_claim((0, 5, 1_000))
    assert tracker.try_claim((1, 0, 2_000))
    assert not tracker.try_claim((0, 5, 1_000))  # already read
    assert not tracker.try_claim((0, 4, 900))  # before the start
    assert not tracker.try_claim((7, 0, 1))  # not a partition of this read
    assert tracker.try_claim((0, 9, 1_500))  # offsets may skip (compaction, transaction markers)


def test_checkpoint_carries_next_offsets_and_newest_times() -> None:
    tracker = _tracker()
    tracker.try_claim((0, 5, 1_000))
    tracker.try_claim((0, 6, 3_000))
    assert tracker.try_split(0.5) is None  # only self-checkpoints: a dynamic split has no meaning here
    primary, residual = tracker.try_split(0)
    assert residual == TopicRestriction((PartitionProgress(0, 7, 3_000), PartitionProgress(1, 0, None)))
    assert primary.done and not residual.done
    assert not tracker.try_claim((0, 7, 4_000))  # the primary is finished after a checkpoint
    tracker.check_done()


def test_unfinished_read_is_not_done() -> None:
    tracker = _tracker()
    try:
        tracker.check_done()
    except ValueError:
        return
    raise AssertionError("an unbounded read that did not checkpoint must not count as done")


def test_watermark_waits_for_every_partition_with_unread_records() -> None:
    # partition 1 has records but none read yet: nothing may be promised
    assert topic_watermark_ms({0: 5_000, 1: None}, {0: False, 1: False}) is None
    # both behind: the slower one holds the watermark
    assert topic_watermark_ms({0: 5_000, 1: 2_000}, {0: False, 1: False}) == 2_000
    # a caught-up partition holds nothing, even with older records
    assert topic_watermark_ms({0: 5_000, 1: 2_000}, {0: False, 1: True}) == 5_000


def test_watermark_when_everything_is_read() -> None:
    assert topic_watermark_ms({0: 5_000, 1: 7_000}, {0: True, 1: True}) == 7_000
    assert topic_watermark_ms({0: None, 1: None}, {0: True, 1: True}) is None  # an empty topic promises nothing
    assert topic_watermark_ms({0: None, 1: 4_000}, {0: True, 1: True}) == 4_000  # an empty partition never stalls
