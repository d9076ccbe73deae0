"""Causal self-attention, the one part of the block the experiments vary, by config:

- MHA / GQA / MQA: n_kv_heads == n_heads / divides n_heads / == 1.
- Cross-Layer Attention (Brandon et al. 2024, arXiv 2405.12981): with kv_share = s, the first
  layer of each group of s consecutive layers computes K/V; the other s - 1 layers have no K/V
  projections and attend to the producer's K/V with their own queries.
- Latent KV (DeepSeek-V2's MLA, arXiv 2405.04434), kv_latent_dim > 0: K/V are up-projected from
  a small latent c_kv, and a decoupled RoPE key shared across heads carries position; only c_kv
  and that key are cached.
"""

import torch
from torch import nn
from torch.nn import functional as F

from digestlab.configs import GPTConfig
from digestlab.nn.cache import KVCache
from digestlab.nn.layers import RMSNorm, apply_rotary

# K and V as handed from a producing layer to the layers that reuse them:
# k (B, n_kv, S, qk_dim) already rotated, v (B, n_kv, S, hs).
KV = tuple[torch.Tensor, torch.Tensor]
Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin) of Rotary


class CausalSelfAttention(nn.Module):
    """Causal self-attention with GQA/MQA and cross-layer KV sharing."""

    def __init__(self, config: GPTConfig, layer_idx: int, rope_dim: int = 0):
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.rope_dim = rope_dim  # a decoupled RoPE part of q/k (latent KV), else 0
        self.produces_kv = layer_idx % config.kv_share == 0
        self.kv_slot = layer_idx // config.kv_share  # which cache entry this layer's group uses
        self.dropout = config.dropout
        self.q_proj = nn.Linear(config.d_model, self.n_heads * (self.head_dim + rope_dim),
                                bias=config.bias)
        if self.produces_kv:  # consumer layers (CLA) own no K/V parameters at all
            self.kv_projections(config)
        self.out_proj = nn.Linear(self.n_heads * self.head_dim, config.d_model, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def kv_projections(self, config: GPTConfig) -> None:
        """Create the layers that compute K/V from the block's input."""
        self.kv_proj = nn.Linear(config.d_model, 2 * self.n_kv_heads * self.head_dim,
                                 bias=config.bias)

    def compute_kv(self, x: torch.Tensor, rope_k: Rope, cache: KVCache | None) -> KV:
        """Project x to K/V, extend them with the cache, and rotate keys at their positions."""
        B, T, _ = x.shape
        kv = self.kv_proj(x).view(B, T, 2, self.n_kv_heads, self.head_dim)
        k, v = kv.unbind(dim=2)  # (B, T, n_kv, hs) each, keys stored before rotation
        if cache is not None:
            k, v = cache.append(self.kv_slot, k, v)  # (B, S, n_kv, hs) each
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, n_kv, S, hs)
        return apply_rotary(k, *rope_k), v

    def queries(self, x: torch.Tensor, rope_q: Rope) -> torch.Tensor:
        """Project x (B, T, d_model) to rotated queries (B, nh, T, hs + dr)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim + self.rope_dim)
        return self.rotate_queries(q.transpose(1, 2), rope_q)  # (B, nh, T, hs + dr)

    def rotate_queries(self, q: torch.Tensor, rope_q: Rope) -> torch.Tensor:
        """Rotate queries (B, nh, T, hs) by their positions."""
        return apply_rotary(q, *rope_q)

    def forward(
        self,
        x: torch.Tensor,
        rope_q: Rope,
        rope_k: Rope,
        kv: KV | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KV]:
        """Attend causally; producers compute K/V, consumers use the `kv` passed in."""
        B, T, _ = x.shape
        if self.produces_kv:
            kv = self.compute_kv(x, rope_k, cache)
        elif kv is None:
            raise ValueError("a KV-sharing layer needs the K/V of the layer that produces them")
        k, v = kv
        q = self.queries(x, rope_q)  # (B, nh, T, hs + dr)
        # without a mask the plain causal one applies (it aligns queries to the first slot, which
        # is right when nothing is cached); `mask` aligns the new queries after cached slots
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and T > 1,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, nh * hs)
        return self.resid_dropout(self.out_proj(y)), kv


class LatentSelfAttention(CausalSelfAttention):
    """Attention whose K/V come from a cached latent (MLA): the keys' and queries' last
    kv_rope_dim channels carry position (one RoPE key shared across heads), the rest none."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__(config, layer_idx, rope_dim=config.kv_rope_dim)

    def kv_projections(self, config: GPTConfig) -> None:
        self.kv_down = nn.Linear(config.d_model, config.kv_latent_dim, bias=config.bias)
        self.kv_norm = RMSNorm(config.kv_latent_dim)
        self.kv_up = nn.Linear(config.kv_latent_dim, 2 * self.n_kv_heads * self.head_dim,
                               bias=config.bias)
        self.k_rope_proj = nn.Linear(config.d_model, self.rope_dim, bias=config.bias)

    def compute_kv(self, x: torch.Tensor, rope_k: Rope, cache: KVCache | None) -> KV:
        B = x.shape[0]
        c_kv = self.kv_norm(self.kv_down(x))  # (B, T, r)
        k_rope = self.k_rope_proj(x)  # (B, T, dr), stored before rotation
        if cache is not None:
            c_kv, k_rope = cache.append(self.kv_slot, c_kv, k_rope)  # (B, S, r), (B, S, dr)
        S = c_kv.shape[1]
        kv = self.kv_up(c_kv).view(B, S, self.n_kv_heads, 2 * self.head_dim)
        k_nope, v = kv.transpose(1, 2).split(self.head_dim, dim=-1)  # (B, n_kv, S, hs) each
        k_rope = apply_rotary(k_rope[:, None], *rope_k)  # (B, 1, S, dr)
        k_rope = k_rope.expand(B, self.n_kv_heads, S, self.rope_dim)  # (B, n_kv, S, dr)
        return torch.cat([k_nope, k_rope], dim=-1), v  # k (B, n_kv, S, hs + dr)

    def rotate_queries(self, q: torch.Tensor, rope_q: Rope) -> torch.Tensor:
        q_nope, q_rope = q.split([self.head_dim, self.rope_dim], dim=-1)
        return torch.cat([q_nope, apply_rotary(q_rope, *rope_q)], dim=-1)


def attention(config: GPTConfig, layer_idx: int) -> CausalSelfAttention:
    """The attention layer `layer_idx` of a model with this config."""
    if config.kv_latent_dim > 0:
        return LatentSelfAttention(config, layer_idx)
    return CausalSelfAttention(config, layer_idx)
