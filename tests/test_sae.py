"""Sparse autoencoders: both recipes, trained by the one loop, find known features."""

from __future__ import annotations

import pytest
import torch

from digestlab.configs import SAEConfig, TrainConfig
from digestlab.nn.sae import (
    SparseAutoencoder,
    evaluate_sae,
    objective,
    recovery,
    synthetic_activations,
)
from digestlab.train import train


def _data(n: int = 12000):
    return synthetic_activations(n, d=32, n_features=64, active=0.04,
                                 generator=torch.Generator().manual_seed(0))


def _trained(kind: str, x: torch.Tensor, l1_coeff: float = 3.0, steps: int = 600):
    sae = SparseAutoencoder(SAEConfig(d_in=32, width=256, kind=kind, l1_coeff=l1_coeff, k=3),
                            torch.Generator().manual_seed(1))
    sae.fit_to(x)
    cfg = TrainConfig(steps=steps, learning_rate=2e-3, min_lr=2e-4, warmup_steps=30,
                      weight_decay=0.0, log_every=steps)
    train(sae, objective(sae, x, 256), cfg, torch.device("cpu"), log=lambda _: None)
    return sae


@pytest.mark.parametrize("kind", ["relu", "topk"])
def test_both_recipes_recover_known_features_sparsely(kind):
    x, directions = _data()
    untrained = SparseAutoencoder(SAEConfig(d_in=32, width=256, kind=kind, k=3),
                                  torch.Generator().manual_seed(1))
    sae = _trained(kind, x)
    quality = evaluate_sae(sae, x[-2000:])
    # 64 true features, each a unit direction, about 2.6 active per input
    assert recovery(sae, directions) > 0.9 > recovery(untrained, directions) + 0.2
    assert quality["explained_variance"] > 0.7
    assert quality["l0"] < 10


def test_topk_keeps_exactly_k_features_and_unit_decoder_rows():
    sae = SparseAutoencoder(SAEConfig(d_in=16, width=64, kind="topk", k=5),
                            torch.Generator().manual_seed(0))
    f = sae.encode(torch.randn(40, 16) * 3)
    assert ((f > 0).sum(-1) <= 5).all() and (f >= 0).all()
    assert torch.allclose(sae.decoder().norm(dim=1), torch.ones(64))


def test_input_scale_makes_the_mean_squared_norm_the_width():
    sae = SparseAutoencoder(SAEConfig(d_in=8, width=16))
    x = torch.randn(500, 8) * 7 + 2
    sae.fit_to(x)
    assert (x * sae.input_scale).pow(2).sum(-1).mean().item() == pytest.approx(8, rel=1e-4)
    assert torch.allclose(sae.b_dec, (x * sae.input_scale).mean(0), atol=1e-5)


def test_relu_penalty_weighs_activations_by_decoder_norms():
    sae = SparseAutoencoder(SAEConfig(d_in=4, width=8, kind="relu", l1_coeff=0.0))
    x = torch.randn(20, 4)
    mse = sae.loss(x).item()
    sae.config = SAEConfig(d_in=4, width=8, kind="relu", l1_coeff=2.0)
    _, f = sae(x)
    penalty = 2.0 * (f * sae.W_dec.norm(dim=1)).sum(-1).mean().item()
    assert sae.loss(x).item() == pytest.approx(mse + penalty, rel=1e-5)


def test_evaluation_counts_dead_and_dense_features():
    sae = SparseAutoencoder(SAEConfig(d_in=4, width=3, kind="relu"))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_dec.zero_()
        sae.b_enc.copy_(torch.tensor([1.0, -1.0, 0.0]))  # always on, never on, never on
        sae.W_enc[0, 2] = 1.0  # on when the first input is positive
    x = torch.zeros(100, 4)
    x[:5, 0] = 1.0
    quality = evaluate_sae(sae, x)
    assert quality["dead_fraction"] == pytest.approx(1 / 3)
    assert quality["dense_fraction"] == pytest.approx(1 / 3)
    assert quality["l0"] == pytest.approx(1.05)
