import pytest

from digestlab.claims import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    claim,
    decide_below,
    decide_equal,
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


def test_single_seed_is_inconclusive():
    verdict, stats = decide_below([0.5], 1.0)
    assert verdict == INCONCLUSIVE and stats["sd"] is None and stats["high"] is None


def test_t_quantiles():
    assert t95(2) == pytest.approx(2.920)
    assert t95(40) == pytest.approx(1.684, abs=1e-3) and t95(120) == pytest.approx(1.658, abs=1e-3)
    with pytest.raises(ValueError):
        t95(0)


def test_exact_quantities_compare_exactly():
    assert decide_equal(0.5, 0.5) == REPRODUCED
    assert decide_equal(0.5000001, 0.5) == NOT_REPRODUCED


def test_claim_requires_both_languages():
    with pytest.raises(ValueError):
        claim("x", {"en": "only English"}, {}, "", REPRODUCED)
