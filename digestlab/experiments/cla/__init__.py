"""Cross-Layer Attention (Brandon et al. 2024, arXiv 2405.12981): KV-cache bytes against perplexity.

The spec: params, scales and budgets. `run.py` trains the designs and decides the claims.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from digestlab.configs import GPTConfig, TrainConfig


class Params(BaseModel):
    """Everything the CLA experiment takes."""

    model_config = ConfigDict(extra="forbid")

    model: GPTConfig  # the MHA design; run.VARIANTS changes its attention fields for the others
    latent: int = Field(gt=0)  # MLA's latent KV width
    rope: int = Field(gt=0)  # MLA's decoupled RoPE key width
    train: TrainConfig  # the loop's settings; its seed is set per run
    batch_size: int = Field(gt=0)  # sequences per step
    seq_len: int = Field(gt=0)  # tokens per sequence, at most model.block_size
    eval_batches: int = Field(gt=0)  # validation batches of batch_size fixed windows
    n_documents: int = Field(gt=1)  # documents of the generated corpus (10% for validation)
    seeds: list[int] = Field(min_length=1)  # each seed trains every design on the same batches

    @model_validator(mode="after")
    def _sequences_fit(self) -> Params:
        if self.seq_len > self.model.block_size:
            raise ValueError(f"seq_len {self.seq_len} exceeds model.block_size "
                             f"{self.model.block_size}")
        return self


# Seconds each scale may take with `snakemake --cores 2` (cpu) or on one H100-class GPU (gpu);
# benchmarks/experiment_budget.py checks them.
BUDGET_S = {"smoke": 30, "cpu": 900, "gpu": 600}

SCALES = {
    "smoke": Params(
        model=GPTConfig(block_size=64, n_layer=6, d_model=32, n_heads=8, n_kv_heads=8,
                        head_dim=8),
        latent=16, rope=4,
        train=TrainConfig(steps=20, learning_rate=6e-3, min_lr=6e-4, warmup_steps=4, log_every=5),
        batch_size=8, seq_len=64, eval_batches=8, n_documents=60, seeds=[0, 1],
    ),
    # Sized for 2 cores: 21 single-threaded runs of 0.9M tokens each, 55-100 s per run. The
    # MLP is narrow (2x) so that attention, the thing compared, carries more of the model.
    "cpu": Params(
        model=GPTConfig(block_size=128, n_layer=6, d_model=64, n_heads=8, n_kv_heads=8,
                        head_dim=16, mlp_ratio=2.0),
        latent=16, rope=8,
        train=TrainConfig(steps=300, learning_rate=4e-3, min_lr=4e-4, warmup_steps=30,
                          log_every=75),
        batch_size=24, seq_len=128, eval_batches=8, n_documents=1500, seeds=[0, 1, 2],
    ),
    # About 100M parameters; 21 runs of 8M tokens (14 runs took 358 s on one H200).
    "gpu": Params(
        model=GPTConfig(block_size=512, n_layer=12, d_model=768, n_heads=12, n_kv_heads=12,
                        head_dim=64),
        latent=256, rope=32,
        train=TrainConfig(steps=500, learning_rate=1e-3, min_lr=1e-4, warmup_steps=50,
                          log_every=125),
        batch_size=32, seq_len=512, eval_batches=8, n_documents=20000, seeds=[0, 1, 2],
    ),
}
