import pytest

from digestlab.claims import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    claim,
    decide_above,
    decide_below,
    decide_equal,
    seeds_to_decide,
    summarize,
    t95,
)


def test_summary_uses_the_sample_standard_deviation():
    stats = summarize([1.0, 2.0, 3.0])
    assert stats == {"mean": 2.0, "sd": 1.0, "n": 3}


def test_clearly_below_is_reproduced():
    verdict, stats = decide_below([0.95, 0.96, 0.97], 1.0)
    assert verdict == REPRODUCED and stats["high"] < 1.0


def test_clearly_above_is_not_reproduced():
    assert decide_below([1.05, 1.06, 1.07], 1.0)[0] == NOT_REPRODUCED


def test_spread_straddling_the_bound_is_inconclusive():
    # The mean is below the bound, but three seeds this far apart cannot say so.
    verdict, stats = decide_below([0.90, 1.02, 0.99], 1.0)
    assert stats["mean"] < 1.0 and verdict == INCONCLUSIVE


def test_above_mirrors_below():
    verdict, stats = decide_above([1.05, 1.06, 1.07], 1.0)
    assert verdict == REPRODUCED and 1.0 < stats["low"] < stats["mean"] < stats["high"]
    assert decide_above([0.95, 0.96, 0.97], 1.0)[0] == NOT_REPRODUCED
    assert decide_above([1.10, 0.98, 1.01], 1.0)[0] == INCONCLUSIVE
    assert decide_above([2.0], 1.0)[1]["low"] is None


def test_seeds_to_decide_grows_as_the_gap_shrinks():
    # t(0.95, 1) * 0.01 / sqrt(2) = 0.045 > 0.03 > t(0.95, 2) * 0.01 / sqrt(3) = 0.017
    assert seeds_to_decide(0.03, 0.01) == 3
    assert seeds_to_decide(0.005, 0.01) > seeds_to_decide(0.01, 0.01) > 3
    assert seeds_to_decide(1e-6, 0.01) is None


def test_single_seed_is_inconclusive():
    verdict, stats = decide_below([0.5], 1.0)
    assert verdict == INCONCLUSIVE and stats["sd"] is None and stats["high"] is None


@pytest.mark.parametrize(("dof", "quantile"), [
    (1, 6.3138), (2, 2.9200), (5, 2.0150), (10, 1.8125), (30, 1.6973), (31, 1.6955),
    (40, 1.6839), (120, 1.6577), (10**6, 1.6449),
])
def test_t95_matches_the_one_sided_95_percent_table(dof, quantile):
    assert t95(dof) == pytest.approx(quantile, abs=1e-4)


def test_t95_refuses_fewer_than_one_degree_of_freedom():
    with pytest.raises(ValueError, match="at least one degree of freedom"):
        t95(0)


def test_bounds_are_the_mean_plus_and_minus_the_one_sided_t_margin():
    # mean 2, sd 1, n 3: the margin is t95(2) / sqrt(3) = 2.920 / 1.732.
    verdict, stats = decide_below([1.0, 2.0, 3.0], 10.0)
    assert stats["high"] == pytest.approx(2 + 1.6859, abs=1e-4)
    assert stats["low"] == pytest.approx(2 - 1.6859, abs=1e-4)
    assert verdict == REPRODUCED


def test_exact_quantities_compare_exactly():
    assert decide_equal(0.5, 0.5) == REPRODUCED
    assert decide_equal(0.5000001, 0.5) == NOT_REPRODUCED


def test_claim_requires_both_languages():
    with pytest.raises(ValueError):
        claim("x", {"en": "only English"}, {}, "", REPRODUCED)
