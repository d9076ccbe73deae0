"""The six claims, decided from the scored ReLU SAEs' per-seed numbers (spec: CLAIMS)."""

from __future__ import annotations

from digestlab.claims import Claim, paired_ratios, summarize
from digestlab.experiments.monosemanticity import (
    ANY,
    BUG_TYPES,
    CLAIMS,
    CONTROL_SHARE,
    Params,
)


def decide_claims(params: Params, metrics: dict) -> list[Claim]:
    """Every claim over the scored ReLU SAEs of the one program model."""
    relu = metrics["relu"]
    steering = metrics["steering"]
    ceiling = metrics["model"]["auroc"]
    over = {"unit": "SAE seeds", "base_models": 1}  # one program model, several SAEs of it

    def mean(values: list[float]) -> float:
        return summarize(values)["mean"]

    up, down = steering["up"], steering["down"]
    n = metrics["unclamped"]["down"]["feature"]["n"]
    # a model that never predicts the errors of the buggy programs would divide by zero; the
    # premise below keeps such a model from being judged at all
    halved = paired_ratios(down["clamped"], [max(b, 1 / n) for b in down["base"]])
    margins = {name: [c - CONTROL_SHARE * f for c, f in zip(
        steering[d]["control_effect"], steering[d]["feature_effect"], strict=True)]
        for name, d in (("clamped high", "up"), ("clamped negative", "down"))}
    # the general feature's margin over chance beside the model's own, SAE seed by SAE seed
    shares = {name: [(r["general"][name] - 0.5, ceiling[name] - 0.5) for r in relu]
              for name in (ANY, *BUG_TYPES)}
    return [
        CLAIMS["sae-explains-variance"].decide({
            "explained variance": [r["explained_variance"] for r in relu],
            "L0 / width": [r["l0"] / params.width for r in relu]}, **over),
        CLAIMS["splicing-costs-little"].decide({
            "loss recovered": [r["recovered"]["mean-ablation"] for r in relu]}, **over),
        CLAIMS["one-feature-detects-every-bug"].decide(
            shares, premises={f"the model tells {name} apart": ceiling[name]
                              for name in (ANY, *BUG_TYPES)}, **over),
        CLAIMS["clamp-high-invents-errors"].decide({
            "before": up["base"], "clamped": up["clamped"]}, **over),
        CLAIMS["clamp-negative-hides-bugs"].decide(
            {"after / before": halved},
            premises={"buggy programs predicted": mean(down["base"])}, **over),
        CLAIMS["controls-move-less"].decide(
            margins,
            premises={"the feature moves": min(mean(up["feature_effect"]),
                                               mean(down["feature_effect"]))}, **over),
    ]
