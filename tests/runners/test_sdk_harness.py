"""The in-process SDK harness's state sampler: its period is shortened, and only where Beam has that parameter."""

from __future__ import annotations

import pytest
from apache_beam.runners.worker import statesampler
from apache_beam.utils.counters import CounterFactory

from runners.presets import pipeline_options
from runners.sdk_harness import SAMPLING_PERIOD_MS, shorten_state_sampling


@pytest.fixture
def beams_default():
    """Beam's own default, put back after the test."""
    saved = statesampler.StateSampler.__init__.__defaults__
    yield saved
    statesampler.StateSampler.__init__.__defaults__ = saved


def test_a_sampler_started_after_the_call_has_the_short_period(beams_default) -> None:
    assert shorten_state_sampling(7) is True
    sampler = statesampler.StateSampler("stage", CounterFactory())
    assert sampler.sampling_period_ms == 7
    assert statesampler.StateSampler("stage", CounterFactory(), sampling_period_ms=50).sampling_period_ms == 50


def test_pipeline_options_shorten_the_period_of_this_processs_harness(beams_default) -> None:
    statesampler.StateSampler.__init__.__defaults__ = (statesampler.DEFAULT_SAMPLING_PERIOD_MS,)
    pipeline_options("direct", False)
    assert statesampler.StateSampler("stage", CounterFactory()).sampling_period_ms == SAMPLING_PERIOD_MS
    assert SAMPLING_PERIOD_MS < statesampler.DEFAULT_SAMPLING_PERIOD_MS


def test_a_sampler_without_that_parameter_is_left_alone(monkeypatch) -> None:
    class Other:
        def __init__(self, prefix, counter_factory, period=200):
            self.period = period

    monkeypatch.setattr(statesampler, "StateSampler", Other)
    assert shorten_state_sampling() is False
    assert Other.__init__.__defaults__ == (200,)


def test_a_period_below_one_ms_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        shorten_state_sampling(0)
