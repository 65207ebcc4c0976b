"""The candidate list: where chained models are offered, what a request for one also fits, the default set and
the ``--candidates`` flag."""

from __future__ import annotations

import numpy as np
import pytest

from ml.exceptions import DataError
from ml.features import FEATURE_NAMES
from ml.models import (
    BLEND_HORIZONS,
    BLEND_WEIGHTS,
    BLENDS,
    CANDIDATE_NAMES,
    CHAIN_UPSTREAM,
    DEFAULT_CANDIDATES,
    HGB_MLP_HALF_LIFE_DAYS,
    MLP_UPSTREAM,
    ModelSpec,
    candidate_specs,
    default_candidates,
    parse_candidates,
)
from ml.train import _blends, _wanted


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


def test_the_default_set_is_the_selected_family_and_the_baselines_it_is_compared_with() -> None:
    assert default_candidates() == DEFAULT_CANDIDATES
    assert set(DEFAULT_CANDIDATES) < set(CANDIDATE_NAMES)
    assert {"last_value", MLP_UPSTREAM, "hgb_mlp_chain", "hgb_mlp_blend"} <= set(DEFAULT_CANDIDATES)
    assert "random_forest" not in DEFAULT_CANDIDATES and "hgb_chain" not in DEFAULT_CANDIDATES
    assert default_candidates(quick=True) == CANDIDATE_NAMES  # tiny models: the smoke run fits every code path
    # hgb_mlp is fitted at 15 min only (the chains' upstream, the 15-minute model, a member of the 15-minute blend);
    # 30 and 60 min fit the chains, and the blend offered at 15 min only brings no members there
    assert BLEND_HORIZONS["hgb_mlp_blend"] == (15,)
    # the earlier model type is fitted at 15 min, as the blend's member, and not at 30 and 60 min
    assert _wanted(set(DEFAULT_CANDIDATES), first_horizon=True, horizon=15) == {
        *DEFAULT_CANDIDATES, "hgb_mlp", "hist_gradient_boosting"}
    for h in (30, 60):
        assert _wanted(set(DEFAULT_CANDIDATES), first_horizon=False, horizon=h) == set(DEFAULT_CANDIDATES) - {
            "hgb_mlp_blend"}
    assert _wanted({"hgb_mlp_blend"}, first_horizon=False, horizon=30) >= {"hgb_mlp", "hist_gradient_boosting"}


@pytest.mark.parametrize("quick", [False, True])
def test_only_the_perceptrons_and_the_trees_on_them_weight_rows_by_recency(quick) -> None:
    for h in (15, 30, 60):
        halves = {s.name: s.half_life_days for s in candidate_specs(h, quick=quick)}
        assert halves.pop("mlp") == halves.pop("hgb_mlp") == HGB_MLP_HALF_LIFE_DAYS
        if h != 15:
            assert halves.pop("hgb_mlp_chain") == HGB_MLP_HALF_LIFE_DAYS
        assert set(halves.values()) == {None}


def test_row_weights_halve_per_half_life_of_age_and_average_one() -> None:
    day = 24 * 3600 * 1000
    times = np.array([0, 10 * day, 20 * day, 30 * day, 30 * day])
    weights = ModelSpec("t", "speed_last", half_life_days=10.0).row_weights(times)
    np.testing.assert_allclose(weights / weights[-1], [1 / 8, 1 / 4, 1 / 2, 1, 1])
    assert weights.mean() == pytest.approx(1.0)
    assert ModelSpec("t", "speed_last").row_weights(times) is None  # no half-life: every row alike
    assert ModelSpec("t", "speed_last", half_life_days=10.0).row_weights(times[:0]) is None


@pytest.mark.parametrize(("text", "expected"), [
    (None, None),
    ("ridge", ("ridge",)),
    (" last_value , hgb_mlp ,", ("last_value", "hgb_mlp")),
    ("all", CANDIDATE_NAMES),
    ("hgb_mlp,all", CANDIDATE_NAMES),
])
def test_candidates_flag_names_candidates_or_all(text, expected) -> None:
    got = parse_candidates(text)
    assert got == expected if expected is None else set(got) == set(expected) and len(got) == len(expected)


@pytest.mark.parametrize(("text", "unknown"), [("ridge,gpt", "gpt"), ("", "(none)"), (" , ", "(none)"),
                                               ("ALL", "ALL")])
def test_bad_candidates_are_one_line_errors_naming_the_choices(text, unknown) -> None:
    with pytest.raises(DataError) as err:
        parse_candidates(text)
    message = str(err.value)
    assert "\n" not in message and f"unknown --candidates {unknown};" in message
    assert "choose among all, " in message and all(name in message for name in CANDIDATE_NAMES)


def test_a_weighted_blend_reuses_its_fitted_members_with_its_weights() -> None:
    class Constant:
        def __init__(self, value: float) -> None:
            self.value = value

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.full(len(x), self.value)

    specs = {s.name: s for s in candidate_specs(15)}
    fitted = [(specs["hgb_mlp"], Constant(4.0), np.arange(3), 1.0),
              (specs["hist_gradient_boosting"], Constant(0.0), np.arange(2, 6), 2.0)]
    ((spec, blend, used, fit_s),) = _blends(fitted, ["hgb_mlp_blend"])
    assert spec.name == "hgb_mlp_blend" and BLEND_WEIGHTS["hgb_mlp_blend"] == (0.75, 0.25)
    x = np.zeros((5, len(FEATURE_NAMES)), dtype=np.float32)
    np.testing.assert_allclose(blend.predict(x), 3.0)  # 0.75 * 4 + 0.25 * 0
    assert used.tolist() == list(range(6)) and fit_s == 3.0
