"""The training loop learns, repeats itself exactly on CPU, and schedules, clips and evaluates
as documented. Tiny models only: the whole file runs in seconds."""

from __future__ import annotations

import math

import pytest
import torch

from digestlab.data import build_splits, get_batch
from digestlab.device import seed_everything
from digestlab.nn import GPT, GPTConfig
from digestlab.train import (
    CPU_AUTOCAST_DEFAULT,
    TrainConfig,
    autocast_dtype,
    evaluate,
    learning_rate_at,
    train,
    train_step,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def splits():
    return build_splits(60, seed=0, val_fraction=0.1)


def tiny_model(seed: int = 0) -> GPT:
    seed_everything(seed)
    return GPT(GPTConfig(block_size=32, n_layer=2, d_model=32, n_heads=2, n_kv_heads=2,
                         head_dim=16))


def tiny_config(**overrides) -> TrainConfig:
    fields = dict(steps=40, batch_size=8, seq_len=32, learning_rate=3e-3, min_lr=3e-4,
                  warmup_steps=5, eval_batches=2, log_every=10)
    return TrainConfig(**{**fields, **overrides})


def test_loss_falls_well_below_its_start_on_the_corpus(splits):
    lines: list[str] = []
    result = train(tiny_model(), splits.train, tiny_config(), CPU, splits.val, log=lines.append)
    first = sum(loss for _, loss in result.loss_curve[:5]) / 5
    assert first > 5.0  # about ln(256): an untrained byte model
    assert result.final_train_loss < first - 1.5
    assert result.val_loss is not None and result.val_loss < first - 1.5
    assert result.tokens_seen == 40 * 8 * 32
    assert result.tokens_per_s > 0 and 0 < result.mfu < 2
    assert [step for step, _ in result.loss_curve] == list(range(40))
    assert sum(line.startswith("step") for line in lines) == 4  # every log_every steps


@pytest.mark.parametrize("autocast", ["none", "bf16"])
def test_same_seed_gives_bitwise_identical_loss_curves(splits, autocast):
    cfg = tiny_config(steps=15, autocast=autocast)
    silent = [].append
    first = train(tiny_model(), splits.train, cfg, CPU, log=silent)
    second = train(tiny_model(), splits.train, cfg, CPU, log=silent)
    assert first.loss_curve == second.loss_curve
    other_cfg = tiny_config(steps=15, autocast=autocast, seed=1)
    other = train(tiny_model(), splits.train, other_cfg, CPU, log=silent)
    assert other.loss_curve != first.loss_curve


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    cfg = TrainConfig(steps=110, learning_rate=1e-3, min_lr=1e-4, warmup_steps=10)
    assert learning_rate_at(0, cfg) == pytest.approx(1e-4)
    assert learning_rate_at(4, cfg) == pytest.approx(5e-4)
    assert learning_rate_at(10, cfg) == pytest.approx(1e-3)  # peak right after warmup
    assert learning_rate_at(60, cfg) == pytest.approx((1e-3 + 1e-4) / 2)  # halfway down
    decay = [learning_rate_at(step, cfg) for step in range(10, 110)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert min(decay) >= 1e-4
    assert learning_rate_at(110, cfg) == pytest.approx(1e-4)
    assert learning_rate_at(500, cfg) == pytest.approx(1e-4)


def test_gradient_clipping_bounds_the_global_norm(splits):
    model = tiny_model()
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    x, y = get_batch(splits.train, 4, 32, torch.Generator().manual_seed(0))
    _, norm_before = train_step(model, optimizer, x, y, grad_clip=1e-3)
    norm_after = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm_before > 1e-2  # so the clip had something to do
    assert norm_after <= 1e-3 * (1 + 1e-4)
    _, unclipped = train_step(model, optimizer, x, y, grad_clip=0.0)
    assert torch.norm(torch.stack([p.grad.norm() for p in model.parameters()])) == (
        pytest.approx(unclipped.item(), rel=1e-5))


def test_evaluate_is_deterministic_and_restores_training_mode(splits):
    model = tiny_model()
    model.train()
    first = evaluate(model, splits.val, CPU, seq_len=32, batch_size=4, n_batches=3)
    second = evaluate(model, splits.val, CPU, seq_len=32, batch_size=4, n_batches=3)
    assert first == second
    assert math.log(256) - 0.5 < first < math.log(256) + 0.5  # untrained: near uniform
    assert model.training


def test_autocast_auto_means_bf16_on_cuda_and_the_measured_default_on_cpu():
    assert autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16
    expected = torch.bfloat16 if CPU_AUTOCAST_DEFAULT == "bf16" else None
    assert autocast_dtype("auto", CPU) is expected
    assert autocast_dtype("none", CPU) is None
    with pytest.raises(ValueError, match="autocast"):
        autocast_dtype("fp16", CPU)


def _threads_seen(job: int) -> tuple[int, int]:
    return job, torch.get_num_threads()


@pytest.mark.parametrize("workers", [1, 2])
def test_map_runs_keeps_order_runs_single_threaded_and_restores_threads(workers):
    from digestlab.train import map_runs

    before = torch.get_num_threads()
    assert map_runs(_threads_seen, [3, 1, 2], workers, CPU) == [(3, 1), (1, 1), (2, 1)]
    assert torch.get_num_threads() == before
