"""Scaling Monosemanticity in miniature: the statistics, the clamp, how the claims are
decided, and a whole smoke-scale run."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from digestlab.configs import SAEConfig
from digestlab.experiments.monosemanticity import SCALES
from digestlab.experiments.monosemanticity.run import (
    ANY,
    auroc,
    clamp_hook,
    decide_claims,
    matched_clamp,
    wilson,
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


def test_wilson_interval_holds_the_rate_and_stays_in_zero_one():
    for k, n in [(0, 20), (7, 20), (20, 20)]:
        low, high = wilson(k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0
    assert wilson(50, 100)[1] - wilson(50, 100)[0] > wilson(500, 1000)[1] - wilson(500, 1000)[0]


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
             base_down=0.8, down=0.1, controls=0.05, seeds=3, width=1024) -> dict:
    def steering(base, clamped):
        return {"base": {"rate": base, "n": 200}, "clamped": {"rate": clamped, "n": 200},
                "control_rates": [base + controls] * 4, "fixed_output": {"rate": 0.3}}

    seed_rows = []
    for i in range(seeds):
        jitter = 0.002 * i
        seed_rows.append({
            "explained_variance": ev + jitter, "l0": l0 + jitter,
            "recovered": {"mean-ablation": recovered + jitter, "zero-ablation": 0.999},
            "added_ce": 0.01,
            "best": {name: {"auroc": auroc_ + jitter, "feature": 1}
                     for name in (ANY, "ZeroDivisionError", "NameError", "TypeError",
                                  "IndexError")},
            "steering": {"up": steering(base_up + jitter, up + jitter),
                         "down": steering(base_down + jitter, down + jitter)},
        })
    return {"relu": seed_rows, "l1_coeff": 1.0, "model": {"auroc": {ANY: 0.9}}}


def _verdicts(metrics: dict) -> dict[str, str]:
    params = copy.deepcopy(SCALES["cpu"])
    return {c["id"]: c["verdict"] for c in decide_claims(params, metrics)}


def test_claims_follow_the_measurements():
    assert set(_verdicts(_metrics()).values()) == {"reproduced"}
    bad = _verdicts(_metrics(ev=0.4, recovered=0.5, auroc_=0.7, up=0.2, down=0.7,
                             controls=0.5))
    assert bad == {
        "sae-explains-variance": "not_reproduced", "splicing-costs-little": "not_reproduced",
        "features-detect-bugs": "not_reproduced", "clamp-high-invents-errors": "not_reproduced",
        "clamp-negative-hides-bugs": "not_reproduced", "controls-move-less": "not_reproduced"}
    # L0 near the width is not "far below" it, however much variance is explained
    assert _verdicts(_metrics(l0=600.0))["sae-explains-variance"] == "not_reproduced"


def test_claims_whose_premise_is_missing_are_not_judged():
    # a model that never predicts the errors of buggy programs has nothing to halve, and a
    # feature that moves nothing leaves the controls nothing to fall short of
    verdicts = _verdicts(_metrics(base_down=0.0, down=0.0, up=0.02, controls=0.0))
    assert verdicts["clamp-negative-hides-bugs"] == "inconclusive"
    assert verdicts["controls-move-less"] == "inconclusive"


def test_smoke_run_writes_claims_figures_and_repeats_itself(smoke_runs):
    root, runs = smoke_runs("monosemanticity")
    metrics = runs[0]
    assert [c["id"] for c in metrics["claims"]] == [
        "sae-explains-variance", "splicing-costs-little", "features-detect-bugs",
        "clamp-high-invents-errors", "clamp-negative-hides-bugs", "controls-move-less"]
    assert metrics["figures"] == ["sae_sweep", "feature_activations", "steering"]
    assert (root / "a" / "figures" / "data.json").exists()
    assert len(metrics["metrics"]["relu"]) == len(SCALES["smoke"].sae_seeds)
    assert len(metrics["metrics"]["browser"]) == SCALES["smoke"].browser_features
    for m in runs:
        del m["timing"], m["provenance"]
    assert runs[0] == runs[1]


def test_lambda_is_the_sparse_sae_that_keeps_the_most_loss():
    from digestlab.experiments.monosemanticity.run import choose_l1

    params = SCALES["cpu"]  # width 1024: "sparse" is L0 below 51.2
    sweep = [{"l0": 80.0, "recovered": {"mean-ablation": 0.99}},
             {"l0": 30.0, "recovered": {"mean-ablation": 0.95}},
             {"l0": 20.0, "recovered": {"mean-ablation": 0.90}}]
    assert choose_l1(params, sweep) == 1
    too_dense = [{"l0": 90.0, "recovered": {"mean-ablation": 0.9}},
                 {"l0": 70.0, "recovered": {"mean-ablation": 0.8}}]
    assert choose_l1(params, too_dense) == 1
