"""Sparse autoencoders: both recipes, trained by the one loop, find known features."""

from __future__ import annotations

import pytest
import torch

from digestlab.configs import SAEConfig
from digestlab.nn.sae import (
    SparseAutoencoder,
    clamp_hook,
    evaluate_sae,
    objective,
    recovery,
    synthetic_activations,
    training_config,
)
from digestlab.train import learning_rate_at, train


def _data(n: int = 12000):
    return synthetic_activations(n, d=32, n_features=64, active=0.04,
                                 generator=torch.Generator().manual_seed(0))


def _trained(kind: str, x: torch.Tensor, l1_coeff: float = 3.0, steps: int = 600):
    sae = SparseAutoencoder(SAEConfig(d_in=32, width=256, kind=kind, l1_coeff=l1_coeff, k=3),
                            torch.Generator().manual_seed(1))
    sae.fit_to(x)
    cfg = training_config(steps, 2e-3)
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


def test_input_factor_makes_the_mean_squared_norm_the_width():
    sae = SparseAutoencoder(SAEConfig(d_in=8, width=16))
    x = torch.randn(500, 8) * 7 + 2
    sae.fit_to(x)
    assert (x * sae.input_factor).pow(2).sum(-1).mean().item() == pytest.approx(8, rel=1e-4)
    assert torch.allclose(sae.b_dec, (x * sae.input_factor).mean(0), atol=1e-5)


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


def test_the_recipes_optimiser_is_the_updates():
    cfg = training_config(1000, 1e-3)
    assert cfg.betas == (0.9, 0.999) and cfg.weight_decay == 0.0 and cfg.grad_clip == 1.0
    assert learning_rate_at(0, cfg) == learning_rate_at(799, cfg) == 1e-3  # no warmup, held
    assert learning_rate_at(900, cfg) == pytest.approx(5e-4)  # linear to 0 over the last 20%
    assert learning_rate_at(1000, cfg) == 0.0


def test_lambda_warms_up_linearly_over_its_share_of_training():
    sae = SparseAutoencoder(SAEConfig(d_in=4, width=8, kind="relu", l1_coeff=2.0, l1_warmup=0.1))
    x = torch.randn(20, 4)
    mse_only = SparseAutoencoder(SAEConfig(d_in=4, width=8, kind="relu", l1_coeff=0.0))
    mse_only.load_state_dict(sae.state_dict())
    _, f = sae(x)
    penalty = 2.0 * (f * sae.W_dec.norm(dim=1)).sum(-1).mean().item()
    for step, share in ((0, 0.1), (4, 0.5), (9, 1.0), (50, 1.0)):
        sae.warm_up(step, 100)
        assert sae.loss(x).item() == pytest.approx(mse_only.loss(x).item() + share * penalty,
                                                   rel=1e-5)


def test_auxk_trains_the_dead_features_on_the_live_ones_error():
    config = SAEConfig(d_in=16, width=64, kind="topk", k=2, aux_k=4, dead_after=40)
    sae = SparseAutoencoder(config, torch.Generator().manual_seed(0))
    x = torch.randn(32, 16)
    assert config.auxiliary_k == 4 and not sae.dead().any()
    sae.loss(x).backward()  # 32 inputs: nothing is dead yet, the MSE alone
    fired = (sae.encode(x) > 0).any(0)
    assert sae.W_enc.grad[:, ~fired].abs().sum() == 0
    assert (sae.since_fired[~fired] == 32).all() and (sae.since_fired[fired] == 0).all()
    sae.zero_grad()
    sae.loss(x).backward()  # 64: the features that never fired are dead, and AuxK reaches them
    assert sae.dead().equal(~fired)
    assert sae.W_enc.grad[:, ~fired].abs().sum() > 0
    # evaluation leaves the counts alone, and relu or aux_k 0 has no AuxK
    sae.eval()
    sae.loss(x)
    assert (sae.since_fired[~fired] == 64).all()
    assert SAEConfig(kind="relu").auxiliary_k == 0
    assert SAEConfig(kind="topk", d_in=64, aux_k=None).auxiliary_k == 32
    assert SAEConfig(kind="topk", aux_k=0).auxiliary_k == 0


@pytest.mark.parametrize("last_only", [False, True])
def test_clamp_changes_the_stream_along_the_feature_only_and_by_the_set_amount(last_only):
    sae = SparseAutoencoder(SAEConfig(d_in=8, width=32, kind="relu"),
                            torch.Generator().manual_seed(0))
    sae.fit_to(torch.randn(200, 8) * 2)
    h = torch.randn(3, 5, 8) * 2
    with torch.no_grad():
        f = sae.encode(h)[..., 4]
        moved = clamp_hook(sae, 4, 5.0, last_only)(h) - h
        direction = sae.decoder()[4] / sae.input_factor
        expected = (5.0 - f)[..., None] * direction
        if last_only:  # the last position alone: the prompt's last byte, or a decoded one
            expected[:, :-1] = 0.0
        assert torch.allclose(moved, expected, atol=1e-5)
        # clamping a feature to the value it has changes nothing
        same = clamp_hook(sae, 4, 0.0)
        untouched = h[f == 0]
        assert torch.allclose(same(untouched[None])[0], untouched, atol=1e-6)
