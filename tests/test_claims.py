import itertools
import math

import numpy as np
import pytest
from pydantic import ValidationError

from digestlab.claims import (
    INCONCLUSIVE,
    LEVEL,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    Bound,
    Claim,
    ClaimSpec,
    ComparisonSpec,
    PremiseSpec,
    auroc,
    binomial_interval,
    combine,
    compare,
    holm,
    mean_interval,
    our_bound,
    paired_differences,
    paired_ratios,
    paper_bound,
    rate,
    summarize,
    t95,
    units_to_decide,
)

WHY = {"ko": "이유", "en": "a reason"}


def below(value: float = 1.0, **kwargs) -> ComparisonSpec:
    return ComparisonSpec(statistic="x", direction="<", bound=paper_bound(value, "Table 1"),
                          **kwargs)


def above(value: float = 1.0, **kwargs) -> ComparisonSpec:
    return ComparisonSpec(statistic="x", direction=">", bound=paper_bound(value, "Table 1"),
                          **kwargs)


def spec(comparisons=None, premises=None, claim_id="c") -> ClaimSpec:
    return ClaimSpec(id=claim_id, text={"ko": "주장 {n}", "en": "claim {n}"},
                     comparisons=comparisons or {"x": below()}, premises=premises or {})


def test_summary_uses_the_sample_standard_deviation():
    assert summarize([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0, "n": 3}


def test_the_interval_of_a_mean_is_the_one_comparisons_decide_on():
    values = [1.0, 2.0, 4.0, 3.5]
    low, high = mean_interval(values)
    spec = ComparisonSpec(statistic="x", direction=">", bound=our_bound(0.0, ko="k", en="e"))
    assert compare("x", spec, values).interval == pytest.approx((low, high))
    stats = summarize(values)
    assert high - stats["mean"] == pytest.approx(t95(3) * stats["sd"] / 2)
    with pytest.raises(ValueError):
        mean_interval([1.0])


def test_clearly_below_is_reproduced_with_a_90_percent_interval_below_the_bound():
    t = compare("x", below(), [0.95, 0.96, 0.97])
    assert t.verdict == REPRODUCED and t.interval[1] < 1.0 and t.level == LEVEL == 0.9
    assert t.p < 0.05


def test_clearly_above_is_not_reproduced():
    t = compare("x", below(), [1.05, 1.06, 1.07])
    assert t.verdict == NOT_REPRODUCED and t.interval[0] > 1.0 and t.p < 0.05


def test_spread_straddling_the_bound_is_inconclusive_and_says_how_many_units_would_decide():
    # The mean is below the bound, but three seeds this far apart cannot say so.
    t = compare("x", below(), [0.90, 1.02, 0.99])
    assert t.estimate < 1.0 and t.verdict == INCONCLUSIVE
    assert t.to_decide == units_to_decide(t.estimate - 1.0, t.sd) > 3


def test_above_mirrors_below():
    assert compare("x", above(), [1.05, 1.06, 1.07]).verdict == REPRODUCED
    assert compare("x", above(), [0.95, 0.96, 0.97]).verdict == NOT_REPRODUCED
    assert compare("x", above(), [1.10, 0.98, 1.01]).verdict == INCONCLUSIVE


def test_the_interval_ends_are_the_one_sided_95_percent_t_bounds():
    # mean 2, sd 1, n 3: the margin is t95(2) / sqrt(3) = 2.920 / 1.732.
    t = compare("x", below(10.0), [1.0, 2.0, 3.0])
    assert t.interval == pytest.approx((2 - 1.6859, 2 + 1.6859), abs=1e-4)


def test_ratios_are_decided_on_their_logs_and_shown_as_ratios():
    ratios = [1.01, 1.03, 1.02]
    t = compare("r", below(1.05, space="log"), ratios)
    logs = [math.log(r) for r in ratios]
    assert t.estimate == pytest.approx(math.exp(sum(logs) / 3))
    assert t.sd == pytest.approx(summarize(logs)["sd"])
    assert t.interval[0] < t.estimate < t.interval[1] < 1.05 and t.verdict == REPRODUCED


def test_single_unit_is_inconclusive_without_an_interval():
    t = compare("x", below(), [0.5])
    assert t.verdict == INCONCLUSIVE and t.sd is None and t.interval is None and t.p is None


def test_every_rule_needs_every_unit_on_the_claimed_side():
    assert compare("x", below(0.1, rule="every"), [0.01, 0.05]).verdict == REPRODUCED
    assert compare("x", below(0.1, rule="every"), [0.01, 0.2]).verdict == NOT_REPRODUCED


def test_exact_quantities_compare_exactly():
    exact = ComparisonSpec(statistic="bytes ratio", direction="=", rule="exact",
                           bound=paper_bound(0.5, "§3"))
    assert compare("b", exact, 0.5).verdict == REPRODUCED
    assert compare("b", exact, 0.5000001).verdict == NOT_REPRODUCED


@pytest.mark.parametrize(("dof", "quantile"), [
    (1, 6.3138), (2, 2.9200), (5, 2.0150), (10, 1.8125), (30, 1.6973), (40, 1.6839),
    (120, 1.6577), (10**6, 1.6449),
])
def test_t95_matches_the_one_sided_95_percent_table(dof, quantile):
    assert t95(dof) == pytest.approx(quantile, abs=1e-4)


def test_units_to_decide_grows_as_the_gap_shrinks():
    # t(0.95, 1) * 0.01 / sqrt(2) = 0.045 > 0.03 > t(0.95, 2) * 0.01 / sqrt(3) = 0.017
    assert units_to_decide(0.03, 0.01) == 3
    assert units_to_decide(0.005, 0.01) > units_to_decide(0.01, 0.01) > 3
    assert units_to_decide(1e-6, 0.01) is None


def test_paired_helpers_pair_unit_by_unit():
    assert paired_ratios([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]
    assert paired_differences([2.0, 3.0], [1.0, 2.0]) == [1.0, 1.0]
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])


def test_binomial_interval_is_wilsons():
    low, high = binomial_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-3)  # Wilson, 95%
    low90, high90 = binomial_interval(10, 20, level=0.9)
    low95, high95 = binomial_interval(10, 20)
    assert low95 < low90 < 0.5 < high90 < high95


def test_combined_claims_need_every_part():
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([INCONCLUSIVE, NOT_REPRODUCED]) == NOT_REPRODUCED


def test_a_bound_says_where_it_comes_from():
    with pytest.raises(ValidationError, match="names where"):
        Bound(value=1.0, source="paper")
    with pytest.raises(ValidationError, match="says why"):
        Bound(value=1.0, source="ours")
    with pytest.raises(ValidationError, match="ko and en"):
        Bound(value=1.0, source="ours", why={"en": "only English"})
    assert our_bound(0.2, "한국어", "English").why == {"ko": "한국어", "en": "English"}


def test_claim_text_needs_both_languages():
    with pytest.raises(ValidationError):
        ClaimSpec(id="c", text={"en": "only English"}, comparisons={"x": below()})


def test_a_missing_premise_makes_the_claim_not_testable_but_keeps_its_numbers():
    sink = PremiseSpec(text={"ko": "싱크", "en": "a sink"}, statistic="attention / uniform",
                       direction=">=", bound=our_bound(2.0, **WHY))
    claim = spec(premises={"sink": sink}).decide({"x": [0.5, 0.6, 0.55]}, "streams",
                                                 {"sink": 0.9}, base_models=1, fields={"n": 4})
    assert claim.verdict == NOT_TESTABLE and claim.comparisons[0].verdict == REPRODUCED
    (premise,) = claim.premises
    assert not premise.holds and premise.value == 0.9 and premise.bound.value == 2.0
    assert claim.text == {"ko": "주장 4", "en": "claim 4"} and claim.base_models == 1
    held = spec(premises={"sink": sink}).decide({"x": [0.5, 0.6, 0.55]}, "streams",
                                                {"sink": 2.0}, fields={"n": 4})
    assert held.verdict == REPRODUCED


def test_a_premise_of_one_comparison_leaves_the_claim_to_the_others():
    def represented(name):
        return PremiseSpec(text={"ko": "표현", "en": "represented"}, statistic="auroc",
                           direction=">=", bound=our_bound(0.6, **WHY), comparison=name)

    two = spec(comparisons={"a": below(), "b": below()},
               premises={"a?": represented("a"), "b?": represented("b")})
    claim = two.decide({"a": [0.5, 0.6, 0.55], "b": [3.0, 3.1, 2.9]}, "streams",
                       {"a?": 0.9, "b?": 0.52})
    assert [t.verdict for t in claim.comparisons] == [REPRODUCED, NOT_TESTABLE]
    assert claim.comparisons[1].values == [3.0, 3.1, 2.9] and claim.comparisons[1].p is None
    assert claim.verdict == REPRODUCED  # b would have failed, but cannot be tested here
    # Holm counts the testable comparison alone
    assert holm([claim])[0].holm.p == claim.comparisons[0].p
    neither = two.decide({"a": [0.5, 0.6, 0.55], "b": [0.5, 0.6, 0.55]}, "streams",
                         {"a?": 0.5, "b?": 0.52})
    assert neither.verdict == NOT_TESTABLE
    with pytest.raises(ValidationError, match="not one of the claim's comparisons"):
        spec(premises={"z?": represented("z")})


def test_rate_counts_trials_with_wilsons_interval():
    got = rate(np.array([True, False, True, True]))
    assert got == {"rate": 0.75, "n": 4, "interval": list(binomial_interval(3, 4))}


def test_auroc_is_the_share_of_positive_negative_pairs_ranked_right_ties_half():
    scores = np.array([[0.0, 3.0], [0.0, 1.0], [2.0, 1.0], [1.0, 0.0], [0.0, 2.0]])
    positive = np.array([True, False, True, False, False])
    got = auroc(scores, positive)
    for column in range(2):
        pairs = list(itertools.product(scores[positive, column], scores[~positive, column]))
        expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
        assert got[column] == pytest.approx(expected)
    assert auroc(scores[:, 0], positive) == pytest.approx(got[0])
    with pytest.raises(ValueError):
        auroc(scores, np.zeros(5, dtype=bool))


def test_premises_and_comparisons_must_be_the_declared_ones():
    with pytest.raises(ValueError, match="premises measured"):
        spec().decide({"x": [1.0]}, "streams", {"undeclared": 1.0})
    with pytest.raises(ValueError, match="values for"):
        spec().decide({"y": [1.0]}, "streams")


def test_claim_records_round_trip_through_json():
    claim = spec().decide({"x": [0.9, 0.95]}, "training seeds", fields={"n": 1})
    assert Claim.model_validate_json(claim.model_dump_json()) == claim


def test_holm_marks_a_verdict_that_the_family_wise_correction_would_undo():
    # alone at p < 0.05 each; Holm's smallest threshold for three claims is 0.05 / 3
    strong = spec(claim_id="strong").decide({"x": [0.5, 0.51, 0.52]}, "rounds",
                                            fields={"n": 1})
    weak = spec(claim_id="weak").decide({"x": [0.9, 0.99, 0.95, 0.97]}, "rounds",
                                        fields={"n": 1})
    open_ = spec(claim_id="open").decide({"x": [0.9, 1.1]}, "rounds", fields={"n": 1})
    assert weak.verdict == REPRODUCED and 0.05 / 3 < weak.comparisons[0].p < 0.05
    out = {c.id: c for c in holm([strong, weak, open_])}
    assert out["strong"].holm.verdict == REPRODUCED and not out["strong"].flips_under_holm
    assert out["weak"].holm.verdict == INCONCLUSIVE and out["weak"].flips_under_holm
    assert out["open"].holm.verdict == INCONCLUSIVE and out["strong"].holm.family == 3


def test_holm_leaves_checks_and_untestable_claims_out_of_the_family():
    check = spec(claim_id="check").model_copy(update={"kind": "property"}).decide(
        {"x": [0.5, 0.51]}, "rounds", fields={"n": 1})
    (out,) = holm([check])
    assert out.holm is None


def test_a_ratio_of_means_is_decided_on_the_bound_itself_with_fiellers_interval():
    spec = ComparisonSpec(statistic="gap(a) / gap(b)", direction="<", rule="ratio-of-means",
                          bound=our_bound(0.5, ko="절반", en="a half"))
    pairs = [(0.010, 0.040), (0.014, 0.050), (0.008, 0.035), (0.012, 0.045)]
    c = compare("share", spec, pairs)
    a, b = zip(*pairs, strict=True)
    assert c.estimate == pytest.approx(sum(a) / sum(b))
    assert c.values == pytest.approx([x - 0.5 * y for x, y in pairs])
    assert c.verdict == "reproduced" and c.bound.value == 0.5 and c.rule == "ratio-of-means"
    low, high = c.interval
    assert low < c.estimate < high < 0.5
    # Fieller's ends are the ratios r at which the t-bound on mean(a - r b) just reaches zero
    t = t95(len(pairs) - 1)
    for end, sign in ((low, -1), (high, 1)):
        d = [x - end * y for x, y in pairs]
        s = summarize(d)
        assert s["mean"] + sign * t * s["sd"] / math.sqrt(len(d)) == pytest.approx(0, abs=1e-12)
    # the verdict is the mean rule's on a - bound * b, whatever the interval
    assert compare("d", ComparisonSpec(statistic="d", direction="<", bound=our_bound(
        0.0, ko="영", en="zero")), c.values).p == pytest.approx(c.p)


def test_a_ratio_of_means_over_a_denominator_lost_in_noise_has_no_interval():
    spec = ComparisonSpec(statistic="s", direction="<", rule="ratio-of-means",
                          bound=our_bound(0.5, ko="절반", en="a half"))
    c = compare("share", spec, [(0.01, 0.03), (0.02, -0.04), (0.015, 0.02)])
    assert c.interval is None and c.level is None
    assert c.verdict == "inconclusive"
    with pytest.raises(ValueError, match="linear"):
        ComparisonSpec(statistic="s", direction="<", rule="ratio-of-means", space="log",
                       bound=our_bound(0.5, ko="절반", en="a half"))
