"""Scaling Monosemanticity (Templeton et al. 2024) in miniature: sparse-autoencoder features of a
small model of Python sessions, and steering it with its code-error feature.

The spec: params, scales and budgets. `base_lm.py` trains the program model; `run.py` trains
the SAEs on its residual stream, finds the features that detect bugs and clamps them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from digestlab.configs import GPTConfig, TrainConfig
from digestlab.experiments import LanguageModelParams

BASES = ("lm",)
EV_BAR = 0.65  # claim 1: the paper's bar on the SAE's explained variance


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
    k: int = Field(gt=0)  # the TopK recipe's active features; the sweep's lambda is the one
    # whose L0 comes nearest to it, so the recipes are compared at equal sparsity
    sae_train: TrainConfig
    sae_batch_size: int = Field(gt=0)
    sae_seeds: list[int] = Field(min_length=1)  # SAEs of each recipe trained on the activations
    activation_programs: int = Field(gt=0)  # programs whose every byte gives a training input
    eval_pairs: int = Field(gt=1)  # (clean twin, buggy) programs per error type, held out
    steer_programs: int = Field(gt=1)  # clean and buggy programs each steering run reads
    clamp_multiple: float = Field(4.0, gt=0)  # clamp to +/- this times the max clean activation
    controls: int = Field(8, gt=0)  # random features clamped at a matched norm
    browser_features: int = Field(6, gt=0)  # features shown in the feature browser
    eval_seed: int = 2  # seed of the held-out programs (training used 0)
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
        return self


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


def _sae_train(steps: int) -> TrainConfig:
    # No weight decay: it would shrink the decoder rows the ReLU penalty is weighted by.
    return TrainConfig(steps=steps, learning_rate=2e-3, min_lr=2e-4,
                       warmup_steps=max(1, steps // 20), weight_decay=0.0,
                       log_every=max(1, steps // 5))


SCALES = {
    "smoke": Params(
        lm=_lm(d_model=32, n_layer=2, n_heads=4, steps=30, batch_size=8, n_programs=600),
        layer=0, width=128, l1_coeffs=[1.0, 3.0], k=8, sae_train=_sae_train(60),
        sae_batch_size=128, sae_seeds=[0, 1], activation_programs=100, eval_pairs=8,
        steer_programs=12, controls=2, browser_features=3,
    ),
    # About 3.5 minutes of training on 2 cores (3.1M bytes), then the SAEs, one per core.
    "cpu": Params(
        lm=_lm(d_model=128, n_layer=3, n_heads=8, steps=1500, batch_size=8,
               n_programs=40000),
        layer=1, width=1024, l1_coeffs=[1.0, 2.0, 4.0, 8.0], k=16,
        sae_train=_sae_train(1500), sae_batch_size=256, sae_seeds=[0, 1, 2],
        activation_programs=2000, eval_pairs=100, steer_programs=160,
    ),
    "gpu": Params(
        lm=_lm(d_model=256, n_layer=6, n_heads=16, steps=4000, batch_size=64,
               n_programs=400000, compile=True),
        layer=3, width=4096, l1_coeffs=[1.0, 2.0, 4.0, 8.0, 16.0], k=32,
        sae_train=_sae_train(8000), sae_batch_size=1024, sae_seeds=[0, 1, 2],
        activation_programs=20000, eval_pairs=500, steer_programs=500,
    ),
}
