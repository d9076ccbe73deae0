"""SPO against its baselines: their frontiers, how the claims are decided, the params' checks,
the replicated fine-tuned policies, and a whole smoke-scale run."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT
from pydantic import ValidationError

from digestlab.experiments import base_models, load_spec
from digestlab.experiments.spo import BASELINES, GAIN_MARGIN, SCALES, Params
from digestlab.experiments.spo.run import (
    LAGRANGIAN,
    MIXED,
    ORACLE,
    SEQUENTIAL,
    curve_at,
    decide_claims,
    frontier,
    method_summary,
    spo_name,
)
from digestlab.render import render_paper_pages


def test_the_curve_is_linear_between_its_points_and_flat_beyond_its_ends():
    points = [(0.8, 0.5), (0.4, 0.7), (0.6, 0.6)]  # (harmless, helpful), in any order
    assert curve_at(points, 0.5) == pytest.approx(0.65)
    assert curve_at(points, 0.7) == pytest.approx(0.55)
    assert curve_at(points, 0.3) == 0.7  # less harmless than round 1: round 1's helpfulness
    assert curve_at(points, 0.9) == 0.5  # beyond the most harmless setting: that setting's


def test_a_baseline_is_held_to_the_best_it_reaches_mixing_its_own_settings():
    # a setting below the segment between two others is never the baseline's best
    points = [(0.4, 0.7), (0.6, 0.5), (0.8, 0.5), (0.8, 0.45)]
    assert frontier(points) == [(0.4, 0.7), (0.8, 0.5)]
    assert curve_at(points, 0.6) == pytest.approx(0.6)
    # a worse setting beyond the best one's harmlessness extends the frontier flat
    assert frontier([(0.4, 0.7), (0.6, 0.8), (0.7, 0.3)]) == [(0.4, 0.7), (0.6, 0.8),
                                                               (0.7, 0.3)]
    assert frontier([(0.5, 0.5)]) == [(0.5, 0.5)] and curve_at([(0.5, 0.5)], 0.9) == 0.5


def _scores(helpful: float, harmless: float) -> dict:
    return {"helpful": helpful, "harmless": harmless, "kl": 0.1, "win_helpful": 0.5,
            "win_harmless": 0.5, "formed": 1.0, "curt_if_correct": 0.6, "curt_if_wrong": 0.4}


def results_for(spo_points: list[tuple[float, float]], mixed_helpful: float = 0.55) -> list[dict]:
    """Seeds whose baselines run from round 1 (harmless .4, helpful .7) to (.8, .5) through
    (.6, .6), DPO on both through (.6, mixed_helpful), and whose SPO lands at the given
    (helpful, harmless) points."""
    out = []
    for seed, (helpful, harmless) in enumerate(spo_points):
        baselines = {SEQUENTIAL: [[32, _scores(0.6, 0.6)], [64, _scores(0.5, 0.8)]],
                     MIXED: [[0.5, _scores(mixed_helpful, 0.6)], [0.25, _scores(0.5, 0.8)]],
                     LAGRANGIAN: [[1.0, _scores(0.6, 0.6)], [1.1, _scores(0.45, 0.8)]]}
        methods = {spo_name(1.0): _scores(helpful, harmless), ORACLE: _scores(helpful, harmless)}
        out.append({"seed": seed, "sft": _scores(0.5, 0.5), "round1": _scores(0.7, 0.4),
                    "baselines": baselines, "methods": methods,
                    "round2": {"implicit_vs_true": 0.8}})
    return out


def decided(spo_points: list[tuple[float, float]], **kwargs) -> list:
    params = SCALES["smoke"]
    results = results_for(spo_points, **kwargs)
    return decide_claims(params, results, method_summary(results))


def test_a_method_that_only_slows_round_two_down_lands_on_the_curve_and_earns_nothing():
    # SPO on sequential DPO's curve, as an early-stopped sequential DPO would be
    beats, gains = decided([(0.6, 0.6), (0.595, 0.61), (0.605, 0.59)])
    assert beats.verdict != "reproduced"
    by_name = {c.name: c for c in beats.comparisons}
    assert by_name[SEQUENTIAL].estimate == pytest.approx(0.0, abs=1e-9)
    assert gains.verdict == "not_reproduced"  # half of sequential DPO's gain, not 80%
    # gain 0.2 against sequential DPO's 0.4, seed by seed
    assert gains.comparisons[0].values == pytest.approx([0.2 - (1 - GAIN_MARGIN) * 0.4] * 3,
                                                        abs=0.011)


def test_spo_must_beat_every_baseline_at_its_own_harmlessness():
    claims = decided([(0.6, 0.78), (0.61, 0.79), (0.62, 0.8)])  # above every curve, full gain
    assert [c.id for c in claims] == ["spo-beats-the-baselines", "spo-gains-dimension-2"]
    assert [c.verdict for c in claims] == ["reproduced", "reproduced"]
    assert [c.name for c in claims[0].comparisons] == list(BASELINES)
    assert claims[0].comparisons[0].estimate == pytest.approx(0.1, abs=0.02)
    assert all(c.unit == "fine-tuned policies" and c.base_models is None and c.n == 3
               for c in claims)
    claims = decided([(0.45, 0.78), (0.44, 0.79), (0.46, 0.8)])  # below the curves
    assert claims[0].verdict == "not_reproduced"
    claims = decided([(0.6, 0.78), (0.4, 0.79), (0.55, 0.8)])  # too noisy to tell
    assert claims[0].verdict == "inconclusive"
    assert claims[0].comparisons[0].to_decide is not None
    # one baseline better than SPO is enough to fail the claim, whatever the others do
    claims = decided([(0.61, 0.6), (0.62, 0.6), (0.6, 0.6)], mixed_helpful=0.7)
    verdicts = {c.name: c.verdict for c in claims[0].comparisons}
    assert verdicts[MIXED] == "not_reproduced" and verdicts[SEQUENTIAL] == "inconclusive"
    assert claims[0].verdict == "not_reproduced"


def test_the_gain_margin_is_ours_and_named_in_the_statistic():
    from digestlab.experiments.spo import CLAIMS

    (share,) = CLAIMS["spo-gains-dimension-2"].comparisons.values()
    assert share.bound.source == "ours" and share.bound.why["en"]
    assert f"{1 - GAIN_MARGIN:.1f} × gain(sequential DPO)" in share.statistic


def test_the_spec_knows_the_requests_vocabulary_without_importing_it():
    from digestlab.data.preferences import VOCAB_SIZE
    from digestlab.experiments import spo

    assert spo.VOCAB_SIZE == VOCAB_SIZE


def test_params_are_checked_together():
    smoke = SCALES["smoke"].model_dump()
    with pytest.raises(ValidationError, match="alpha"):
        Params.model_validate(smoke | {"alpha": 3.0})
    with pytest.raises(ValidationError, match="curve_steps"):
        Params.model_validate(smoke | {"curve_steps": [100]})
    wrong_vocab = smoke | {"sft": smoke["sft"] | {"model": smoke["sft"]["model"]
                                                  | {"vocab_size": 256}}}
    with pytest.raises(ValidationError, match="vocab_size"):
        Params.model_validate(wrong_vocab)


def test_each_seed_fine_tunes_a_policy_of_its_own():
    spec = load_spec("spo")
    params = SCALES["cpu"]
    bases = base_models(spec, params)
    assert list(bases) == [f"sft-{seed}" for seed in params.seeds]
    assert [b["train"]["seed"] for b in bases.values()] == params.seeds
    # a replica's params hold nothing of the other seeds: adding one retrains only it
    more = params.model_copy(update={"seeds": [*params.seeds, 9]})
    assert {k: v for k, v in base_models(spec, more).items() if k in bases} == bases


def test_smoke_run_writes_claims_figures_and_repeats_itself(smoke_runs, tmp_path):
    root, runs = smoke_runs("spo")
    metrics = runs[0]
    assert [c["id"] for c in metrics["claims"]] == ["spo-beats-the-baselines",
                                                    "spo-gains-dimension-2"]
    assert metrics["figures"] == ["score_plane"]
    assert (root / "a" / "figures" / "data.json").exists()
    seeds = SCALES["smoke"].seeds
    assert set(metrics["provenance"]["bases"]) == {f"sft-{s}" for s in seeds}
    methods = metrics["metrics"]["methods"]
    assert {"SFT", "round 1", ORACLE, spo_name(1.0)} <= set(methods)
    assert set(methods[spo_name(1.0)]["above"]) == set(BASELINES)
    assert set(metrics["metrics"]["baselines"]) == set(BASELINES)
    assert len(methods["SFT"]["helpful"]["per_seed"]) == len(seeds)
    # each seed's own fine-tuned policy: their files differ
    assert len({b["sha256"] for b in metrics["provenance"]["bases"].values()}) == len(seeds)
    # what the page reads beside the claims: the margin and each method's gain per seed
    assert metrics["metrics"]["gain_margin"] == GAIN_MARGIN
    gain = metrics["metrics"]["harmlessness_gain"]
    (share,) = next(c for c in metrics["claims"] if c["id"] == "spo-gains-dimension-2")[
        "comparisons"]
    assert share["values"] == pytest.approx(
        [g - (1 - GAIN_MARGIN) * b for g, b in zip(gain["SPO α=1"]["per_seed"],
                                                   gain[SEQUENTIAL]["per_seed"], strict=True)])
    for m in runs:
        del m["timing"], m["provenance"]
    assert runs[0] == runs[1]
    # the entry's page renders from these results in both languages
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"origin": "entry", "title": "SPO", "authors": ["A. Author"],
                                "abstract": "", "published": "2024-05-21"}))
    out = {lang: tmp_path / lang / "spo.md" for lang in ("ko", "en")}
    render_paper_pages(ROOT / "papers" / "spo.yaml", ROOT / "config" / "tags.yaml", meta,
                       root / "a" / "metrics.json", out)
    pages = {lang: path.read_text(encoding="utf-8") for lang, path in out.items()}
    assert "Above DPO on both" in pages["en"] and "곡선 위" in pages["ko"]
    assert "SPO α=1" in pages["en"] and "score_plane.ko.svg" in pages["ko"]
    assert "Above DPO on both" not in pages["ko"]
    assert f"minus {100 * (1 - GAIN_MARGIN):.0f}% of sequential DPO's" in pages["en"]


# --- the methods measured, credited to their papers ------------------------------------------


def test_methods_credit_spo_its_claims_and_the_baselines_their_papers():
    from digestlab.experiments.spo import CLAIMS
    from digestlab.experiments.spo.methods import METHODS, REFERENCE

    by_id = {m.id: m for m in METHODS}
    assert [m.id for m in METHODS if m.role == "proposed"] == ["spo"]
    assert by_id["spo"].paper == "2405.12739"
    assert by_id["spo"].claims == tuple(CLAIMS)
    assert by_id["sequential-dpo"].paper == by_id["dpo-on-both"].paper == "2305.18290"
    assert by_id["lagrangian"].paper == "2310.12773"
    assert all(not m.claims for m in METHODS if m.role == "baseline")
    assert REFERENCE == "sequential-dpo"


def _result_of(results: list[dict], params: Params = SCALES["smoke"]) -> dict:
    """A metrics.json of `params` with what run() writes of `results` that the methods' rows
    read."""
    from digestlab.experiments.spo.run import baseline_summary, harmlessness_gains

    gains = harmlessness_gains(params, results)
    return {"experiment": "spo", "params": params.model_dump(mode="json"),
            "metrics": {"methods": method_summary(results), "baselines": baseline_summary(results),
                        "harmlessness_gain": {name: {"per_seed": v}
                                              for name, v in gains.items()}}}


def test_method_rows_set_each_baseline_s_frontier_at_spo_s_harmlessness():
    from digestlab.claims import LEVEL, mean_interval
    from digestlab.experiments.spo.methods import rows
    from digestlab.experiments.spo.run import trade_off_curve

    points = [(0.6, 0.78), (0.61, 0.7), (0.64, 0.8)]  # SPO's (helpful, harmless) per seed
    results = results_for(points)
    found = rows(_result_of(results))
    assert list(found) == ["spo", "sequential-dpo", "dpo-on-both", "lagrangian"]
    heads = {method: r[0] for method, r in found.items()}
    assert len({h.quantity["en"] for h in heads.values()}) == 1
    assert heads["spo"].value == pytest.approx(sum(h for h, _ in points) / 3)
    assert heads["spo"].setting["en"] == "α=1, the claims'"
    for method, name in (("sequential-dpo", SEQUENTIAL), ("dpo-on-both", MIXED),
                         ("lagrangian", LAGRANGIAN)):
        at = [curve_at(trade_off_curve(r, name), harmless)
              for r, (_, harmless) in zip(results, points, strict=True)]
        assert heads[method].value == pytest.approx(sum(at) / 3)
        assert heads[method].interval == pytest.approx(mean_interval(at))
        assert (heads[method].n, heads[method].level) == (3, LEVEL)
        assert heads[method].unit == "fine-tuned policies" and heads[method].better == "higher"
    # the headline gap to the reference is the claim's estimate against sequential DPO
    beats, _ = decide_claims(SCALES["smoke"], results, method_summary(results))
    against = {c.name: c.estimate for c in beats.comparisons}
    assert heads["spo"].value - heads["sequential-dpo"].value == pytest.approx(
        against[SEQUENTIAL])
    # claim 2's gains, then each setting's raw scores, the whole round last
    gain = {m: next(r for r in found[m] if r.quantity["en"].startswith("harmless replies gained"))
            for m in ("spo", "sequential-dpo")}
    assert gain["spo"].value == pytest.approx(sum(h - 0.4 for _, h in points) / 3)
    assert gain["sequential-dpo"].value == pytest.approx(0.4)
    assert [r.setting["en"] for r in found["sequential-dpo"][2:]] == [
        "32 of 64 round-2 steps"] * 2 + ["the whole of round 2 (64 steps)"] * 2
    assert "harmless replies gained in round 2" not in [r.quantity["en"]
                                                        for r in found["dpo-on-both"]]


def test_method_rows_head_with_spo_at_the_params_alpha():
    from digestlab.experiments.spo.methods import rows

    points = [(0.6, 0.78), (0.61, 0.7)]
    results = results_for(points)
    for r in results:  # SPO at α=0.5 too: less helpful, less harmless
        r["methods"][spo_name(0.5)] = _scores(0.3, 0.5)
    for alpha, helpful in ((0.5, 0.3), (1.0, 0.605)):
        params = SCALES["smoke"].model_copy(update={"alpha": alpha, "alphas": [0.5, 1.0]})
        found = rows(_result_of(results, params))
        head = found["spo"][0]
        assert head.setting["en"] == f"α={alpha:g}, the claims'"
        assert head.value == pytest.approx(helpful)
        claimed = [r.setting["en"] for r in found["spo"][2:] if "the claims'" in r.setting["en"]]
        assert claimed == [f"α={alpha:g}, the claims'"] * 2  # its helpful and harmless scores
        assert found["sequential-dpo"][0].setting["en"].endswith(f"SPO α={alpha:g} seed by seed")


def test_method_rows_leave_out_a_baseline_the_result_did_not_train():
    from digestlab.experiments.spo.methods import rows

    result = _result_of(results_for([(0.6, 0.78), (0.61, 0.7)]))
    del result["metrics"]["baselines"][LAGRANGIAN]
    assert list(rows(result)) == ["spo", "sequential-dpo", "dpo-on-both"]


def test_credit_holds_spo_s_claims_beside_its_rows():
    from digestlab.methods import credit

    claims = [{"id": c, "verdict": "reproduced"}
              for c in ("spo-beats-the-baselines", "spo-gains-dimension-2")]
    credited = credit(_result_of(results_for([(0.6, 0.78), (0.61, 0.7)]))
                      | {"scale": "smoke", "claims_schema": 3, "claims": claims},
                      ("digestlab.experiments",))
    assert credited["reference"] == "sequential-dpo"
    assert [[c["id"] for c in m["decided"]] for m in credited["methods"]] == [
        ["spo-beats-the-baselines", "spo-gains-dimension-2"], [], [], []]
