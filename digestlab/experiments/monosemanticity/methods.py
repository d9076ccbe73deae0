"""The two SAE recipes the monosemanticity experiment trains, each credited to its paper: the
ReLU SAE with an L1 penalty, the reproduced paper's recipe (Towards Monosemanticity's, as
Scaling Monosemanticity scales it), which decides every claim, and the TopK SAE of Gao et al.
beside it, trained on the same activations and seeds and scored the same way.

Every row is a mean over the scored SAE seeds of one program model; steering at the claims'
fixed dose (the params' `clamp_multiple`), which every scored SAE is steered at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from digestlab.claims import Text
from digestlab.experiments.monosemanticity import ANY
from digestlab.methods import Method, Row, mean_row

RELU, TOPK = "relu", "topk"  # also the keys of their SAEs in the metrics

METHODS = (
    Method(
        id=RELU, name="ReLU SAE (L1)",
        paper="https://transformer-circuits.pub/2024/scaling-monosemanticity/index.html",
        role="proposed",
        how={"ko": "L1 벌점을 건 ReLU SAE를 튜닝 시드에서 고른 λ로 파이썬 세션 모델의 residual "
                   "stream에 여러 시드로 학습하고, 따로 떼어 둔 프로그램에서 재구성, 버그를 "
                   "가려내는 특징, 그 특징을 고정해 모델을 조종하는 효과를 채점합니다.",
             "en": "ReLU SAEs with an L1 penalty, at a λ chosen on a tuning seed, are trained on "
                   "the residual stream of a small model of Python sessions from several seeds "
                   "and scored on held-out programs for reconstruction, for a feature that "
                   "detects bugs, and for steering the model by clamping that feature."},
        # the claims are all decided on the ReLU SAEs
        claims=("sae-explains-variance", "splicing-costs-little",
                "one-feature-detects-every-bug", "clamp-high-invents-errors",
                "clamp-negative-hides-bugs", "controls-move-less"),
    ),
    Method(
        id=TOPK, name="TopK SAE", paper="2406.04093", role="baseline",
        how={"ko": "벌점 없이 사전 활성값이 가장 큰 특징 k개만 남기는 TopK SAE를, 아무것도 "
                   "튜닝하지 않고 ReLU SAE와 같은 활성값과 시드로 학습해 같은 방식으로 "
                   "채점합니다.",
             "en": "TopK SAEs, which keep the k features of largest pre-activation with no "
                   "penalty and nothing tuned, are trained on the same activations and seeds as "
                   "the ReLU SAEs and scored the same way."},
    ),
)
REFERENCE = RELU

EXPLAINED: Text = {"ko": "따로 떼어 둔 stream에서의 설명된 분산",
                   "en": "explained variance of the held-out stream"}
L0: Text = {"ko": "바이트당 활성 특징 수(L0)", "en": "active features per byte (L0)"}
RECOVERED: Text = {"ko": "평균 대체 대비 회복한 손실", "en": "loss recovered against mean-ablation"}
DEAD: Text = {"ko": "한 번도 켜지지 않은 특징의 비율", "en": "share of features never active"}
DETECTS: Text = {"ko": "어느 버그든 가려내도록 고른 특징의 AUROC",
                 "en": "AUROC of the feature chosen to detect any bug"}
INVENTS: Text = {"ko": "깨끗한 프로그램에서의 오류 예측, 특징을 크게 고정",
                 "en": "error predictions on clean programs, feature clamped high"}
HIDES: Text = {"ko": "버그 있는 프로그램에서의 오류 예측, 특징을 음수로 고정",
               "en": "error predictions on buggy programs, feature clamped negative"}


def steered_at(sae: Mapping[str, Any], dose: float) -> Mapping[str, Any]:
    """An SAE's steering run clamped at `dose` at every position."""
    found = [r for r in sae["steering"] if r["dose"] == dose and r["placement"] == "every"]
    if len(found) != 1:
        raise ValueError(f"{sae['kind']} SAE of seed {sae['seed']}: {len(found)} steering runs "
                         f"at dose {dose:g} at every position, not one")
    return found[0]


def sae_rows(saes: list[Mapping[str, Any]], dose: float) -> list[Row]:
    """One recipe's numbers over its SAE seeds, explained variance first, then its steering at
    `dose`."""
    def over(quantity: Text, values: list[float], setting: Text | None = None,
             better: Literal["lower", "higher"] | None = None) -> Row:
        return mean_row(quantity, values, "SAE seeds", setting, better=better)

    out = [over(EXPLAINED, [s["explained_variance"] for s in saes], better="higher"),
           over(L0, [s["l0"] for s in saes]),
           over(RECOVERED, [s["recovered"]["mean-ablation"] for s in saes], better="higher"),
           over(DEAD, [s["dead_fraction"] for s in saes], better="lower"),
           over(DETECTS, [s["best"][ANY]["auroc"] for s in saes], better="higher")]
    at = {"ko": f"깨끗한 프로그램에서 낸 최대 활성값의 {dose:g}배로, 모든 위치에서",
          "en": f"at every position, {dose:g} times its largest activation on clean programs"}
    steered = [steered_at(s, dose) for s in saes]
    out += [over(INVENTS, [r["up"]["feature"]["rate"] for r in steered], at, "higher"),
            over(HIDES, [r["down"]["feature"]["rate"] for r in steered], at, "lower")]
    return out


def rows(result: Mapping[str, Any]) -> dict[str, list[Row]]:
    """Each recipe's rows over its scored SAE seeds, steering at the claims' fixed dose."""
    metrics = result["metrics"]
    dose = float(result["params"]["clamp_multiple"])
    saes = {kind: metrics.get(kind) or [] for kind in (RELU, TOPK)}
    return {kind: sae_rows(found, dose) for kind, found in saes.items() if found}
