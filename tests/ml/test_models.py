"""The candidate list: where chained models are offered, and what a request for one also fits."""

from __future__ import annotations

import pytest

from ml.models import BLEND_HORIZONS, BLENDS, CANDIDATE_NAMES, CHAIN_UPSTREAM, candidate_specs
from ml.train import _wanted


@pytest.mark.parametrize("quick", [False, True])
def test_chains_are_offered_after_the_first_horizon_only(quick) -> None:
    assert "hgb_chain" not in {s.name for s in candidate_specs(15, quick=quick)}
    for h in (30, 60):
        chain = [s for s in candidate_specs(h, quick=quick) if s.name == "hgb_chain"]
        assert len(chain) == 1 and chain[0].upstream == CHAIN_UPSTREAM
    assert BLEND_HORIZONS["hgb_chain_blend"] == (60,)
    assert set(BLENDS) <= set(CANDIDATE_NAMES)


def test_asking_for_a_chained_blend_fits_its_members_and_the_chain_upstream() -> None:
    first = _wanted({"hgb_chain_blend"}, first_horizon=True)
    assert {"hgb_chain", "hist_gradient_boosting", CHAIN_UPSTREAM, *BLENDS[CHAIN_UPSTREAM]} <= first
    later = _wanted({"hgb_chain_blend"}, first_horizon=False)
    assert {"hgb_chain", "hist_gradient_boosting"} <= later and CHAIN_UPSTREAM not in later
