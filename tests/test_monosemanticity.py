"""Scaling Monosemanticity in miniature: the clamp's matching, what is chosen on which split
and seed, which steering runs are made, how the claims are decided, and a whole smoke-scale
run."""

from __future__ import annotations

import copy
import types
from unittest import mock

import numpy as np
import pytest
import torch

from digestlab.claims import Claim, auroc
from digestlab.data.programs import ERROR_TYPES
from digestlab.experiments import load_spec, param_problems
from digestlab.experiments.monosemanticity import ANY, BUG_TYPES, SCALES, steering
from digestlab.experiments.monosemanticity.heldout import held_out, steering_sets
from digestlab.experiments.monosemanticity.saes import bug_features, choose_l1
from digestlab.experiments.monosemanticity.steering import (
    PLACEMENTS,
    effects,
    matched_clamp,
    steering_jobs,
)
from digestlab.experiments.monosemanticity.verdicts import decide_claims


def test_the_spec_names_the_programs_error_types():
    assert BUG_TYPES == ERROR_TYPES


@pytest.mark.parametrize("positive", [True, False])
def test_matched_clamp_moves_the_feature_by_the_target_mean(positive):
    values = torch.tensor([0.0, 0.0, 0.0, 0.5, 2.0])
    c = matched_clamp(values, 3.0, positive)
    assert (c > 0) == positive
    assert (c - values).abs().mean().item() == pytest.approx(3.0, abs=1e-6)


def _metrics(ev=0.8, l0=10.0, recovered=0.95, general=0.9, ceiling=0.95, base_up=0.02,
             up=0.9, base_down=0.8, down=0.1, controls=0.05, seeds=3) -> dict:
    params = SCALES["cpu"]
    base = {"up": {"feature": {"rate": base_up, "n": 200}},
            "down": {"feature": {"rate": base_down, "n": 200}}}

    def run(direction, clamped, shift):
        return {"feature": {"rate": clamped, "n": 200},
                "controls": [base[direction]["feature"]["rate"] + shift] * 4}

    relu = []
    for i in range(seeds):
        jitter = 0.002 * i
        relu.append({
            "explained_variance": ev + jitter, "l0": l0 + jitter,
            "recovered": {"mean-ablation": recovered + jitter, "zero-ablation": 0.999},
            "general": {name: general + jitter for name in (ANY, *BUG_TYPES)},
            "steering": [{"dose": params.clamp_multiple, "placement": "every",
                          "up": run("up", up + jitter, controls + jitter),
                          "down": run("down", down + jitter, -controls - jitter)}],
        })
    ceilings = ceiling if isinstance(ceiling, dict) else dict.fromkeys((ANY, *BUG_TYPES), ceiling)
    return {"relu": relu, "model": {"auroc": ceilings}, "unclamped": base,
            "steering": effects(params, relu, base)}


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
    bad = _verdicts(_metrics(ev=0.4, recovered=0.5, general=0.6, up=0.2, down=0.6,
                             controls=0.5))
    assert bad == {
        "sae-explains-variance": "not_reproduced", "splicing-costs-little": "not_reproduced",
        "one-feature-detects-every-bug": "not_reproduced",
        "clamp-high-invents-errors": "not_reproduced",
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


def test_the_general_feature_is_held_to_the_models_own_ceiling_type_by_type():
    # the feature keeps (0.72 - 0.5) / (0.9 - 0.5) = 0.55 of the model's margin: over half
    claim = _claims(_metrics(general=0.72, ceiling=0.9))["one-feature-detects-every-bug"]
    assert claim.verdict == "reproduced"
    assert [t.name for t in claim.comparisons] == [ANY, *BUG_TYPES]
    assert claim.comparisons[0].estimate == pytest.approx((0.722 - 0.5) / 0.4, rel=1e-6)
    # against a sharper model the same feature keeps too little: 0.22 / 0.49 = 0.45
    assert _verdicts(_metrics(general=0.72, ceiling=0.99))[
        "one-feature-detects-every-bug"] == "not_reproduced"


def test_a_bug_type_the_model_does_not_tell_apart_is_not_testable_and_the_rest_decide():
    ceilings = {ANY: 0.85, "ZeroDivisionError": 0.9, "NameError": 0.52, "TypeError": 0.9,
                "IndexError": 0.95}
    claim = _claims(_metrics(general=0.8, ceiling=ceilings))["one-feature-detects-every-bug"]
    by_name = {t.name: t for t in claim.comparisons}
    # the feature is at 0.8 on NameError, "over half" of a 0.02 margin: not evidence of anything
    assert by_name["NameError"].verdict == "not_testable"
    assert {t.verdict for n, t in by_name.items() if n != "NameError"} == {"reproduced"}
    assert claim.verdict == "reproduced"
    missing = [p for p in claim.premises if not p.holds]
    assert [(p.comparison, p.value) for p in missing] == [("NameError", 0.52)]
    # a model that tells no bug apart leaves nothing to test
    blind = _claims(_metrics(ceiling=0.55))["one-feature-detects-every-bug"]
    assert blind.verdict == "not_testable"


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
    # the dose the claims are decided at is one of the doses clamped
    assert param_problems(spec, "cpu", {"clamp_multiple": 3.0})


def test_steering_runs_the_fixed_dose_on_every_sae_and_every_dose_on_the_first_relu():
    params = SCALES["cpu"]
    readings = types.SimpleNamespace(params=params, device=torch.device("cpu"))
    scored = [{"kind": kind, "l1_coeff": 1.0, "seed": seed, "state": {},
               "best": {ANY: {"feature": 3}}, "alive": list(range(40))}
              for kind in ("relu", "topk") for seed in params.sae_seeds]
    with mock.patch.multiple(steering, load_sae=mock.DEFAULT,
                             reference_activation=mock.Mock(return_value=2.0)):
        jobs = steering_jobs(readings, scored)
    first = [(dose, placement) for sae, dose, placement in jobs
             if (sae["kind"], sae["seed"]) == ("relu", params.sae_seeds[0])]
    assert first == [(d, p) for d in params.doses for p in PLACEMENTS]
    fixed = [(sae["kind"], sae["seed"], dose, placement) for sae, dose, placement in jobs
             if (sae["kind"], sae["seed"]) != ("relu", params.sae_seeds[0])]
    assert fixed == [("relu", s, params.clamp_multiple, "every") for s in params.sae_seeds[1:]] \
        + [("topk", s, params.clamp_multiple, "every") for s in params.sae_seeds]
    # controls: live features other than the general one, on the ReLU SAEs alone
    for sae, _, _ in jobs:
        assert (sae["feature"], sae["reference"]) == (3, 2.0)
        assert len(sae["controls"]) == (params.controls if sae["kind"] == "relu" else 0)
        assert 3 not in sae["controls"] and set(sae["controls"]) <= set(range(40))
    assert params.controls >= 4


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
        h[:, separating] = torch.from_numpy(data.labels()[ANY]).float()
        return h

    at_output = {"selection": stream(splits["selection"], 0),
                 "evaluation": stream(splits["evaluation"], 1)}
    bugs = bug_features(_Identity(), types.SimpleNamespace(at_output=at_output, splits=splits))
    best = bugs["best"][ANY]
    # feature 0 separates the selection split, so it is chosen, and it is scored on the
    # evaluation split, where it is noise (feature 1, perfect there, is never looked at)
    assert best["feature"] == 0
    assert best["selection_auroc"] == 1.0
    evaluation_labels = splits["evaluation"].labels()[ANY]
    assert best["auroc"] == pytest.approx(auroc(at_output["evaluation"][:, 0].numpy(),
                                                evaluation_labels))
    assert best["auroc"] < 0.9
    # the general feature is the "any bug" one, scored on every type of the evaluation split
    assert bugs["general"][ANY] == best["auroc"]
    assert set(bugs["general"]) == {ANY, *BUG_TYPES}
    # the evaluation split's scores depend on its programs alone
    noise = torch.rand(len(splits["selection"].all), 2, generator=g)
    again = bug_features(_Identity(), types.SimpleNamespace(
        at_output={**at_output, "selection": noise}, splits=splits))
    assert np.array_equal(again["scores"][ANY], bugs["scores"][ANY])


def test_smoke_run_writes_claims_figures_and_repeats_itself(smoke_runs):
    root, runs = smoke_runs("monosemanticity")
    metrics = runs[0]
    params = SCALES["smoke"]
    assert [c["id"] for c in metrics["claims"]] == list(load_spec("monosemanticity").CLAIMS)
    for c in metrics["claims"]:
        assert (c["unit"], c["n"], c["base_models"]) == ("SAE seeds", len(params.sae_seeds), 1)
    assert metrics["figures"] == ["sae_sweep", "feature_activations", "dose_response"]
    assert (root / "a" / "figures" / "data.json").exists()
    # only the scored seeds' SAEs are analysed; the tuning seed's SAEs chose lambda alone
    assert metrics["seeds"] == params.sae_seeds
    for kind in ("relu", "topk"):
        assert [a["seed"] for a in metrics["metrics"][kind]] == params.sae_seeds
    assert [row["l1_coeff"] for row in metrics["metrics"]["sweep"]] == params.l1_coeffs
    assert len(metrics["metrics"]["browser"]) == params.browser_features
    # the first ReLU SAE is steered at every dose, in both placements, beside its controls
    curve = metrics["metrics"]["relu"][0]["steering"]
    assert [(r["dose"], r["placement"]) for r in curve] == [
        (d, p) for d in params.doses for p in PLACEMENTS]
    for r in curve:
        assert len(r["controls"]) == params.controls
        assert len(r["up"]["controls"]) == len(r["down"]["control_bug_free"]) == params.controls
        assert 0 <= r["down"]["bug_free"]["rate"] <= 1
    # the same controls at every dose
    assert len({tuple(r["controls"]) for r in curve}) == 1
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


# --- methods.py: the SAE recipes credited to their papers -----------------------------------------

def _steered(dose: float, placement: str, up: float, down: float) -> dict:
    return {"dose": dose, "placement": placement, "up": {"feature": {"rate": up}},
            "down": {"feature": {"rate": down}}}


def _sae(kind: str, seed: int, ev: float, doses=(4.0,)) -> dict:
    """A scored SAE as metrics["relu"] and metrics["topk"] hold it, with what methods.py reads:
    steered at every dose in `doses`, in both placements, clean programs flipped to errors at a
    rate of dose / 10 and buggy programs kept at 0.5 - dose / 10."""
    return {"kind": kind, "seed": seed, "explained_variance": ev, "l0": 10.0 + seed,
            "recovered": {"mean-ablation": 0.9, "zero-ablation": 0.95},
            "dead_fraction": 0.1 * seed, "best": {ANY: {"feature": 3, "auroc": 0.6}},
            "steering": [_steered(d, p, d / 10, 0.5 - d / 10) for d in doses
                         for p in PLACEMENTS]}


def _result(relu: list[dict], topk: list[dict], clamp: float = 4.0) -> dict:
    """A metrics.json of the cpu scale's params at fixed dose `clamp`, with the SAEs scored."""
    params = SCALES["cpu"].model_dump(mode="json") | {"clamp_multiple": clamp}
    return {"experiment": "monosemanticity", "params": params,
            "metrics": {"relu": relu, "topk": topk}}


def test_method_rows_are_means_over_sae_seeds_with_steering_at_the_params_fixed_dose():
    from digestlab.claims import mean_interval
    from digestlab.experiments.monosemanticity.methods import EXPLAINED, HIDES, INVENTS, rows

    relu = [_sae("relu", 1, 0.8, doses=(1.0, 2.0, 4.0)), _sae("relu", 2, 0.9)]
    topk = [_sae("topk", 1, 0.95), _sae("topk", 2, 0.97)]
    got = rows(_result(relu, topk))
    for kind, evs in (("relu", [0.8, 0.9]), ("topk", [0.95, 0.97])):
        headline = got[kind][0]
        assert headline.quantity == EXPLAINED and headline.better == "higher"
        assert headline.value == pytest.approx(sum(evs) / 2)
        assert headline.interval == pytest.approx(mean_interval(evs))
        assert (headline.n, headline.unit) == (2, "SAE seeds")
    invents, hides = got["relu"][-2:]
    assert (invents.quantity, hides.quantity) == (INVENTS, HIDES)
    # the first ReLU SAE's other doses stay out: 4 is the params' clamp_multiple
    assert invents.value == pytest.approx(0.4) and hides.value == pytest.approx(0.1)
    assert "4 times" in invents.setting["en"] and invents.interval is None


def test_method_rows_steer_at_the_params_dose_among_several_every_sae_was_steered_at():
    from digestlab.experiments.monosemanticity.methods import HIDES, INVENTS, rows

    both = (2.0, 4.0)
    relu = [_sae("relu", 1, 0.8, doses=both), _sae("relu", 2, 0.9, doses=both)]
    for clamp in both:
        invents, hides = rows(_result(relu, [], clamp=clamp))["relu"][-2:]
        assert (invents.quantity, hides.quantity) == (INVENTS, HIDES)
        assert invents.value == pytest.approx(clamp / 10)
        assert hides.value == pytest.approx(0.5 - clamp / 10)
        assert f"{clamp:g} times" in invents.setting["en"]


def test_method_rows_leave_out_an_unmeasured_recipe_and_refuse_an_sae_not_steered_at_the_dose():
    from digestlab.experiments.monosemanticity.methods import rows

    got = rows(_result([_sae("relu", 1, 0.8, doses=(1.0, 4.0))], []))
    assert set(got) == {"relu"}
    with pytest.raises(ValueError, match="relu SAE of seed 2: 0 steering runs at dose 4"):
        rows(_result([_sae("relu", 1, 0.8), _sae("relu", 2, 0.9, doses=(1.0,))], []))


def test_methods_give_every_claim_to_the_relu_recipe_it_is_decided_on():
    from digestlab.experiments.monosemanticity import CLAIMS, methods

    by_id = {m.id: m for m in methods.METHODS}
    assert methods.REFERENCE == "relu" and by_id["relu"].role == "proposed"
    assert sorted(by_id["relu"].claims) == sorted(CLAIMS)
    assert by_id["topk"].role == "baseline" and by_id["topk"].claims == ()
    assert by_id["topk"].paper == "2406.04093"
