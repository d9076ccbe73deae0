"""The configs of the model and of the training loop: plain, validated data.

They live apart from the code they configure so that importing them costs no torch: the
workflow validates every entry's experiment params against them while it parses the DAG.
Both are pydantic dataclasses: a wrong type or an unknown field fails with the field's name,
and the checks in `__post_init__` run on every construction.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

_STRICT_FIELDS = ConfigDict(extra="forbid")


@dataclass(config=_STRICT_FIELDS)
class GPTConfig:
    """Every knob of the model; the variants of attention are combinations of these fields."""

    vocab_size: int = 256  # byte-level tokens
    block_size: int = 256  # most tokens one sequence may attend over (prompt + cache + new)
    n_layer: int = 4  # transformer blocks
    d_model: int = 64  # residual stream width
    n_heads: int = 4  # query heads
    n_kv_heads: int = 4  # K/V heads: n_heads = MHA, 1 = MQA, a divisor in between = GQA
    head_dim: int = 16  # per-head width, independent of d_model / n_heads
    kv_share: int = 1  # cross-layer KV sharing factor: 1 none, 2 = CLA2, 3 = CLA3
    kv_latent_dim: int = 0  # 0 = off; > 0 = MLA-style latent c_kv width (cached instead of K/V)
    kv_rope_dim: int = 0  # MLA decoupled RoPE key width, shared across heads (latent KV only)
    mlp: str = "swiglu"  # "swiglu" or "gelu"
    mlp_hidden: int = 0  # MLP hidden width; 0 = round(mlp_ratio * d_model)
    mlp_ratio: float = 4.0  # used only when mlp_hidden == 0
    tie_embeddings: bool = True  # output head shares the token embedding matrix
    bias: bool = False  # biases in Linear layers
    dropout: float = 0.0  # on embeddings, attention weights and residual branches
    rope_base: float = 10000.0  # RoPE frequency base

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "block_size",
            "n_layer",
            "d_model",
            "n_heads",
            "n_kv_heads",
            "head_dim",
            "kv_share",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if self.kv_latent_dim < 0 or self.kv_rope_dim < 0 or self.mlp_hidden < 0:
            raise ValueError("kv_latent_dim, kv_rope_dim and mlp_hidden must be >= 0")
        if self.kv_latent_dim > 0:
            if self.kv_rope_dim == 0 or self.kv_rope_dim % 2:
                raise ValueError(
                    f"latent KV needs an even kv_rope_dim > 0 to carry position, got "
                    f"{self.kv_rope_dim}"
                )
        elif self.kv_rope_dim:
            raise ValueError("kv_rope_dim is only used with latent KV (kv_latent_dim > 0)")
        elif self.head_dim % 2:
            raise ValueError(f"RoPE rotates pairs, so head_dim must be even, got {self.head_dim}")
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError(f"mlp must be 'swiglu' or 'gelu', got {self.mlp!r}")
        if self.mlp_hidden == 0 and self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def hidden_dim(self) -> int:
        """MLP hidden width."""
        return self.mlp_hidden or round(self.mlp_ratio * self.d_model)

    @property
    def n_kv_layers(self) -> int:
        """Number of layers that compute (and cache) K/V: ceil(n_layer / kv_share)."""
        return math.ceil(self.n_layer / self.kv_share)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV-cache bytes one token of one sequence costs, over all KV-producing layers."""
        if self.kv_latent_dim > 0:
            per_layer = self.kv_latent_dim + self.kv_rope_dim
        else:
            per_layer = 2 * self.n_kv_heads * self.head_dim
        return self.n_kv_layers * per_layer * dtype_bytes


@dataclass(config=_STRICT_FIELDS)
class TrainConfig:
    """Everything the loop needs besides the model and the objective (data and loss)."""

    steps: int = 200  # optimizer steps
    learning_rate: float = 1e-3  # peak learning rate, reached at the end of warmup
    min_lr: float = 1e-4  # where the decay ends
    warmup_steps: int = 20  # steps of linear warmup from learning_rate / warmup_steps
    decay: Literal["cosine", "linear"] = "cosine"  # the shape of the decay to min_lr
    decay_fraction: float = 1.0  # the decay takes this share of the steps, at the end; after
    # warmup and until it starts, the rate holds at its peak
    weight_decay: float = 0.1  # AdamW decay on matrices and embeddings (not norms or biases)
    grad_clip: float = 1.0  # largest global gradient norm; 0 turns clipping off
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    seed: int = 0  # seeds dropout and the batch sampler; the model is seeded by its builder
    compile: bool = False  # run the model through torch.compile
    autocast: Literal["auto", "bf16", "none"] = "auto"  # auto: bf16 on CUDA, the measured
    # CPU default (train.CPU_AUTOCAST_DEFAULT) on CPU
    log_every: int = 50  # steps between progress lines
    eval_every: int = 0  # steps between validation losses on the curve; 0: only at the end
    accumulate: int = 1  # micro-batches each step's batch is cut into: less memory, same batch

    def __post_init__(self) -> None:
        if self.steps < 1 or self.log_every < 1:
            raise ValueError("steps and log_every must be >= 1")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {self.accumulate}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps], got {self.warmup_steps}")
        if not 0 <= self.min_lr <= self.learning_rate or self.learning_rate <= 0:
            raise ValueError(
                f"need 0 <= min_lr <= learning_rate, learning_rate > 0, got {self.min_lr} and "
                f"{self.learning_rate}"
            )
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("grad_clip and weight_decay must be >= 0")


@dataclass(config=_STRICT_FIELDS)
class SAEConfig:
    """A sparse autoencoder over d_in-wide activations (digestlab/nn/sae.py)."""

    d_in: int = 64  # width of the activations it reads, e.g. the model's d_model
    width: int = 512  # dictionary features
    kind: Literal["relu", "topk"] = "relu"  # relu: Anthropic's 2024 recipe; topk: Gao et al.
    l1_coeff: float = 1.0  # relu: weight of the sparsity penalty sum_i f_i * |d_i|
    l1_warmup: float = 0.05  # relu: the penalty rises linearly from 0 over this share of training
    k: int = 16  # topk: features kept active per input
    # topk's auxiliary loss (AuxK): the aux_k most active dead features reconstruct the error,
    # weighted aux_coeff; None: d_in // 2, 0: off. A feature is dead once it has not fired for
    # dead_after inputs.
    aux_k: int | None = None
    aux_coeff: float = 1 / 32
    dead_after: int = 10_000

    def __post_init__(self) -> None:
        if self.d_in < 1 or self.width < 1:
            raise ValueError("d_in and width must be >= 1")
        if self.l1_coeff < 0:
            raise ValueError(f"l1_coeff must be >= 0, got {self.l1_coeff}")
        if not 0 <= self.l1_warmup <= 1:
            raise ValueError(f"l1_warmup must be in [0, 1], got {self.l1_warmup}")
        if self.kind == "topk" and not 1 <= self.k <= self.width:
            raise ValueError(f"k must be in [1, width], got {self.k}")
        if (self.aux_k is not None and self.aux_k < 0) or self.aux_coeff < 0 \
                or self.dead_after < 1:
            raise ValueError("aux_k and aux_coeff must be >= 0 and dead_after >= 1")

    @property
    def auxiliary_k(self) -> int:
        """The dead features AuxK lets reconstruct the error (0 for relu, or when off)."""
        if self.kind != "topk":
            return 0
        return min(self.width, self.d_in // 2 if self.aux_k is None else self.aux_k)
