"""Cross-Layer Attention (Brandon et al. 2024, arXiv 2405.12981): KV-cache bytes against perplexity.

The spec: designs, params, scales, budgets and the paper's claims. `run.py` trains the designs,
measures their KV caches and decides the claims.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from digestlab.claims import ClaimSpec, ComparisonSpec, TheirNumber, our_bound, paper_bound
from digestlab.configs import GPTConfig, TrainConfig
from digestlab.experiments import Selection

# The designs, as changes to the base config (MHA). "half" is half the base head_dim; "latent"
# and "rope" are the params of the same names.
VARIANTS: dict[str, dict] = {
    "MHA": {},
    "GQA-4": {"n_kv_heads": 4},
    "MQA": {"n_kv_heads": 1},
    "MQA d/2": {"n_kv_heads": 1, "head_dim": "half"},
    "MQA-CLA2": {"n_kv_heads": 1, "kv_share": 2},
    "MQA-CLA3": {"n_kv_heads": 1, "kv_share": 3},
    "MLA": {"kv_latent_dim": "latent", "kv_rope_dim": "rope"},
}
# The designs the paper's claims compare; every scale trains them.
CLAIMED = ("MQA", "MQA-CLA2", "MQA d/2", "MQA-CLA3")


class Params(BaseModel):
    """Everything the CLA experiment takes."""

    model_config = ConfigDict(extra="forbid")

    model: GPTConfig  # the MHA design; VARIANTS changes its attention fields for the others
    designs: list[str]  # which VARIANTS to train, in this order; at least the CLAIMED ones
    latent: int = Field(gt=0)  # MLA's latent KV width
    rope: int = Field(gt=0)  # MLA's decoupled RoPE key width
    corpus: Literal["torch-source", "generated"] = "torch-source"
    n_documents: int = Field(2000, gt=1)  # documents of the generated corpus, when chosen
    common_init: bool = True  # designs of one seed share initial weights where shapes agree
    train: TrainConfig  # the loop's settings; its seed is set per run
    batch_size: int = Field(gt=0)  # sequences per step
    seq_len: int = Field(gt=0)  # tokens per sequence, at most model.block_size
    eval_batches: int = Field(gt=0)  # validation batches of batch_size fixed windows
    curve_every: int = Field(gt=0)  # training steps averaged into one point of the loss curve
    seeds: list[int] = Field(min_length=1)  # each seed trains every design on the same batches
    tuning_seeds: list[int] = []  # seeds the scale's settings were chosen on; they never vote

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.seq_len > self.model.block_size:
            raise ValueError(f"seq_len {self.seq_len} exceeds model.block_size "
                             f"{self.model.block_size}")
        unknown = [d for d in self.designs if d not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown designs {unknown}; known: {', '.join(VARIANTS)}")
        missing = [d for d in CLAIMED if d not in self.designs]
        if missing:
            raise ValueError(f"designs must include {missing}: the claims compare them")
        if len(set(self.designs)) != len(self.designs):
            raise ValueError("designs repeat a name")
        return self


# Seconds each scale may take with `snakemake --cores 2` (cpu) or on one H100-class GPU (gpu);
# benchmarks/experiment_budget.py checks them.
BUDGET_S = {"smoke": 30, "cpu": 900, "gpu": 600}

SCALES = {
    "smoke": Params(
        model=GPTConfig(block_size=64, n_layer=6, d_model=32, n_heads=8, n_kv_heads=8,
                        head_dim=8),
        designs=list(VARIANTS), latent=16, rope=4,
        train=TrainConfig(steps=20, learning_rate=6e-3, min_lr=6e-4, warmup_steps=4, log_every=5,
                          eval_every=10),
        batch_size=8, seq_len=64, eval_batches=4, curve_every=2, seeds=[0, 1],
    ),
    # Sized for 2 cores: 12 single-threaded runs of 2.8M tokens, one per core, about 130 s
    # each. The MLP is narrow (2x) so that attention, the thing compared, carries more of the
    # model. Shorter runs (350-480 steps) left some seeds stalled on the loss plateau near 2.8
    # nats for a hundred steps, which no paired design can average away. The paired spread is
    # training variance, not evaluation noise: a run that falls behind in its first 300 steps,
    # just after warmup, stays behind. The learning rate and warmup were chosen on tuning seeds
    # 0-5 (benchmarks/cla_noise.py), and the claims are scored on seeds 6-8, which the choice
    # never saw. A peak learning rate of 2e-3 rather than 4e-3 cut the CLA2/MQA paired sd from
    # 2.1% to 0.9% over the six tuning seeds at the same cost; the models end 0.05 nats less
    # trained, and MQA d/2 now trails MQA measurably. A warmup of 225 steps rather than 90 then
    # lowered the loss of 17 of 18 runs (MQA, CLA2, MQA d/2 over the tuning seeds; 0.007-0.014
    # nats on average) and the pooled paired sd of CLA2/MQA and CLA2/(MQA d/2) from 1.49% to
    # 1.31% (0.89 -> 0.94%, 1.91 -> 1.60%).
    "cpu": Params(
        model=GPTConfig(block_size=128, n_layer=6, d_model=64, n_heads=4, n_kv_heads=4,
                        head_dim=16, mlp_ratio=2.0),
        designs=list(CLAIMED), latent=16, rope=8,
        train=TrainConfig(steps=900, learning_rate=2e-3, min_lr=2e-4, warmup_steps=225,
                          log_every=225, eval_every=225),
        batch_size=24, seq_len=128, eval_batches=16, curve_every=10, seeds=[6, 7, 8],
        tuning_seeds=[0, 1, 2, 3, 4, 5],
    ),
    # About 100M parameters; 21 runs of 8M tokens (14 runs took 358 s eager on one H200).
    "gpu": Params(
        model=GPTConfig(block_size=512, n_layer=12, d_model=768, n_heads=12, n_kv_heads=12,
                        head_dim=64),
        designs=list(VARIANTS), latent=256, rope=32,
        train=TrainConfig(steps=500, learning_rate=1e-3, min_lr=1e-4, warmup_steps=50,
                          log_every=125, eval_every=125, compile=True),
        batch_size=32, seq_len=512, eval_batches=16, curve_every=10, seeds=[0, 1, 2],
    ),
}

# The cpu scale's learning rate and warmup were chosen by measurement (see its comment): on
# seeds that never vote.
SELECTIONS = (Selection("train.learning_rate and train.warmup_steps", "tuning_seeds", "seeds"),)

# The paper's numbers below are its 1B-parameter models (Table 1: validation perplexity per
# token, KV bytes per token at 16 bits), all trained at one learning rate, 3e-4.
_PAIRED_NOTE = {
    "ko": "우리 비율은 바이트 단위 perplexity의 비율이고, 논문의 비율은 토큰 단위 perplexity의 "
          "비율입니다.",
    "en": "Ours is a ratio of byte-level perplexities, the paper's a ratio of token-level ones.",
}


def _paired(claim_id: str, a: str, b: str, bound, text: dict[str, str],
            theirs: TheirNumber) -> ClaimSpec:
    """A claim decided by the per-seed ratio ppl(a) / ppl(b) being below `bound`."""
    return ClaimSpec(
        id=claim_id, text=text, theirs=theirs,
        comparisons={"ratio": ComparisonSpec(statistic=f"ppl({a}) / ppl({b})", direction="<",
                                             bound=bound, scale="log")},
    )


CLAIMS = {c.id: c for c in (
    ClaimSpec(
        id="cla2-halves-kv", kind="property",
        text={"ko": "MQA-CLA2는 MQA의 토큰당 KV 캐시 바이트를 절반으로 줄인다",
              "en": "MQA-CLA2 halves MQA's KV-cache bytes per token"},
        comparisons={"ratio": ComparisonSpec(
            statistic="bytes(MQA-CLA2) / bytes(MQA)", direction="=", rule="exact",
            bound=paper_bound(0.5, "§2.3 (KV cache memory shrinks by the sharing factor); "
                                   "Table 1"))},
        theirs=TheirNumber(value=5120 / 10240,
                           where="Table 1: H128-MQA-CLA2 5,120 vs H128-MQA 10,240 bytes per "
                                 "token"),
    ),
    _paired(
        "cla2-matches-mqa", "MQA-CLA2", "MQA",
        our_bound(
            1.02,
            ko="논문의 1B 모델에서 차이는 토큰당 +0.44%"
               "(표 1, 13.60 대 13.54)지만 우리는 perplexity를 바이트 단위로 재므로, 토큰당 "
               "약 4바이트라면 바이트당 2%는 토큰당 약 8%입니다. 논문의 차이보다 느슨한 이 "
               "기준은 어떤 실행보다 먼저 이 실험을 설계할 때 정한 것입니다.",
            en="The paper's 1B gap is +0.44% per token (Table 1, "
               "13.60 vs 13.54), but we measure perplexity per byte, where 2% is about 8% per "
               "token at about 4 bytes per token, a looser bar than the paper's gap and the one "
               "this experiment was designed around before any run."),
        {"ko": "MQA-CLA2의 perplexity는 같은 head_dim의 MQA보다 2% 넘게 나쁘지 않다",
         "en": "MQA-CLA2's perplexity is no more than 2% above MQA's at the same head_dim"},
        TheirNumber(value=13.60 / 13.54, where="Table 1: H128-MQA-CLA2 13.60 vs H128-MQA 13.54",
                    note=_PAIRED_NOTE),
    ),
    _paired(
        "cla2-beats-smaller-heads", "MQA-CLA2", "MQA d/2",
        paper_bound(1.0, "§3.2.1 \"Best Performance: MQA + CLA2\", Table 1, Figure 3; "
                         "§3.2.2, Table 3 at tuned learning rates"),
        {"ko": "같은 KV 바이트에서 MQA-CLA2(d)가 MQA(d/2)보다 perplexity가 낮다",
         "en": "At equal KV bytes per token, MQA-CLA2 (d) has lower perplexity than MQA (d/2)"},
        TheirNumber(value=13.60 / 13.81, where="Table 1: H128-MQA-CLA2 13.60 vs H64-MQA 13.81",
                    note=_PAIRED_NOTE),
    ),
    _paired(
        "cla2-beats-cla3", "MQA-CLA2", "MQA-CLA3",
        paper_bound(1.0, "§3.2.1 \"Ablation: MQA + CLA with Sharing Factor > 2\", Table 1; §4"),
        {"ko": "MQA-CLA2가 MQA-CLA3보다 perplexity가 낮다",
         "en": "MQA-CLA2 has lower perplexity than MQA-CLA3"},
        TheirNumber(
            value=13.60 / 13.77, where="Table 1: H128-MQA-CLA2 13.60 vs H128-MQA-CLA3 13.77",
            note={"ko": "같은 head_dim에서의 비교입니다. 논문의 문장은 같은 KV 바이트에서 "
                        "비교합니다(H90-MQA-CLA2 3,600바이트 13.73 대 CLA3 3,584바이트 "
                        "13.77). 우리 비율은 바이트 단위 perplexity의 비율입니다.",
                  "en": "At the same head_dim. The paper's sentence compares them at equal KV "
                        "bytes (H90-MQA-CLA2, 3,600 bytes, 13.73 vs CLA3, 3,584 bytes, 13.77). "
                        "Ours is a ratio of byte-level perplexities."}),
    ),
)}
