"""Scaling Monosemanticity in miniature: the statistics, the clamp, what is chosen on which
split and seed, how the claims are decided, and a whole smoke-scale run."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from digestlab.claims import Claim
from digestlab.configs import SAEConfig
from digestlab.experiments import load_spec, param_problems
from digestlab.experiments.monosemanticity import SCALES
from digestlab.experiments.monosemanticity.run import (
    ANY,
    auroc,
    bug_features,
    choose_l1,
    clamp_hook,
    decide_claims,
    held_out,
    matched_clamp,
    steering_effects,
    steering_sets,
)
from digestlab.nn.sae import SparseAutoencoder


def test_auroc_is_the_share_of_positive_negative_pairs_ranked_right_ties_half():
    scores = torch.tensor([[0.0, 3.0], [0.0, 1.0], [2.0, 1.0], [1.0, 0.0], [0.0, 2.0]])
    positive = torch.tensor([True, False, True, False, False])
    got = auroc(scores, positive)
    for column in range(2):
        pairs = list(itertools.product(scores[positive, column], scores[~positive, column]))
        expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
        assert got[column].item() == pytest.approx(expected)
    with pytest.raises(ValueError):
        auroc(scores, torch.zeros(5, dtype=torch.bool))


@pytest.mark.parametrize("positive", [True, False])
def test_matched_clamp_moves_the_feature_by_the_target_mean(positive):
    values = torch.tensor([0.0, 0.0, 0.0, 0.5, 2.0])
    c = matched_clamp(values, 3.0, positive)
    assert (c > 0) == positive
    assert (c - values).abs().mean().item() == pytest.approx(3.0, abs=1e-6)


def test_clamp_changes_the_stream_along_the_feature_only_and_by_the_set_amount():
    sae = SparseAutoencoder(SAEConfig(d_in=8, width=32, kind="relu"),
                            torch.Generator().manual_seed(0))
    sae.fit_to(torch.randn(200, 8) * 2)
    h = torch.randn(3, 5, 8) * 2
    with torch.no_grad():
        f = sae.encode(h)[..., 4]
        moved = clamp_hook(sae, 4, 5.0)(h) - h
        direction = sae.decoder()[4] / sae.input_scale
        assert torch.allclose(moved, (5.0 - f)[..., None] * direction, atol=1e-5)
        # clamping a feature to the value it has changes nothing
        same = clamp_hook(sae, 4, 0.0)
        untouched = h[f == 0]
        assert torch.allclose(same(untouched[None])[0], untouched, atol=1e-6)


def _metrics(ev=0.8, l0=10.0, recovered=0.95, auroc_=0.95, base_up=0.02, up=0.9,
             base_down=0.8, down=0.1, controls=0.05, seeds=3) -> dict:
    def steering(base, clamped):
        return {"base": {"rate": base, "n": 200}, "clamped": {"rate": clamped, "n": 200},
                "control_rates": [base + controls] * 4}

    relu = []
    for i in range(seeds):
        jitter = 0.002 * i
        relu.append({
            "explained_variance": ev + jitter, "l0": l0 + jitter,
            "recovered": {"mean-ablation": recovered + jitter, "zero-ablation": 0.999},
            "best": {name: {"auroc": auroc_ + jitter, "feature": 1}
                     for name in (ANY, "ZeroDivisionError", "NameError", "TypeError",
                                  "IndexError")},
            "steering": {"up": steering(base_up + jitter, up + jitter),
                         "down": steering(base_down + jitter, down + jitter)},
        })
    return {"relu": relu, "steering": steering_effects(relu)}


def _claims(metrics: dict) -> dict[str, Claim]:
    return {c.id: c for c in decide_claims(copy.deepcopy(SCALES["cpu"]), metrics)}


def _verdicts(metrics: dict) -> dict[str, str]:
    return {name: c.verdict for name, c in _claims(metrics).items()}


def test_claims_are_typed_records_over_the_sae_seeds_of_one_model():
    claims = _claims(_metrics(seeds=3))
    assert list(claims) == list(load_spec("monosemanticity").CLAIMS)
    for c in claims.values():
        assert isinstance(c, Claim)
        assert (c.unit, c.n, c.base_models) == ("SAE seeds", 3, 1)
    # the multi-part claims are decided by several comparisons, each on its own values
    assert [t.name for t in claims["sae-explains-variance"].comparisons] == [
        "explained variance", "L0 / width"]
    assert claims["sae-explains-variance"].comparisons[1].values == pytest.approx(
        [(10.0 + 0.002 * i) / SCALES["cpu"].width for i in range(3)])
    assert [t.name for t in claims["clamp-high-invents-errors"].comparisons] == [
        "before", "clamped"]
    assert claims["sae-explains-variance"].comparisons[0].bound.source == "paper"


def test_claims_follow_the_measurements():
    assert set(_verdicts(_metrics()).values()) == {"reproduced"}
    bad = _verdicts(_metrics(ev=0.4, recovered=0.5, auroc_=0.7, up=0.2, down=0.6,
                             controls=0.5))
    assert bad == {
        "sae-explains-variance": "not_reproduced", "splicing-costs-little": "not_reproduced",
        "features-detect-bugs": "not_reproduced", "clamp-high-invents-errors": "not_reproduced",
        "clamp-negative-hides-bugs": "not_reproduced", "controls-move-less": "not_reproduced"}
    # L0 near the width is not "far below" it, however much variance is explained
    assert _verdicts(_metrics(l0=600.0))["sae-explains-variance"] == "not_reproduced"
    # a model that already predicts errors on clean programs leaves the clamp nothing to invent
    assert _verdicts(_metrics(base_up=0.3))["clamp-high-invents-errors"] == "not_reproduced"


def test_claims_whose_premise_is_missing_are_not_testable_with_their_numbers_kept():
    # a model that never predicts the errors of buggy programs has nothing to halve, and a
    # feature that moves nothing leaves the controls nothing to fall short of
    claims = _claims(_metrics(base_down=0.0, down=0.0, up=0.02, controls=0.0))
    for name in ("clamp-negative-hides-bugs", "controls-move-less"):
        assert claims[name].verdict == "not_testable"
        assert not claims[name].premises[0].holds
        assert all(len(t.values) == 3 for t in claims[name].comparisons)
    # a premise that holds leaves the verdict to the comparisons, unwelcome or not
    unwelcome = _claims(_metrics(down=0.7))["clamp-negative-hides-bugs"]
    assert unwelcome.premises[0].holds and unwelcome.verdict == "not_reproduced"


def test_param_problems_refuse_tuning_seeds_that_vote_and_one_split_for_both():
    spec = load_spec("monosemanticity")
    for scale in ("smoke", "cpu", "gpu"):
        assert param_problems(spec, scale, {}) == []
        params = SCALES[scale]
        assert not set(params.sae_tuning_seeds) & set(params.sae_seeds)
        assert params.selection_seed != params.eval_seed
    assert [field for field, _ in param_problems(spec, "cpu", {"sae_tuning_seeds": [0, 2]})] == [
        "sae_tuning_seeds"]
    assert [field for field, _ in param_problems(spec, "cpu", {"selection_seed": 2})] == [
        "selection_seed"]
    # nor may either split be programs a model trained on
    assert param_problems(spec, "cpu", {"selection_seed": SCALES["cpu"].activation_seed})
    assert param_problems(spec, "cpu", {"eval_seed": 0})


def test_selection_and_evaluation_splits_share_no_program_and_steering_reads_evaluation():
    params = SCALES["smoke"]
    selection = held_out(params, params.selection_seed)
    evaluation = held_out(params, params.eval_seed)
    chosen_on = {p.text() for p in selection.all}
    scored = {p.text() for p in evaluation.all}
    assert len(chosen_on) > len(selection.all) // 2 and not chosen_on & scored
    clean, buggy = steering_sets(params, evaluation)
    assert {p.text() for p in clean + buggy} <= scored


class _Identity:
    """An SAE whose features are the stream's own coordinates."""

    b_dec = torch.zeros(1)

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return h


def test_bug_features_are_chosen_on_the_selection_split_and_scored_on_the_evaluation_split():
    params = SCALES["smoke"]
    splits = {"selection": held_out(params, params.selection_seed),
              "evaluation": held_out(params, params.eval_seed)}
    g = torch.Generator().manual_seed(0)

    def stream(data, separating: int) -> torch.Tensor:
        # feature `separating` fires on the buggy programs alone; the other is noise
        h = torch.rand(len(data.all), 2, generator=g)
        h[:, separating] = data.labels()[ANY].float()
        return h

    at_output = {"selection": stream(splits["selection"], 0),
                 "evaluation": stream(splits["evaluation"], 1)}
    bugs = bug_features(_Identity(), at_output, splits)
    best = bugs["best"][ANY]
    # feature 0 separates the selection split, so it is chosen, and it is scored on the
    # evaluation split, where it is noise (feature 1, perfect there, is never looked at)
    assert best["feature"] == 0
    assert best["selection_auroc"] == 1.0
    evaluation_labels = splits["evaluation"].labels()[ANY]
    assert best["auroc"] == pytest.approx(
        auroc(at_output["evaluation"][:, :1], evaluation_labels)[0].item())
    assert best["auroc"] < 0.9
    # the evaluation split's scores depend on its programs alone
    noise = torch.rand(len(splits["selection"].all), 2, generator=g)
    again = bug_features(_Identity(), {**at_output, "selection": noise}, splits)
    assert torch.equal(again["scores"][ANY], bugs["scores"][ANY])


def test_smoke_run_writes_claims_figures_and_repeats_itself(smoke_runs):
    root, runs = smoke_runs("monosemanticity")
    metrics = runs[0]
    params = SCALES["smoke"]
    assert [c["id"] for c in metrics["claims"]] == [
        "sae-explains-variance", "splicing-costs-little", "features-detect-bugs",
        "clamp-high-invents-errors", "clamp-negative-hides-bugs", "controls-move-less"]
    for c in metrics["claims"]:
        assert (c["unit"], c["n"], c["base_models"]) == ("SAE seeds", len(params.sae_seeds), 1)
    assert metrics["figures"] == ["sae_sweep", "feature_activations", "steering"]
    assert (root / "a" / "figures" / "data.json").exists()
    # only the scored seeds' SAEs are analysed; the tuning seed's SAEs chose lambda alone
    assert metrics["seeds"] == params.sae_seeds
    for kind in ("relu", "topk"):
        assert [a["seed"] for a in metrics["metrics"][kind]] == params.sae_seeds
    assert [row["l1_coeff"] for row in metrics["metrics"]["sweep"]] == params.l1_coeffs
    assert len(metrics["metrics"]["browser"]) == params.browser_features
    for m in runs:
        del m["timing"], m["provenance"]
    assert runs[0] == runs[1]


def test_lambda_is_the_sparse_sae_that_keeps_the_most_loss():
    params = SCALES["cpu"]  # width 1024: "sparse" is L0 below 51.2
    sweep = [{"l0": 80.0, "recovered": 0.99}, {"l0": 30.0, "recovered": 0.95},
             {"l0": 20.0, "recovered": 0.90}]
    assert choose_l1(params, sweep) == 1
    too_dense = [{"l0": 90.0, "recovered": 0.9}, {"l0": 70.0, "recovered": 0.8}]
    assert choose_l1(params, too_dense) == 1
