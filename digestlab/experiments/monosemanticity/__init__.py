"""Scaling Monosemanticity (Templeton et al. 2024) in miniature: sparse-autoencoder features of a
small model of Python sessions, the one feature that detects bugs of every kind, and steering
the model with it.

The spec: params, scales, budgets and the claims. `base_lm.py` trains the program model;
`run.py` runs the analysis: `heldout.py` holds the programs it is judged on and what the model
makes of them, `saes.py` trains and scores the SAEs, `steering.py` clamps the bug feature at a
range of doses, and `verdicts.py` decides the claims.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from digestlab.claims import (
    ClaimSpec,
    ComparisonSpec,
    PremiseSpec,
    TheirNumber,
    our_bound,
    paper_bound,
)
from digestlab.configs import GPTConfig, TrainConfig
from digestlab.experiments import LanguageModelParams, Selection

BASES = ("lm",)
LM_PROGRAM_SEED = 0  # the program model trains on the sessions of this seed (base_lm.py)
ANY = "any bug"
# the error types of digestlab.data.programs (which imports torch, so they are named again here)
BUG_TYPES = ("ZeroDivisionError", "NameError", "TypeError", "IndexError")


class ProgramModel(LanguageModelParams):
    """The model of Python sessions (digestlab/data/programs.py), byte by byte."""

    n_programs: int = Field(gt=1)  # training sessions generated (a tenth held out)
    bug_percent: int = Field(20, ge=0, le=100)  # prints that raise


class Params(BaseModel):
    """Everything the monosemanticity experiment takes."""

    model_config = ConfigDict(extra="forbid")

    lm: ProgramModel
    layer: int = Field(ge=0)  # the SAEs read the residual stream after this block (0-based)
    width: int = Field(gt=0)  # SAE features
    l1_coeffs: list[float] = Field(min_length=1)  # the ReLU recipe's lambda sweep
    k: int = Field(gt=0)  # the TopK recipe's active features, fixed: nothing is chosen for it
    # both recipes train under the SAE module's optimiser (digestlab.nn.sae.training_config)
    sae_steps: int = Field(gt=0)
    sae_learning_rate: float = Field(gt=0)
    sae_batch_size: int = Field(gt=0)
    # The sweep trains a ReLU SAE per lambda on each tuning seed and chooses lambda there; the
    # chosen lambda, and TopK, are then trained on the scored seeds, which alone vote.
    sae_tuning_seeds: list[int] = Field(min_length=1)
    sae_seeds: list[int] = Field(min_length=1)
    activation_programs: int = Field(gt=0)  # programs whose every byte gives a training input
    eval_pairs: int = Field(gt=1)  # (clean twin, buggy) programs per error type, per split
    steer_programs: int = Field(gt=1)  # clean and buggy programs each steering run reads
    # Steering clamps to +/- a dose times the feature's largest activation on clean programs.
    # The claims are decided at `clamp_multiple`, fixed before any run, on every scored SAE;
    # the first scored ReLU SAE is also clamped at every dose, in both placements.
    clamp_multiple: float = Field(4.0, gt=0)
    doses: list[float] = Field(default=[1.0, 2.0, 4.0, 8.0, 16.0], min_length=1)
    controls: int = Field(4, gt=0)  # random features clamped at a matched norm, at each dose
    browser_features: int = Field(6, gt=0)  # features shown in the feature browser
    # Held-out program pairs: the selection split chooses the bug features, judges the lambda
    # sweep and calibrates the clamp; the evaluation split scores and steers.
    selection_seed: int = 4
    eval_seed: int = 2
    activation_seed: int = 3  # seed of the programs the SAEs train on

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.layer >= self.lm.model.n_layer:
            raise ValueError(f"layer {self.layer} must be below lm.model.n_layer "
                             f"({self.lm.model.n_layer})")
        if self.k > self.width:
            raise ValueError(f"k {self.k} exceeds width {self.width}")
        if self.controls >= self.width:
            raise ValueError("controls must be fewer than the SAE's features")
        if self.clamp_multiple not in self.doses:
            raise ValueError(f"clamp_multiple {self.clamp_multiple} must be one of the doses "
                             f"{self.doses}")
        # held-out programs are programs no model trained on (selection against evaluation is
        # SELECTIONS' to check)
        trained_on = {self.activation_seed, LM_PROGRAM_SEED}
        for name in ("selection_seed", "eval_seed"):
            if getattr(self, name) in trained_on:
                raise ValueError(f"{name} {getattr(self, name)} is a seed the program model "
                                 f"({LM_PROGRAM_SEED}) or the SAEs ({self.activation_seed}) "
                                 "trained on")
        return self


# What is chosen by measurement, and on what: neither is ever chosen on what votes.
SELECTIONS = (
    Selection("the ReLU recipe's lambda", "sae_tuning_seeds", "sae_seeds"),
    Selection("the bug features and the clamp calibration", "selection_seed", "eval_seed"),
)

# Seconds each scale may take with `snakemake --cores 2` (cpu) or on one GPU (gpu), base model
# included; benchmarks/experiment_budget.py checks them.
BUDGET_S = {"smoke": 30, "cpu": 480, "gpu": 600}


def _lm(d_model: int, n_layer: int, n_heads: int, steps: int, batch_size: int,
        n_programs: int, compile: bool = False) -> ProgramModel:
    return ProgramModel(
        model=GPTConfig(block_size=256, n_layer=n_layer, d_model=d_model, n_heads=n_heads,
                        n_kv_heads=n_heads, head_dim=d_model // n_heads),
        train=TrainConfig(steps=steps, learning_rate=3e-3, min_lr=3e-4,
                          warmup_steps=max(1, steps // 20), log_every=max(1, steps // 10),
                          eval_every=max(1, steps // 4), compile=compile),
        batch_size=batch_size, seq_len=256, n_programs=n_programs,
    )


SCALES = {
    "smoke": Params(
        lm=_lm(d_model=32, n_layer=2, n_heads=4, steps=30, batch_size=8, n_programs=600),
        layer=0, width=128, l1_coeffs=[1.0, 3.0], k=8, sae_steps=60, sae_learning_rate=2e-3,
        sae_batch_size=128, sae_tuning_seeds=[0], sae_seeds=[1, 2], activation_programs=100,
        eval_pairs=8, steer_programs=12, controls=2, browser_features=3,
    ),
    # About 3 minutes of training on 2 cores (3.1M bytes), then the SAEs, one per core: four
    # lambdas on the tuning seed, then ReLU and TopK on three scored seeds, then the steering.
    "cpu": Params(
        lm=_lm(d_model=128, n_layer=3, n_heads=8, steps=1500, batch_size=8,
               n_programs=40000),
        layer=1, width=1024, l1_coeffs=[1.0, 2.0, 4.0, 8.0], k=16,
        sae_steps=1500, sae_learning_rate=2e-3, sae_batch_size=256, sae_tuning_seeds=[0],
        sae_seeds=[1, 2, 3], activation_programs=2000, eval_pairs=100, steer_programs=160,
    ),
    "gpu": Params(
        lm=_lm(d_model=256, n_layer=6, n_heads=16, steps=4000, batch_size=64,
               n_programs=400000, compile=True),
        layer=3, width=4096, l1_coeffs=[1.0, 2.0, 4.0, 8.0, 16.0], k=32,
        sae_steps=8000, sae_learning_rate=2e-3, sae_batch_size=1024, sae_tuning_seeds=[0],
        sae_seeds=[1, 2, 3], activation_programs=20000, eval_pairs=500, steer_programs=500,
        controls=8,
    ),
}


# --- claims ---------------------------------------------------------------------------------------

EV_BAR = 0.65  # the paper's floor on its SAEs' explained variance
L0_SHARE = 0.05  # "far below the width": at most this share of the features active per byte
RECOVERED_BAR = 0.90
SHARE_OF_CEILING = 0.5  # of the model's own margin over chance, per bug type
REPRESENTED = 0.6  # the model's own AUROC at which it represents a bug type at all
CLEAN_BASE_BELOW, CLAMPED_ABOVE = 0.10, 0.50
HALVED = 0.5
CONTROL_SHARE = 1 / 3
BUGGY_BASE_AT_LEAST = 0.2  # premise of clamp-negative-hides-bugs
EFFECT_AT_LEAST = 0.1  # premise of controls-move-less
KO_DIRECTION = {"clamped high": "크게 고정", "clamped negative": "음수로 고정"}

_SAE_EXPERIMENTS = "Scaling Dictionary Learning, “Our SAE experiments” (#scaling-sae-experiments)"

CLAIMS = {c.id: c for c in (
    ClaimSpec(
        id="sae-explains-variance",
        text={"ko": f"SAE가 분산의 {EV_BAR:.0%} 이상을 설명하고, 활성 특징 수(L0)는 너비보다 훨씬 "
                    "작다",
              "en": f"An SAE explains at least {EV_BAR:.0%} of the variance with L0 far below its "
                    "width"},
        comparisons={
            "explained variance": ComparisonSpec(
                statistic={"ko": "따로 떼어 둔 stream에서의 설명된 분산",
                           "en": "explained variance of the held-out stream"}, direction=">",
                bound=paper_bound(EV_BAR, _SAE_EXPERIMENTS)),
            "L0 / width": ComparisonSpec(
                statistic="L0 / width", direction="<", bound=our_bound(
                    L0_SHARE,
                    ko="논문의 SAE는 특징 100만–3,400만 "
                       "개 가운데 토큰당 300개 미만이 켜지는데(너비의 0.03% 미만), 우리 너비에서는 "
                       "그 비율이 특징 한 개에도 못 미치므로 '너비보다 훨씬 작다'를 너비의 "
                       "20분의 1 미만으로 읽습니다.",
                    en="The paper's SAEs have fewer than 300 of 1M to "
                       "34M features active per token (under 0.03% of the width), a share that "
                       "at our widths is less than one feature, so 'far below the width' is read "
                       "as under a twentieth of it.")),
        },
        theirs=TheirNumber(value=EV_BAR, where=_SAE_EXPERIMENTS, note={
            "ko": "1M, 4M, 34M 특징 SAE 세 개 모두 분산의 65% 이상을 설명하고, 토큰당 켜지는 "
                  "특징은 평균 300개 미만이라고 합니다.",
            "en": "each of its three SAEs (1M, 4M and 34M features) explains at least 65% of the "
                  "variance, with fewer than 300 features active per token on average."}),
    ),
    ClaimSpec(
        id="splicing-costs-little",
        text={"ko": "SAE 재구성을 끼워 넣어도 손실이 거의 늘지 않는다: 평균 대체(mean-ablation) "
                    f"대비 {RECOVERED_BAR:.0%} 이상 회복",
              "en": "Splicing in the SAE costs little: at least "
                    f"{RECOVERED_BAR:.0%} of the loss recovered against mean-ablation"},
        comparisons={"loss recovered": ComparisonSpec(
            statistic={"ko": "평균 대체 대비 회복한 손실",
                       "en": "loss recovered against mean-ablation"},
            direction=">", bound=our_bound(
                RECOVERED_BAR,
                ko="논문에는 회복한 손실 수치가 없습니다. 평균 "
                   "대체로 잃는 손실의 10분의 9를 되찾으면 모델의 행동이 거의 그대로 남고, 뒤의 "
                   "조종 결과도 그 점에 기댑니다.",
                en="The paper gives no loss-recovered figure; winning "
                   "back nine tenths of what mean-ablation loses leaves the model's behaviour "
                   "nearly intact, which the steering results rely on."))},
    ),
    ClaimSpec(
        id="one-feature-detects-every-bug",
        text={"ko": "특징 하나가 모델이 구별하는 모든 종류의 버그를 가려낸다: 오류 종류마다, "
                    "모델 자신의 P(error)가 우연보다 나은 만큼의 절반 이상을 그 특징의 AUROC가 "
                    "보인다: (AUROC − ½) ÷ (모델의 AUROC − ½) > ½",
              "en": "One feature detects bugs of every type the model itself tells apart: for "
                    "each type its AUROC keeps at least half of the margin over chance of the "
                    "model's own P(error), (AUROC − ½) ÷ (the model's AUROC − ½) > ½"},
        comparisons={
            name: ComparisonSpec(
                statistic={"ko": "모델 P(error)의 우연 초과분 가운데 일반 특징의 몫, "
                                 f"{'모든 버그' if name == ANY else name}",
                           "en": f"the general feature's share of the model's margin, {name}"},
                direction=">", rule="ratio-of-means", bound=our_bound(
                    SHARE_OF_CEILING,
                    ko="논문은 여러 종류의 오류에 두루 켜지는 특징 하나를, 얼마나 잘 "
                       "가려내는지 수치 없이 보여 줍니다. 모델이 스스로 내놓는 P(error)는 "
                       "stream에 버그에 대해 담긴 것으로 알려진 최대치(천장)이므로, 한 특징이 "
                       "종류마다 그 천장이 우연보다 나은 만큼의 절반 이상을 지켜야 그 종류를 "
                       "가려낸다고 봅니다.",
                    en="The paper shows one feature firing on errors of "
                       "many kinds, without a number for how well it tells them apart. The "
                       "model's own P(error) is the most the stream is known to hold about a "
                       "bug (the ceiling); a feature that keeps at least half of that ceiling's "
                       "margin over chance, type by type, detects the type rather than brushing "
                       "against it."))
            for name in (ANY, *BUG_TYPES)},
        premises={f"the model tells {name} apart": PremiseSpec(
            text={"ko": "모델 자신의 P(error)가 깨끗한 프로그램과 "
                        f"{'버그 있는 프로그램' if name == ANY else name + ' 프로그램'}을 "
                        f"AUROC {REPRESENTED:g} 이상으로 구별한다",
                  "en": f"the model's own P(error) tells {name} from clean programs with AUROC "
                        f"≥ {REPRESENTED:g}"},
            statistic={"ko": f"모델 P(error)의 AUROC, {'모든 버그' if name == ANY else name}",
                       "en": f"AUROC of the model's P(error), {name}"},
            direction=">=", comparison=name, bound=our_bound(
                REPRESENTED,
                ko="모델이 한 종류의 버그를 우연과 거의 구별하지 못하면 SAE가 찾을 것도 "
                   "없습니다. 종류마다 버그 100개와 깨끗한 프로그램 400개(cpu 규모)에서는 "
                   "우연만으로도 스무 번에 한 번 0.55를 넘으므로, 그보다 확실히 높은 0.6부터 "
                   "모델이 그 종류를 구별한다고 봅니다.",
                en="Where the model itself barely tells a type of bug from "
                   "chance, there is nothing for an SAE to find. With 100 bugs of a type against "
                   "400 clean programs (the cpu scale), chance alone passes 0.55 one time in "
                   "twenty, so the model is taken to tell the type apart from 0.6, clearly "
                   "above that."))
            for name in (ANY, *BUG_TYPES)},
    ),
    ClaimSpec(
        id="clamp-high-invents-errors",
        text={"ko": "코드 오류 특징을 크게 고정하면 멀쩡한 프로그램에서 오류 예측이 "
                    f"{CLEAN_BASE_BELOW:.0%} 미만에서 {CLAMPED_ABOVE:.0%} 초과로 오른다",
              "en": "Clamping the code-error feature high raises error predictions on clean "
                    f"programs from below {CLEAN_BASE_BELOW:.0%} to above {CLAMPED_ABOVE:.0%}"},
        comparisons={
            "before": ComparisonSpec(
                statistic={"ko": "깨끗한 프로그램에서의 오류 예측, 고정 전",
                           "en": "error predictions on clean programs, unclamped"}, direction="<",
                bound=our_bound(
                    CLEAN_BASE_BELOW,
                    ko="논문의 멀쩡한 코드에는 고정하기 전에 "
                       "오류가 없습니다. 이미 깨끗한 프로그램 열 개 중 하나꼴로 오류를 예측하는 "
                       "모델이라면 고정이 지어낸 오류라고 하기 어렵습니다.",
                    en="The paper's bug-free code shows no error "
                       "before the clamp; a model that already predicts errors on one clean "
                       "program in ten would leave little for the clamp to invent.")),
            "clamped": ComparisonSpec(
                statistic={"ko": "깨끗한 프로그램에서의 오류 예측, 특징을 크게 고정",
                           "en": "error predictions on clean programs, feature clamped high"},
                direction=">", bound=our_bound(
                    CLAMPED_ABOVE,
                    ko="논문은 고정한 모델이 버그 없는 코드에 "
                       "오류 메시지를 쓰는 예를 비율 없이 보여 줍니다. 절반을 넘어야 고정이 예측을 "
                       "살짝 미는 것이 아니라 오류를 지어낸다고 읽을 수 있습니다.",
                    en="The paper shows the clamped model writing "
                       "error messages for bug-free code without a rate; more often than not is "
                       "the least that reads as inventing errors rather than nudging the "
                       "prediction.")),
        },
    ),
    ClaimSpec(
        id="clamp-negative-hides-bugs",
        text={"ko": "코드 오류 특징을 음수로 고정하면 버그 있는 프로그램에서 오류 예측이 "
                    "절반 이하로 준다",
              "en": "Clamping the code-error feature negative at least halves the error "
                    "predictions on buggy programs"},
        comparisons={"after / before": ComparisonSpec(
            statistic={"ko": "버그 있는 프로그램에서의 오류 예측, 고정 후 / 고정 전",
                       "en": "error predictions on buggy programs, clamped / unclamped"},
            direction="<", bound=our_bound(
                HALVED,
                ko="논문은 음수로 고정한 모델이 버그를 지나치는 "
                   "예를 하나씩 보여 줄 뿐입니다. 절반으로 줄어드는 것을, 고정의 잡음이 아니라 "
                   "버그를 감춘다고 부를 수 있는 가장 작은 변화로 봅니다.",
                en="The paper shows single examples of the "
                   "negatively clamped model passing over the bug; halving the rate is the "
                   "smallest change we would call hiding the bug rather than noise of the "
                   "clamp."))},
        premises={"buggy programs predicted": PremiseSpec(
            text={"ko": "고정하지 않은 모델이 버그 있는 프로그램의 오류를 20% 이상 예측한다",
                  "en": "the model predicts the errors of buggy programs at least 20% of the "
                        "time unclamped"},
            statistic={"ko": "버그 있는 프로그램에서의 오류 예측, 고정 전",
                       "en": "error predictions on buggy programs, unclamped"}, direction=">=",
            bound=our_bound(
                BUGGY_BASE_AT_LEAST,
                ko="절반으로 줄이려면 줄일 것이 있어야 합니다. "
                   "버그 있는 프로그램 다섯 개 중 하나보다 드물게 오류를 예측하는 모델에서는 "
                   "줄어든 폭을 조종용 프로그램에 대한 잡음과 가려낼 수 없습니다.",
                en="Halving needs something to halve; below one "
                   "buggy program in five the drop could not be told from the noise over the "
                   "steering programs."))},
    ),
    ClaimSpec(
        id="controls-move-less",
        text={"ko": "같은 크기로 residual stream을 바꾸는 무작위 특징 고정은 오류 예측을 그 "
                    "3분의 1 미만으로만 바꾼다",
              "en": "Random features clamped to change the residual stream by as much move the "
                    "error predictions by less than a third as much"},
        comparisons={
            direction: ComparisonSpec(
                statistic={"ko": f"대조군 효과 − 특징 효과 / 3, {KO_DIRECTION[direction]}",
                           "en": f"control effect − feature effect / 3, {direction}"},
                direction="<",
                bound=our_bound(
                    0.0,
                    ko="논문은 같은 크기로 맞춘 무작위 특징과 "
                       "비교하지 않습니다. 3분의 1로 정해, 특징의 효과가 stream을 같은 만큼 미는 "
                       "아무 특징의 효과보다 확실히 크도록 했습니다.",
                    en="The paper makes no comparison with matched "
                       "random features; a third makes the feature's effect stand well clear of "
                       "what any push of the stream by as much does."))
            for direction in ("clamped high", "clamped negative")},
        premises={"the feature moves": PremiseSpec(
            text={"ko": "특징을 고정하면 두 방향 모두에서 오류 예측이 10%p 이상 움직인다",
                  "en": "clamping the feature moves the error predictions by at least 10 points "
                        "in each direction"},
            statistic={"ko": "오류 예측에 대한 특징의 효과, 작은 쪽 방향",
                       "en": "feature effect on the error predictions, smaller direction"},
            direction=">=", bound=our_bound(
                EFFECT_AT_LEAST,
                ko="대조군은 특징 자체의 효과에 견주어 잽니다. "
                   "특징을 고정해도 오류 예측이 10%p도 움직이지 않으면, 그 3분의 1은 조종용 "
                   "프로그램으로 가려낼 수 있는 크기보다 작습니다.",
                en="The controls are measured against the feature's "
                   "own effect; where clamping the feature moves the predictions by less than "
                   "ten points, a third of that is below what the steering programs resolve."))},
    ),
)}
