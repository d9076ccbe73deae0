"""SPO (Lou et al. 2024): aligning a policy to one preference dimension after another, with the
previous round's implicit reward protecting what was already aligned, against sequential DPO,
DPO on both dimensions' pairs at once, and a Safe-RLHF-style Lagrangian.

The spec: params, scales, budgets and claims. `base_sft.py` fine-tunes the policy every method
starts from, once per seed; `run.py` aligns each seed's policy, round by round, and measures what
the claims are decided on.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from digestlab.claims import ClaimSpec, ComparisonSpec, our_bound, paper_bound
from digestlab.configs import GPTConfig, TrainConfig

BASES = ("sft",)
REPLICATES = {"sft": "seeds"}  # one fine-tuned policy per seed: the seeds replicate it too
# The round-2 methods besides SPO, by the names the results and the figure use
SEQUENTIAL, MIXED, LAGRANGIAN, ORACLE = ("sequential DPO", "DPO on both", "Lagrangian",
                                         "SPO, oracle margin")
BASELINES = (SEQUENTIAL, MIXED, LAGRANGIAN)  # what SPO claims to beat, each traced as a curve


def spo_name(alpha: float) -> str:
    return f"SPO α={alpha:g}"

# The requests' tokens, len(digestlab.data.preferences.TOKENS), written out so that reading the
# spec (which the workflow does while it plans) imports neither the data package nor torch;
# tests/test_spo.py checks that the two agree.
VOCAB_SIZE = 37


class SupervisedPolicy(BaseModel):
    """The policy before alignment: the one GPT, fine-tuned on the persona's replies to
    generated requests (digestlab/data/preferences.py)."""

    model_config = ConfigDict(extra="forbid")

    model: GPTConfig
    train: TrainConfig
    batch_size: int = Field(gt=0)
    n_examples: int = Field(gt=1)  # (request, reply) pairs generated for fine-tuning
    correct_percent: int = Field(50, ge=0, le=100)  # replies that answer correctly
    curt_if_correct: int = Field(70, ge=0, le=100)  # curt replies among the correct ones
    curt_if_wrong: int = Field(30, ge=0, le=100)  # and among the wrong ones

    @model_validator(mode="after")
    def _fits(self) -> SupervisedPolicy:
        if self.model.vocab_size != VOCAB_SIZE:
            raise ValueError(f"model.vocab_size must be {VOCAB_SIZE}, the requests' tokens")
        if self.model.block_size < 10:
            raise ValueError("model.block_size must hold a request and its reply (10 tokens)")
        return self


class Params(BaseModel):
    """Everything the SPO experiment takes."""

    model_config = ConfigDict(extra="forbid")

    sft: SupervisedPolicy
    # each seed fine-tunes its own policy (sft.train.seed) and redraws the pairs, batches and
    # samples of the alignment that follows: the unit of replication
    seeds: list[int] = Field(min_length=1)
    beta: float = Field(gt=0)  # KL weight of every preference loss, both rounds
    alpha: float = Field(gt=0)  # SPO's weight on the previous round's reward, for the claims
    alphas: list[float] = Field(min_length=1)  # SPO's weights shown beside it
    pair_prompts: int = Field(gt=1)  # training requests sampled twice per round for pairs
    batch_size: int = Field(gt=0)  # pairs per step
    round1: TrainConfig  # DPO on dimension 1 (helpful), from the SFT policy
    round2: TrainConfig  # every method's round on dimension 2 (harmless), from round 1
    # Each baseline is trained at several settings, fixed before any run, which trace its
    # trade-off between the two dimensions: sequential DPO stopped early, DPO on both at several
    # shares of helpful pairs in its batches, the Lagrangian at several thresholds.
    curve_steps: list[int] = Field(min_length=1)  # shorter sequential-DPO rounds
    mix_shares: list[float] = Field(min_length=1)  # DPO on both: share of round 1's pairs
    slacks: list[float] = Field(min_length=1)  # the Lagrangian's threshold / round 1's loss
    multiplier_lr: float = Field(gt=0)  # the Lagrangian's dual step
    eval_prompts: int = Field(gt=1)  # held-out requests, sampled `eval_samples` times each
    eval_samples: int = Field(gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.alpha not in self.alphas:
            raise ValueError(f"alpha {self.alpha} must be one of alphas {self.alphas}")
        if any(not 0 < s < self.round2.steps for s in self.curve_steps):
            raise ValueError(f"curve_steps must lie between 0 and round2.steps "
                             f"({self.round2.steps})")
        if any(not 0 < s < 1 for s in self.mix_shares):
            raise ValueError("mix_shares must lie strictly between 0 and 1")
        if any(s < 1 for s in self.slacks):
            raise ValueError("slacks must be at least 1 (a threshold below round 1's own loss "
                             "could never be met)")
        return self


# Seconds each scale may take with `snakemake --cores 2` (cpu) or on one GPU (gpu), the
# fine-tuning included; benchmarks/experiment_budget.py checks them.
BUDGET_S = {"smoke": 30, "cpu": 480, "gpu": 600}


def _policy(d_model: int, n_layer: int, steps: int, n_examples: int) -> SupervisedPolicy:
    heads = max(1, d_model // 16)
    return SupervisedPolicy(
        model=GPTConfig(vocab_size=VOCAB_SIZE, block_size=16, n_layer=n_layer, d_model=d_model,
                        n_heads=heads, n_kv_heads=heads, head_dim=d_model // heads),
        train=TrainConfig(steps=steps, learning_rate=3e-3, min_lr=3e-4,
                          warmup_steps=max(1, steps // 30), log_every=max(1, steps // 10)),
        batch_size=64, n_examples=n_examples,
    )


def _round(steps: int) -> TrainConfig:
    # Preference rounds: a small rate and no weight decay (it would pull towards zero, not
    # towards the reference the KL term is about).
    return TrainConfig(steps=steps, learning_rate=5e-5, min_lr=5e-6,
                       warmup_steps=max(1, steps // 8), weight_decay=0.0,
                       log_every=max(1, steps // 4))


SCALES = {
    "smoke": Params(
        sft=_policy(d_model=32, n_layer=1, steps=300, n_examples=4000),
        seeds=[0, 1], beta=1.0, alpha=1.0, alphas=[1.0], pair_prompts=256, batch_size=16,
        round1=_round(8), round2=_round(8), curve_steps=[4], mix_shares=[0.5],
        slacks=[1.0], multiplier_lr=0.5, eval_prompts=64, eval_samples=2,
    ),
    # The policy learns the persona's tie between correctness and rudeness within 3,000 steps
    # at this size (a smaller or shorter-trained one does not, and then nothing conflicts).
    "cpu": Params(
        sft=_policy(d_model=64, n_layer=2, steps=3000, n_examples=40000),
        seeds=[0, 1, 2, 3], beta=1.0, alpha=1.0, alphas=[0.5, 1.0, 2.0], pair_prompts=8192,
        batch_size=32, round1=_round(128), round2=_round(128), curve_steps=[32, 64],
        mix_shares=[0.1, 0.25, 0.5, 0.75], slacks=[1.0, 1.1, 1.25, 1.5], multiplier_lr=0.5,
        eval_prompts=1024, eval_samples=2,
    ),
    # Not yet run on a GPU: the same comparison on a larger policy, more pairs and samples.
    "gpu": Params(
        sft=_policy(d_model=128, n_layer=4, steps=6000, n_examples=200000),
        seeds=[0, 1, 2, 3, 4], beta=1.0, alpha=1.0, alphas=[0.5, 1.0, 2.0],
        pair_prompts=16384, batch_size=64, round1=_round(128), round2=_round(128),
        curve_steps=[32, 64], mix_shares=[0.1, 0.25, 0.5, 0.75], slacks=[1.0, 1.1, 1.25, 1.5],
        multiplier_lr=0.5, eval_prompts=2048, eval_samples=4,
    ),
}


# --- the claims, fixed before any run ---------------------------------------------------------

GAIN_MARGIN = 0.2  # "comparable": SPO's harmlessness gain at least 80% of sequential DPO's
BASELINE_KO = {SEQUENTIAL: "차례로 돌린 DPO", MIXED: "두 차원을 함께 학습한 DPO",
               LAGRANGIAN: "라그랑주 방식"}

CLAIMS = {c.id: c for c in (
    ClaimSpec(
        id="spo-beats-the-baselines",
        text={"ko": "두 번째 차원(무해함)이 같은 수준일 때, SPO는 첫 번째 차원(도움이 됨)에서 "
                    "차례로 돌린 DPO, 두 차원을 함께 학습한 DPO, 라그랑주 방식보다 각각 "
                    "유의하게 낫다",
              "en": "At matched dimension-2 (harmlessness) scores, SPO is significantly more "
                    "helpful (dimension 1) than each baseline: sequential DPO, DPO on both "
                    "dimensions, and the Lagrangian"},
        comparisons={name: ComparisonSpec(
            statistic={"ko": f"helpful(SPO) − {BASELINE_KO[name]} 곡선(harmless(SPO))",
                       "en": f"helpful(SPO) − {name}'s curve(harmless(SPO))"},
            direction=">",
            bound=paper_bound(0.0, "abstract: “significantly outperforms the baselines”"))
            for name in BASELINES},
    ),
    ClaimSpec(
        id="spo-gains-dimension-2",
        text={"ko": "SPO가 두 번째 차원에서 얻는 점수는 차례로 돌린 DPO와 비슷하다"
                    f"(그 {1 - GAIN_MARGIN:.0%} 이상)",
              "en": "SPO's gain on dimension 2 is comparable to sequential DPO's (at least "
                    f"{1 - GAIN_MARGIN:.0%} of it)"},
        comparisons={"share of the gain": ComparisonSpec(
            statistic=f"gain(SPO) − {1 - GAIN_MARGIN:.1f} × gain(sequential DPO)", direction=">",
            bound=our_bound(
                0.0,
                ko="논문은 '비슷하다'에 한계를 두지 않습니다. "
                   "앞 차원을 지키는 항이 새 차원에서 얻는 것을 얼마간 줄이는 것은 대가로 "
                   "받아들이되, 차례로 돌린 DPO가 얻는 무해함의 80%는 얻어야 한다고 보았습니다.",
                en="The paper sets no margin for a comparable gain; "
                   "the term that protects dimension 1 may cost some of the new gain, but SPO "
                   "must keep 80% of what sequential DPO gains in harmlessness."))},
    ),
)}
