"""Cross-Layer Attention (Brandon et al. 2024, arXiv 2405.12981): KV-cache bytes against perplexity.

The spec: designs, params, scales and budgets. `run.py` trains the designs and decides the claims.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from digestlab.configs import GPTConfig, TrainConfig

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
    # just after warmup, stays behind. A peak learning rate of 2e-3 rather than 4e-3 cut the
    # CLA2/MQA paired sd from 2.1% to 0.9% over six seeds (benchmarks/cla_noise.py) at the same
    # cost; the models end 0.05 nats less trained, and MQA d/2 now trails MQA measurably.
    # A warmup of 225 steps rather than 90 then lowered the loss of 17 of 18 runs (MQA, CLA2,
    # MQA d/2 over six seeds; 0.007-0.014 nats on average) and the pooled paired sd of
    # CLA2/MQA and CLA2/(MQA d/2) from 1.49% to 1.31% (0.89 -> 0.94%, 1.91 -> 1.60%).
    "cpu": Params(
        model=GPTConfig(block_size=128, n_layer=6, d_model=64, n_heads=4, n_kv_heads=4,
                        head_dim=16, mlp_ratio=2.0),
        designs=list(CLAIMED), latent=16, rope=8,
        train=TrainConfig(steps=900, learning_rate=2e-3, min_lr=2e-4, warmup_steps=225,
                          log_every=225, eval_every=225),
        batch_size=24, seq_len=128, eval_batches=16, curve_every=10, seeds=[0, 1, 2],
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
