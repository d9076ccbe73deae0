"""The one loop trains any model on any objective: pretraining, supervised fine-tuning, DPO
against a frozen reference, and a model of another kind with a loss of its own."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from digestlab.configs import GPTConfig, TrainConfig
from digestlab.device import seed_everything
from digestlab.nn import GPT
from digestlab.objectives import (
    dpo,
    dpo_loss,
    implicit_rewards,
    lagrangian_dpo,
    pack_rows,
    pair_batch,
    reference_margins,
    response_targets,
    sequence_logprobs,
    spo,
    supervised,
)
from digestlab.train import Objective, train

CPU = torch.device("cpu")
SILENT = [].append


def tiny_gpt(seed: int = 0) -> GPT:
    seed_everything(seed)
    return GPT(GPTConfig(block_size=48, n_layer=2, d_model=32, n_heads=2, n_kv_heads=2,
                         head_dim=16))


def random_rows(n: int, low: int, high: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (n,), generator=g).tolist()
    return [torch.randint(1, 256, (k,), generator=g).tolist() for k in lengths]


def test_response_targets_score_only_response_tokens():
    ids, prompt_lengths, lengths = pack_rows([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]])
    x, y = response_targets(ids, prompt_lengths, lengths)
    assert x.tolist() == [[5, 6, 7, 9], [8, 11, 12, 13]]
    assert y.tolist() == [[-1, -1, 9, 10], [11, 12, 13, -1]]


def test_supervised_loss_is_cross_entropy_on_responses_and_training_lowers_it():
    model = tiny_gpt()
    prompts = random_rows(16, 2, 8, seed=1)
    # the response is the prompt reversed: learnable from the prompt alone
    examples = [(p, list(reversed(p))) for p in prompts]
    objective = supervised(model, examples, batch_size=8, val_examples=examples[:8])
    x, y = objective.val_batches[0]
    logits, _ = model(x)
    scored = y != -1
    expected = F.cross_entropy(logits[scored], y[scored])
    torch.testing.assert_close(objective.loss(model, (x, y)), expected)
    before = objective.loss(model, (x, y)).item()
    cfg = TrainConfig(steps=60, learning_rate=1e-2, min_lr=1e-3, warmup_steps=5, log_every=60)
    result = train(model, objective, cfg, CPU, log=SILENT)
    assert result.val_loss < before - 1.0


def test_dpo_starts_at_ln2_prefers_chosen_after_training_and_leaves_the_reference_alone():
    policy = tiny_gpt()
    reference = copy.deepcopy(policy)
    frozen = {k: v.clone() for k, v in reference.state_dict().items()}
    prompts = random_rows(12, 2, 6, seed=2)
    chosen, rejected = random_rows(12, 3, 6, seed=3), random_rows(12, 3, 6, seed=4)
    pairs = list(zip(prompts, chosen, rejected, strict=True))
    objective = dpo(policy, reference, pairs, batch_size=6, beta=0.5)
    first = objective.loss(policy, objective.next_batch(torch.Generator().manual_seed(0)))
    assert first.item() == pytest.approx(math.log(2), abs=1e-6)  # policy == reference
    cfg = TrainConfig(steps=40, learning_rate=5e-3, min_lr=5e-4, warmup_steps=4, log_every=40,
                      weight_decay=0.0)
    result = train(policy, objective, cfg, CPU, log=SILENT)
    assert result.unit == "pair" and result.final_train_loss < 0.2
    with torch.no_grad():
        margin = (sequence_logprobs(policy, *pack_rows(prompts, chosen))
                  - sequence_logprobs(policy, *pack_rows(prompts, rejected)))
        ref_margin = (sequence_logprobs(reference, *pack_rows(prompts, chosen))
                      - sequence_logprobs(reference, *pack_rows(prompts, rejected)))
    assert bool((margin > ref_margin).all())
    for key, value in reference.state_dict().items():
        assert torch.equal(value, frozen[key]), key


def test_spo_is_dpo_with_the_previous_reward_margin_inside_the_sigmoid():
    policy, previous, before = tiny_gpt(0), tiny_gpt(1), tiny_gpt(2)
    prompts = random_rows(8, 2, 5, seed=5)
    chosen, rejected = random_rows(8, 2, 6, seed=6), random_rows(8, 2, 6, seed=7)
    pairs = list(zip(prompts, chosen, rejected, strict=True))
    beta, alpha = 0.5, 2.0
    margins = (implicit_rewards(previous, before, prompts, chosen, beta)
               - implicit_rewards(previous, before, prompts, rejected, beta))
    with torch.no_grad():
        # each side read on its own, the reference at every step: the formula as written
        log_ratio = {name: sequence_logprobs(policy, *pack_rows(prompts, rows))
                     - sequence_logprobs(previous, *pack_rows(prompts, rows))
                     for name, rows in (("w", chosen), ("l", rejected))}
        expected = -F.logsigmoid(beta * (log_ratio["w"] - log_ratio["l"]) - alpha * margins)
        objective = spo(policy, previous, pairs, margins, alpha, batch_size=8, beta=beta)
        # the objective's own batches: the picks of its generator, the shifts it computed once
        batch = objective.next_batch(torch.Generator().manual_seed(0))
        picks = torch.randint(8, (8,), generator=torch.Generator().manual_seed(0))
        got = objective.loss(policy, batch)
        plain = dpo(policy, previous, pairs, 8, beta)
        plain_loss = plain.loss(policy, plain.next_batch(torch.Generator().manual_seed(0)))
    assert got.item() == pytest.approx(expected[picks].mean().item(), rel=1e-5)
    assert plain_loss.item() == pytest.approx(
        -F.logsigmoid(beta * (log_ratio["w"] - log_ratio["l"]))[picks].mean().item(), rel=1e-5)
    # the implicit reward is beta times the log-probability ratio of the two models
    with torch.no_grad():
        direct = beta * (sequence_logprobs(previous, *pack_rows(prompts, chosen))
                         - sequence_logprobs(before, *pack_rows(prompts, chosen)))
    assert torch.allclose(implicit_rewards(previous, before, prompts, chosen, beta), direct,
                          atol=1e-5)
    with pytest.raises(ValueError, match="offsets"):
        dpo(policy, previous, pairs, 4, offsets=margins[:3])
    with pytest.raises(ValueError, match="weights"):
        dpo(policy, previous, pairs, 4, weights=torch.ones(3))
    with pytest.raises(ValueError, match="at least one"):
        dpo(policy, previous, [], 4)


def test_reference_margins_are_computed_once_in_chunks_and_match_a_fresh_read():
    reference = tiny_gpt(3)
    prompts = random_rows(10, 2, 5, seed=8)
    chosen, rejected = random_rows(10, 1, 7, seed=9), random_rows(10, 1, 7, seed=10)
    pairs = list(zip(prompts, chosen, rejected, strict=True))
    with torch.no_grad():
        fresh = (sequence_logprobs(reference, *pack_rows(prompts, chosen))
                 - sequence_logprobs(reference, *pack_rows(prompts, rejected)))
    # chunks of 3 pairs pad differently from one block of 10: padding must not matter
    torch.testing.assert_close(reference_margins(reference, pairs, batch_size=3), fresh,
                               atol=1e-5, rtol=1e-5)
    # one forward reads both rows of a pair: the chosen rows first, then the rejected
    ids, prompt_lengths, lengths, shift = pair_batch(pairs, [4, 1], torch.arange(10.0))
    assert ids.shape[0] == 4 and shift.tolist() == [4.0, 1.0]
    assert lengths.tolist() == [len(prompts[4]) + len(chosen[4]), len(prompts[1]) + len(chosen[1]),
                                len(prompts[4]) + len(rejected[4]),
                                len(prompts[1]) + len(rejected[1])]


def test_weighted_pairs_are_drawn_in_proportion_and_never_at_weight_zero():
    policy = tiny_gpt()
    prompts = random_rows(4, 2, 3, seed=11)
    pairs = list(zip(prompts, random_rows(4, 2, 3, seed=12), random_rows(4, 2, 3, seed=13),
                     strict=True))
    shifts = torch.arange(4.0)  # the batch's shifts name the pairs drawn (beta 0 adds none)
    objective = dpo(policy, policy, pairs, 2000, beta=0.0, offsets=shifts,
                    weights=torch.tensor([0.0, 1.0, 3.0, 0.0]))
    drawn = objective.next_batch(torch.Generator().manual_seed(1))[3]
    counts = torch.bincount(drawn.long(), minlength=4)
    assert counts[0] == 0 and counts[3] == 0
    assert counts[2] / counts[1] == pytest.approx(3.0, rel=0.15)


def test_a_large_previous_margin_in_favour_of_the_chosen_row_makes_spo_push_harder():
    policy = tiny_gpt(0)
    prompts = random_rows(4, 2, 4, seed=1)
    pairs = list(zip(prompts, random_rows(4, 3, 5, seed=2), random_rows(4, 3, 5, seed=3),
                     strict=True))
    with_margin = {}
    for margin in (-3.0, 0.0, 3.0):
        policy.zero_grad()
        batch = pair_batch(pairs, range(4), torch.full((4,), margin))
        dpo_loss(policy, batch, beta=1.0).backward()
        with_margin[margin] = math.sqrt(sum(p.grad.pow(2).sum().item()
                                            for p in policy.parameters() if p.grad is not None))
    # the loss is -log sigmoid(x - shift): its slope grows as the shift grows
    assert with_margin[-3.0] < with_margin[0.0] < with_margin[3.0]


def test_the_lagrange_multiplier_rises_while_the_constraint_is_broken_and_weights_it():
    policy, reference = tiny_gpt(0), tiny_gpt(0)
    prompts = random_rows(6, 2, 4, seed=1)
    pairs = list(zip(prompts, random_rows(6, 3, 5, seed=2), random_rows(6, 3, 5, seed=3),
                     strict=True))
    history: list[float] = []
    # a threshold below ln 2, which the policy (equal to the reference) starts at: broken
    objective = lagrangian_dpo(policy, reference, pairs, reference, pairs, threshold=0.1,
                               batch_size=6, beta=0.5, multiplier_lr=1.0, history=history)
    batch = objective.next_batch(torch.Generator().manual_seed(0))
    assert len(batch) == 8
    first = objective.loss(policy.train(), batch)
    assert first.item() == pytest.approx(math.log(2), abs=1e-6)  # lambda 0: the new loss alone
    assert history == [pytest.approx(math.log(2) - 0.1, abs=1e-6)]
    objective.loss(policy, batch)
    assert history[1] == pytest.approx(2 * (math.log(2) - 0.1), abs=1e-6)
    # evaluation (eval mode) leaves the multiplier alone
    objective.loss(policy.eval(), batch)
    assert len(history) == 2
    easy = lagrangian_dpo(policy, reference, pairs, reference, pairs, threshold=5.0,
                          batch_size=6, beta=0.5, multiplier_lr=1.0, history=(kept := []))
    easy.loss(policy.train(), batch)
    assert kept == [0.0]  # a constraint that holds keeps lambda at zero


class TinyAutoencoder(nn.Module):
    """A model of another kind: its own parameters and its own loss."""

    def __init__(self, d: int, width: int):
        super().__init__()
        self.encoder = nn.Linear(d, width)
        self.decoder = nn.Linear(width, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(F.relu(self.encoder(x)))


def test_the_loop_trains_another_kind_of_model_with_its_own_loss():
    g = torch.Generator().manual_seed(0)
    directions = F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    codes = torch.rand(512, 8, generator=g) * (torch.rand(512, 8, generator=g) < 0.2)
    data = codes @ directions  # (N, d): sparse combinations of a few directions

    def loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (x,) = batch
        return F.mse_loss(model(x), x)

    objective = Objective(
        next_batch=lambda gen: (data[torch.randint(len(data), (64,), generator=gen)],),
        loss=loss, items_per_batch=64, unit="sample", val_batches=[(data[:128],)],
    )
    seed_everything(0)
    model = TinyAutoencoder(16, 32)
    untrained = loss(model, (data[:128],)).item()
    cfg = TrainConfig(steps=150, learning_rate=1e-2, min_lr=1e-3, warmup_steps=10,
                      log_every=50, weight_decay=0.0)
    result = train(model, objective, cfg, CPU, log=SILENT)
    assert result.val_loss < 0.2 * untrained
    assert result.unit == "sample" and result.items_seen == 150 * 64
    assert result.mfu is None  # no FLOP count given, so no MFU is claimed
