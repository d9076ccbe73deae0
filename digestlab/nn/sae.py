"""Sparse autoencoders: a dictionary of features for any (N, d) tensor of activations.

An SAE writes each activation x as a sparse, non-negative combination of learned directions,
x ~ b_dec + sum_i f_i(x) d_i, with f = encode(x) and d_i the rows of W_dec. Two recipes:

- "relu", Anthropic's 2024 recipe (Scaling Monosemanticity and its April 2024 update):
  f = ReLU(W_enc (x - b_dec) + b_enc), decoder rows free in norm, and the loss
      L = E ||x - x_hat||^2 + lambda * E sum_i f_i(x) ||d_i||,
  the L1 penalty weighted by each decoder row's norm so that shrinking f while growing d_i
  buys nothing.
- "topk", Gao et al. 2024 (Scaling and evaluating sparse autoencoders): only the k largest
  pre-activations survive (then ReLU), decoder rows kept at unit norm, the loss the MSE alone.

Inputs are scaled by one constant so that their mean squared norm is d_in (fit once on the
data by `fit_to`), which makes lambda comparable across layers and models. The SAE trains
with the one training loop (`objective` builds its Objective); `synthetic_activations` makes
data with known ground-truth features to check that an SAE finds them.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from digestlab.configs import SAEConfig
from digestlab.train import Batch, Objective

DENSE_FREQUENCY = 0.1  # a feature active on more than this share of inputs counts as dense


class SparseAutoencoder(nn.Module):
    """One hidden layer of `width` sparse features over `d_in`-wide inputs."""

    def __init__(self, config: SAEConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        d, w = config.d_in, config.width
        # Random directions; the encoder starts as the decoder's transpose (both recipes).
        directions = torch.randn(w, d, generator=generator)
        directions = directions / directions.norm(dim=1, keepdim=True)
        if config.kind == "relu":
            directions = directions * 0.1  # small rows: the penalty sees small features at first
        self.W_dec = nn.Parameter(directions)  # (width, d_in): row i is feature i's direction
        self.W_enc = nn.Parameter(directions.T.clone())  # (d_in, width)
        self.b_enc = nn.Parameter(torch.zeros(w))
        self.b_dec = nn.Parameter(torch.zeros(d))
        # multiplies raw inputs so that their mean squared norm is d_in; set by fit_to
        self.register_buffer("input_scale", torch.ones(()))

    @torch.no_grad()
    def fit_to(self, x: torch.Tensor) -> None:
        """Set the input scale from activations x (N, d_in), and b_dec to their scaled mean."""
        x = x.float()
        self.input_scale.fill_(math.sqrt(self.config.d_in / x.pow(2).sum(-1).mean().item()))
        self.b_dec.copy_((x * self.input_scale).mean(0))

    def decoder(self) -> torch.Tensor:
        """The decoder rows as used: unit norm for topk, as learned for relu. (width, d_in)"""
        if self.config.kind == "topk":
            return self.W_dec / self.W_dec.norm(dim=1, keepdim=True)
        return self.W_dec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations f (..., width) of raw inputs x (..., d_in)."""
        pre = (x * self.input_scale - self.b_dec) @ self.W_enc + self.b_enc  # (..., width)
        if self.config.kind == "topk":
            top = pre.topk(self.config.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, F.relu(top.values))
        return F.relu(pre)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction (..., d_in), in the inputs' own units, of features f (..., width)."""
        return (f @ self.decoder() + self.b_dec) / self.input_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, features) of raw inputs x."""
        f = self.encode(x)
        return self.decode(f), f

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The recipe's training loss on a batch of raw inputs (N, d_in), in scaled units."""
        x_hat, f = self(x)
        mse = ((x_hat - x) * self.input_scale).pow(2).sum(-1).mean()
        if self.config.kind == "relu" and self.config.l1_coeff > 0:
            return mse + self.config.l1_coeff * (f * self.W_dec.norm(dim=1)).sum(-1).mean()
        return mse

    def flops_per_sample(self) -> int:
        """Training FLOPs per input: encode and decode matmuls, forward and backward (3x)."""
        return 3 * 2 * 2 * self.config.d_in * self.config.width


def sae_loss(sae: nn.Module, batch: Batch) -> torch.Tensor:
    """The loop's loss function: the SAE's own loss on the batch's one tensor."""
    (x,) = batch
    return sae.loss(x)


def objective(
    sae: SparseAutoencoder, activations: torch.Tensor, batch_size: int,
    val_activations: torch.Tensor | None = None,
) -> Objective:
    """Train `sae` on random rows of `activations` (N, d_in), drawn with replacement by the loop's
    generator; validation on `val_activations` in fixed batches."""
    data = activations.float()
    val: list[Batch] = []
    if val_activations is not None:
        val = [(v,) for v in val_activations.float().split(batch_size)]
    return Objective(
        next_batch=lambda g: (data[torch.randint(len(data), (batch_size,), generator=g)],),
        loss=sae_loss,
        items_per_batch=batch_size,
        flops_per_item=sae.flops_per_sample(),
        unit="sample",
        val_batches=val,
    )


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 4096) -> dict:
    """What an SAE does on activations x (N, d_in): L0 (mean active features per input),
    explained variance 1 - sum |x - x_hat|^2 / sum |x - mean x|^2, the share of features never
    active (dead) and active on more than DENSE_FREQUENCY of inputs (dense), and each
    feature's firing frequency."""
    x = x.float()
    fires = torch.zeros(sae.config.width)
    active, residual = 0.0, 0.0
    for chunk in x.split(batch_size):
        chunk = chunk.to(sae.b_dec.device)
        x_hat, f = sae(chunk)
        on = f > 0
        fires += on.sum(0).float().cpu()
        active += on.sum().item()
        residual += (chunk - x_hat).pow(2).sum().item()
    total = (x - x.mean(0)).pow(2).sum().item()
    frequency = fires / len(x)
    return {
        "l0": active / len(x),
        "explained_variance": 1.0 - residual / total,
        "dead_fraction": (frequency == 0).float().mean().item(),
        "dense_fraction": (frequency > DENSE_FREQUENCY).float().mean().item(),
        "frequency": frequency,
    }


def synthetic_activations(
    n: int, d: int, n_features: int, active: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Data with known features: (x (n, d), directions (n_features, d)). Each input is a sum of
    random unit directions, each present with probability `active`, with magnitudes in (0, 1]."""
    directions = torch.randn(n_features, d, generator=generator)
    directions = directions / directions.norm(dim=1, keepdim=True)
    present = torch.rand(n, n_features, generator=generator) < active
    magnitude = 1.0 - torch.rand(n, n_features, generator=generator)  # (0, 1]
    return (present * magnitude) @ directions, directions


@torch.no_grad()
def recovery(sae: SparseAutoencoder, directions: torch.Tensor) -> float:
    """Mean over true feature directions (n, d) of the best cosine similarity with any
    decoder row: 1.0 when every true feature has its own feature in the dictionary."""
    learned = F.normalize(sae.decoder().float(), dim=1)
    true = F.normalize(directions.float(), dim=1)
    return (true @ learned.T).max(dim=1).values.mean().item()
