"""The layers a transformer block is built of, apart from attention: RMSNorm, rotary position
embedding and the feed-forward."""

import torch
from torch import nn
from torch.nn import functional as F

from digestlab.configs import GPTConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale and no bias."""

    def __init__(self, ndim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension, in x's dtype: under autocast a bf16 input (MLA's latent)
        with an fp32 weight would miss the fused kernel."""
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


class Rotary(nn.Module):
    """Rotary position embedding angles for explicit position ids."""

    def __init__(self, dim: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        # not persistent: it is a function of the config, so model files need not carry it
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (cos, sin), each (B, 1, T, dim/2), for position ids of shape (B, T)."""
        # fp32 angles: positions can be large after cache eviction re-assigns them
        angles = positions.float()[..., None] * self.inv_freq  # (B, T, dim/2)
        angles = angles[:, None]  # (B, 1, T, dim/2)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, h, T, d) by the angles (B, 1, T, d/2), GPT-NeoX half-split layout."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class MLP(nn.Module):
    """Position-wise feed-forward: SwiGLU or GELU."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.hidden_dim
        self.swiglu = config.mlp == "swiglu"
        if self.swiglu:
            self.gate_proj = nn.Linear(config.d_model, hidden, bias=config.bias)
        self.up_proj = nn.Linear(config.d_model, hidden, bias=config.bias)
        self.down_proj = nn.Linear(hidden, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the feed-forward to (B, T, d_model)."""
        if self.swiglu:
            h = F.silu(self.gate_proj(x)) * self.up_proj(x)
        else:
            h = F.gelu(self.up_proj(x))
        return self.dropout(self.down_proj(h))
