"""Pane timings: their ranks, and an aggregate element without its EARLY rows, in and out of a pipeline."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.batches import Columns
from transforms.panes import TIMING_RANK, FinalPanes, timing_ranks, without_early_panes


def _panes(timings: list[str]) -> Columns:
    n = len(timings)
    return Columns("window_aggregate", {"sensor_id": np.array([f"s{i}" for i in range(n)]),
                                        "window_start": np.arange(n, dtype=np.int64) * 300_000,
                                        "mean_speed_mph": np.arange(n, dtype=np.float64),
                                        "pane_timing": np.array(timings, object)})


def test_early_rows_are_left_out_and_the_rest_kept_in_order() -> None:
    mixed = _panes(["EARLY", "ON_TIME", "EARLY", "LATE", "UNKNOWN"])
    kept = without_early_panes(mixed)
    assert kept["sensor_id"].tolist() == ["s1", "s3", "s4"]
    assert kept["pane_timing"].tolist() == ["ON_TIME", "LATE", "UNKNOWN"]
    final = _panes(["ON_TIME", "LATE"])
    assert without_early_panes(final) is final  # nothing to leave out: the same element
    assert without_early_panes(_panes(["EARLY", "EARLY"])) is None


def test_a_single_record_is_kept_or_dropped_by_its_timing() -> None:
    assert without_early_panes({"sensor_id": "a", "pane_timing": "EARLY"}) is None
    late = {"sensor_id": "a", "pane_timing": "LATE"}
    assert without_early_panes(late) is late


def test_final_panes_drops_elements_of_early_rows_only() -> None:
    elements = [_panes(["EARLY"]), _panes(["EARLY", "ON_TIME"]), {"sensor_id": "b", "pane_timing": "ON_TIME"},
                {"sensor_id": "c", "pane_timing": "EARLY"}]
    with TestPipeline() as p:
        out = (p | beam.Create(elements, reshuffle=False) | FinalPanes()
               | beam.Map(lambda e: e["sensor_id"].tolist() if isinstance(e, Columns) else [e["sensor_id"]]))
        assert_that(out, equal_to([["s1"], ["b"]]))


@pytest.mark.parametrize("timing", ["LATE", "EARLY", "ON_TIME", "UNKNOWN", "SOMETHING ELSE"])
def test_a_pane_of_one_timing_ranks_as_its_rows_would_among_others(timing):
    alone = timing_ranks(np.full(3, timing))  # a pane: every row the same timing
    mixed = timing_ranks(np.array([timing] * 3 + ["LATE", "EARLY"], object))[:3]
    assert alone.dtype == np.int64 and alone.tolist() == mixed.tolist()
    assert alone.tolist() == [TIMING_RANK.get(timing, TIMING_RANK["UNKNOWN"])] * 3
    assert timing_ranks(np.array([], str)).tolist() == []
