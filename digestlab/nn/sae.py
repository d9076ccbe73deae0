"""Sparse autoencoders: a dictionary of features for any (N, d) tensor of activations.

An SAE writes each activation x as a sparse, non-negative combination of learned directions,
x ~ b_dec + sum_i f_i(x) d_i, with f = encode(x) and d_i the rows of W_dec. Two recipes:

- "relu", Anthropic's 2024 recipe (Scaling Monosemanticity and its April 2024 update):
  f = ReLU(W_enc (x - b_dec) + b_enc), decoder rows free in norm, and the loss
      L = E ||x - x_hat||^2 + lambda * E sum_i f_i(x) ||d_i||,
  the L1 penalty weighted by each decoder row's norm so that shrinking f while growing d_i
  buys nothing; lambda rises linearly from 0 over the first `l1_warmup` of training.
- "topk", Gao et al. 2024 (Scaling and evaluating sparse autoencoders): only the k largest
  pre-activations survive (then ReLU), decoder rows kept at unit norm, the loss the MSE plus
  their auxiliary loss (AuxK): the most active features among the dead ones (no firing for
  `dead_after` inputs) must reconstruct what the live ones missed, which pulls them back.

Inputs are scaled by one constant so that their mean squared norm is d_in (fit once on the
data by `fit_to`), which makes lambda comparable across layers and models. Both recipes train
with the one training loop under the update's optimiser (`training_config`: Adam with betas
(0.9, 0.999), no weight decay, the rate held and then decayed linearly to 0 over the last 20%);
`objective` builds the loop's Objective, the warm-up included. `synthetic_activations` makes
data with known ground-truth features to check that an SAE finds them; `clamp_hook` steers a
model by setting one feature.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from digestlab.configs import SAEConfig, TrainConfig
from digestlab.train import Batch, Objective

DENSE_FREQUENCY = 0.1  # a feature active on more than this share of inputs counts as dense
DECAY_FRACTION = 0.2  # the learning rate decays to 0 over this last share of training


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
        self.register_buffer("input_factor", torch.ones(()))
        # training state, not part of the dictionary: the share of lambda reached in its
        # warm-up, and the inputs seen since each feature last fired (for AuxK)
        self.register_buffer("penalty_ramp", torch.ones(()), persistent=False)
        self.register_buffer("since_fired", torch.zeros(w, dtype=torch.long), persistent=False)

    @torch.no_grad()
    def fit_to(self, x: torch.Tensor) -> None:
        """Set the input scale from activations x (N, d_in), and b_dec to their scaled mean."""
        x = x.float()
        self.input_factor.fill_(math.sqrt(self.config.d_in / x.pow(2).sum(-1).mean().item()))
        self.b_dec.copy_((x * self.input_factor).mean(0))

    def decoder(self) -> torch.Tensor:
        """The decoder rows as used: unit norm for topk, as learned for relu. (width, d_in)"""
        if self.config.kind == "topk":
            return self.W_dec / self.W_dec.norm(dim=1, keepdim=True)
        return self.W_dec

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """W_enc (x - b_dec) + b_enc (..., width) of raw inputs x (..., d_in), x scaled."""
        return (x * self.input_factor - self.b_dec) @ self.W_enc + self.b_enc

    def _sparse(self, pre: torch.Tensor) -> torch.Tensor:
        if self.config.kind == "topk":
            top = pre.topk(self.config.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, F.relu(top.values))
        return F.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations f (..., width) of raw inputs x (..., d_in)."""
        return self._sparse(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction (..., d_in), in the inputs' own units, of features f (..., width)."""
        return (f @ self.decoder() + self.b_dec) / self.input_factor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, features) of raw inputs x."""
        f = self.encode(x)
        return self.decode(f), f

    def warm_up(self, step: int, steps: int) -> None:
        """Set lambda's share for a 0-based step of `steps`: linear from 0 over l1_warmup."""
        ramp = round(self.config.l1_warmup * steps)
        self.penalty_ramp.fill_(min(1.0, (step + 1) / ramp) if ramp > 0 else 1.0)

    def dead(self) -> torch.Tensor:
        """(width,) whether each feature has gone dead_after training inputs without firing."""
        return self.since_fired >= self.config.dead_after

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The recipe's training loss on a batch of raw inputs (N, d_in), in scaled units; in
        training mode it also counts the inputs since each feature last fired."""
        pre = self.pre_activations(x)
        f = self._sparse(pre)
        error = (x - self.decode(f)) * self.input_factor  # what the reconstruction missed
        mse = error.pow(2).sum(-1).mean()
        if self.training:
            with torch.no_grad():
                self.since_fired += len(x)
                self.since_fired[(f > 0).any(0)] = 0
        cfg = self.config
        if cfg.kind == "relu" and cfg.l1_coeff > 0:
            penalty = (f * self.W_dec.norm(dim=1)).sum(-1).mean()
            return mse + cfg.l1_coeff * self.penalty_ramp * penalty
        if cfg.auxiliary_k and self.training:
            return mse + cfg.aux_coeff * self.auxiliary_loss(pre, error.detach())
        return mse

    def auxiliary_loss(self, pre: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
        """AuxK: the normalised MSE with which the auxiliary_k most active dead features,
        decoded without bias, reconstruct the live features' error (scaled units); 0 while
        none is dead."""
        dead = self.dead().nonzero().flatten()
        k = min(self.config.auxiliary_k, len(dead))
        if k == 0:
            return pre.new_zeros(())
        among = pre[:, dead]  # (N, dead)
        top = among.topk(k, dim=-1)
        f = torch.zeros_like(among).scatter(-1, top.indices, F.relu(top.values))
        guess = f @ self.decoder()[dead]
        missed = (guess - error).pow(2).sum(-1).mean()
        return missed / error.pow(2).sum(-1).mean().clamp_min(1e-12)

    def flops_per_sample(self) -> int:
        """Training FLOPs per input: encode and decode matmuls, forward and backward (3x)."""
        return 3 * 2 * 2 * self.config.d_in * self.config.width


def sae_loss(sae: nn.Module, batch: Batch) -> torch.Tensor:
    """The loop's loss function: the SAE's own loss on the batch's one tensor."""
    (x,) = batch
    return sae.loss(x)


def training_config(steps: int, learning_rate: float, seed: int = 0) -> TrainConfig:
    """The April 2024 update's optimiser, for either recipe: Adam with betas (0.9, 0.999) and
    no weight decay (it would shrink the decoder rows the penalty is weighted by), no warmup
    (lambda's warm-up is the SAE's own), the rate held at its peak and then decayed linearly to
    0 over the last DECAY_FRACTION of the steps, gradients clipped at norm 1."""
    return TrainConfig(steps=steps, learning_rate=learning_rate, min_lr=0.0, warmup_steps=0,
                       decay="linear", decay_fraction=DECAY_FRACTION, weight_decay=0.0,
                       betas=(0.9, 0.999), grad_clip=1.0, seed=seed,
                       log_every=max(1, steps // 5))


def objective(
    sae: SparseAutoencoder, activations: torch.Tensor, batch_size: int,
    val_activations: torch.Tensor | None = None,
) -> Objective:
    """Train `sae` on random rows of `activations` (N, d_in), drawn with replacement by the loop's
    generator, lambda warming up over the run; validation on `val_activations` in fixed
    batches."""
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
        schedule=sae.warm_up,
    )


def clamp_hook(sae: SparseAutoencoder, feature: int, value: float, last_only: bool = False
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A residual-stream hook (nn.inspect.residual_hook) that sets one feature to `value` and keeps
    the SAE's error term, so nothing else in the stream changes: h' = h + (value - f(h)) d, d
    the feature's decoder row in the stream's units. At every position, or (`last_only`) at
    the last position of each forward: the last byte of left-padded prompts, and each token
    decoded after them."""
    direction = sae.decoder()[feature].detach() / sae.input_factor

    def value_of(h: torch.Tensor) -> torch.Tensor:
        if sae.config.kind == "relu":  # the one feature's own pre-activation suffices
            pre = (h * sae.input_factor - sae.b_dec) @ sae.W_enc[:, feature] + sae.b_enc[feature]
            return F.relu(pre)
        return sae.encode(h)[..., feature]  # topk: whether it survives depends on the rest

    def hook(h: torch.Tensor) -> torch.Tensor:
        at = h[:, -1:] if last_only else h
        f = value_of(at)  # (B, T)
        moved = at + (value - f)[..., None] * direction.to(h.dtype)
        return torch.cat([h[:, :-1], moved], dim=1) if last_only else moved

    return hook


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
