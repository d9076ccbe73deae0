"""The training loop learns, repeats itself exactly on CPU, and schedules, clips and evaluates
as documented. Tiny models only: the whole file runs in seconds."""

from __future__ import annotations

import math

import pytest
import torch

from digestlab.data import build_splits, get_batch
from digestlab.device import seed_everything
from digestlab.nn import GPT, GPTConfig
from digestlab.objectives import language_model, next_token_loss
from digestlab.parallel import launch
from digestlab.train import (
    CPU_AUTOCAST_DEFAULT,
    Objective,
    TrainConfig,
    autocast_dtype,
    configure_optimizer,
    evaluate,
    learning_rate_at,
    micro_batches,
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
    fields = dict(steps=40, learning_rate=3e-3, min_lr=3e-4, warmup_steps=5, log_every=10)
    return TrainConfig(**{**fields, **overrides})


def lm(model: GPT, splits, val: bool = True) -> Objective:
    return language_model(model, splits.train, 8, 32, splits.val if val else None, eval_batches=2)


def test_loss_falls_well_below_its_start_on_the_corpus(splits):
    lines: list[str] = []
    model = tiny_model()
    result = train(model, lm(model, splits), tiny_config(), CPU, log=lines.append)
    first = sum(loss for _, loss in result.loss_curve[:5]) / 5
    assert first > 5.0  # about ln(256): an untrained byte model
    assert result.final_train_loss < first - 1.5
    assert result.val_loss is not None and result.val_loss < first - 1.5
    assert result.items_seen == 40 * 8 * 32 and result.unit == "tok"
    assert result.items_per_s > 0 and 0 < result.mfu < 2
    # the median step and the mean rate describe the same timed steps
    per_step = 8 * 32 / result.items_per_s
    assert 0.5 * per_step < result.step_time_s < 2 * per_step
    assert [step for step, _ in result.loss_curve] == list(range(40))
    assert sum(line.startswith("step") for line in lines) == 4  # every log_every steps


def test_validation_curve_without_changing_the_training_trajectory(splits):
    silent = [].append
    plain_model, curved_model = tiny_model(), tiny_model()
    plain = train(plain_model, lm(plain_model, splits), tiny_config(steps=12), CPU, log=silent)
    curved = train(curved_model, lm(curved_model, splits), tiny_config(steps=12, eval_every=5),
                   CPU, log=silent)
    assert [step for step, _ in curved.val_curve] == [5, 10, 12]
    assert curved.val_curve[-1][1] == curved.val_loss == plain.val_loss
    assert curved.val_curve[0][1] > curved.val_curve[-1][1]  # validation falls as training goes
    assert curved.loss_curve == plain.loss_curve  # evaluating leaves training untouched
    assert plain.val_curve == [(12, plain.val_loss)]


def test_a_probe_is_measured_where_validation_is_and_leaves_training_untouched(splits):
    silent = [].append
    plain_model, probed_model = tiny_model(), tiny_model()
    plain = train(plain_model, lm(plain_model, splits, val=False), tiny_config(steps=12), CPU,
                  log=silent)
    modes = []

    def probe(model: GPT) -> dict[str, float]:
        modes.append(model.training)
        return {"norm": model.lm_head.weight.norm().item(), "zero": 0}

    probed = train(probed_model, lm(probed_model, splits, val=False),
                   tiny_config(steps=12, eval_every=5), CPU, log=silent, probe=probe)
    # without validation batches, the probe alone makes the evaluation points
    assert [step for step, _ in probed.probe_curves["norm"]] == [5, 10, 12]
    assert probed.probe_curves["zero"] == [(5, 0.0), (10, 0.0), (12, 0.0)]
    assert probed.probe_curves["norm"][-1][1] == pytest.approx(
        probed_model.lm_head.weight.norm().item())
    assert len({value for _, value in probed.probe_curves["norm"]}) == 3  # the model moved
    assert modes == [False] * 3 and probed_model.training  # eval mode, then restored
    assert probed.loss_curve == plain.loss_curve and probed.val_curve == plain.val_curve == []
    assert plain.probe_curves == {}


@pytest.mark.parametrize("autocast", ["none", "bf16"])
def test_same_seed_gives_bitwise_identical_loss_curves(splits, autocast):
    silent = [].append
    runs = []
    for seed in (0, 0, 1):
        model = tiny_model()
        runs.append(train(model, lm(model, splits, val=False),
                          tiny_config(steps=15, autocast=autocast, seed=seed), CPU, log=silent))
    assert runs[0].loss_curve == runs[1].loss_curve
    assert runs[2].loss_curve != runs[0].loss_curve


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


def test_learning_rate_can_hold_its_peak_then_decay_linearly_over_the_last_share():
    cfg = TrainConfig(steps=100, learning_rate=1e-3, min_lr=0.0, warmup_steps=0,
                      decay="linear", decay_fraction=0.2)
    assert [learning_rate_at(step, cfg) for step in (0, 50, 79)] == [1e-3] * 3
    assert learning_rate_at(80, cfg) == pytest.approx(1e-3)
    assert learning_rate_at(90, cfg) == pytest.approx(5e-4)
    assert learning_rate_at(99, cfg) == pytest.approx(5e-5)
    assert learning_rate_at(100, cfg) == 0.0
    with pytest.raises(ValueError, match="decay_fraction"):
        TrainConfig(decay_fraction=0.0)


def test_the_objectives_schedule_sees_every_step_before_it_runs(splits):
    seen = []
    model = tiny_model()
    objective = lm(model, splits, val=False)
    objective.schedule = lambda step, steps: seen.append((step, steps))
    train(model, objective, tiny_config(steps=5), CPU, log=[].append)
    assert seen == [(step, 5) for step in range(5)]


def test_gradient_clipping_bounds_the_global_norm(splits):
    model = tiny_model()
    optimizer = configure_optimizer(model, tiny_config(), CPU)
    batch = get_batch(splits.train, 4, 32, torch.Generator().manual_seed(0))
    _, norm_before = train_step(model, optimizer, next_token_loss, batch, grad_clip=1e-3)
    norm_after = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm_before > 1e-2  # so the clip had something to do
    assert norm_after <= 1e-3 * (1 + 1e-4)
    _, unclipped = train_step(model, optimizer, next_token_loss, batch, grad_clip=0.0)
    assert torch.norm(torch.stack([p.grad.norm() for p in model.parameters()])) == (
        pytest.approx(unclipped.item(), rel=1e-5))


def test_accumulating_micro_batches_follows_the_whole_batchs_trajectory(splits):
    # The loop cuts the same global batch into micro-batches: in fp32 the losses and the final
    # weights match one big batch up to the order of floating-point sums.
    silent = [].append
    runs, rows_seen = {}, {}
    for accumulate in (1, 4):
        model = tiny_model()
        objective = lm(model, splits)
        rows_seen[accumulate] = []

        def loss(model, batch, seen=rows_seen[accumulate]):
            if model.training:
                seen.append(len(batch[0]))
            return next_token_loss(model, batch)

        objective.loss = loss
        result = train(model, objective, tiny_config(steps=12, autocast="none",
                                                     accumulate=accumulate), CPU, log=silent)
        runs[accumulate] = (result, model.state_dict())
    assert rows_seen[1] == [8] * 12 and rows_seen[4] == [2] * 48  # four micro-batches a step
    (whole, whole_weights), (micro, micro_weights) = runs[1], runs[4]
    assert [s for s, _ in micro.loss_curve] == list(range(12))
    assert [loss for _, loss in micro.loss_curve] == pytest.approx(
        [loss for _, loss in whole.loss_curve], rel=1e-5, abs=1e-6)
    assert micro.val_loss == pytest.approx(whole.val_loss, rel=1e-5, abs=1e-6)
    assert whole.loss_curve[-1][1] < whole.loss_curve[0][1] - 0.5  # the weights did move
    # Adam divides by the root of a rare token's tiny second moment, which magnifies rounding:
    # atol 1e-5 (measured: 1.5e-6), where other batches move the weights by 4e-2
    for name, weight in whole_weights.items():
        torch.testing.assert_close(micro_weights[name], weight, rtol=1e-5, atol=1e-5)
    assert micro.items_seen == whole.items_seen == 12 * 8 * 32  # whole global batches


@pytest.mark.parametrize("accumulate", [2, 4])
def test_an_accumulated_step_has_the_whole_batchs_loss_and_gradient(splits, accumulate):
    # Adam hides a gradient's scale from the weights, so check the gradient itself: summed over
    # micro-batches it must be the whole batch's, not `accumulate` times it.
    batch = get_batch(splits.train, 8, 32, torch.Generator().manual_seed(0))
    steps = {}
    for parts in (1, accumulate):
        model = tiny_model()
        optimizer = configure_optimizer(model, tiny_config(), CPU)
        loss, norm = train_step(model, optimizer, next_token_loss, batch, grad_clip=0.0,
                                accumulate=parts)
        steps[parts] = loss, norm, {n: p.grad for n, p in model.named_parameters()}
    (loss, norm, grads), (micro_loss, micro_norm, micro_grads) = steps[1], steps[accumulate]
    assert micro_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert micro_norm.item() == pytest.approx(norm.item(), rel=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(micro_grads[name], grad, rtol=1e-4, atol=1e-7)


def test_a_batch_that_cannot_be_cut_evenly_is_refused(splits):
    model = tiny_model()
    with pytest.raises(ValueError, match="8 rows cannot be cut into 3 equal micro-batches"):
        train(model, lm(model, splits), tiny_config(steps=2, warmup_steps=1, accumulate=3), CPU,
              log=[].append)
    # tensors whose rows do not line up (a preference batch: 2B token rows, B shifts)
    pairs = (torch.zeros(8, 5), torch.zeros(8), torch.zeros(4))
    with pytest.raises(ValueError, match="rows do not line up"):
        micro_batches(pairs, 2)
    assert micro_batches(pairs, 1) == [pairs]  # uncut, as without accumulation
    x, y = torch.arange(12).view(6, 2), torch.arange(6)
    cut = micro_batches((x, y), 3)
    assert [b[1].tolist() for b in cut] == [[0, 1], [2, 3], [4, 5]]  # consecutive, in order
    assert all(torch.equal(b[0], x[2 * i : 2 * i + 2]) for i, b in enumerate(cut))


def test_accumulate_must_be_positive_and_round_trips_through_params():
    from pydantic import TypeAdapter

    with pytest.raises(ValueError, match="accumulate"):
        TrainConfig(accumulate=0)
    dump = TypeAdapter(TrainConfig).dump_python
    assert dump(TrainConfig(accumulate=2), mode="json")["accumulate"] == 2
    assert TrainConfig(**dump(TrainConfig(accumulate=2))) == TrainConfig(accumulate=2)


def test_evaluate_is_deterministic_and_restores_training_mode(splits):
    model = tiny_model()
    model.train()
    batches = lm(model, splits).val_batches
    assert len(batches) == 2 and batches[0][0].shape == (8, 32)
    first = evaluate(model, batches, next_token_loss, CPU)
    second = evaluate(model, batches, next_token_loss, CPU)
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


def test_configure_optimizer_decays_only_matrices():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, n_layer=2, d_model=32, n_heads=4, n_kv_heads=4,
                          head_dim=8, bias=True, kv_latent_dim=12, kv_rope_dim=4))
    opt = configure_optimizer(model, TrainConfig(weight_decay=0.1), CPU)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    ids = {id(p) for p in no_decay["params"]}
    assert id(model.norm_f.weight) in ids
    assert id(model.blocks[0].attn.kv_norm.weight) in ids
    assert id(model.blocks[0].mlp.up_proj.bias) in ids
    n_grouped = len(decay["params"]) + len(no_decay["params"])
    assert n_grouped == len(list(model.parameters()))


def test_train_config_rejects_wrong_types_and_impossible_schedules():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps="many")
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=20)
    with pytest.raises(ValueError, match="autocast"):
        TrainConfig(autocast="fp16")


def test_fsdp_over_two_ranks_follows_the_single_process_loss_trajectory(tmp_path):
    # The loop draws the same global batch on every rank and trains each on its half: the loss
    # curve must not depend on the world size (up to the order of floating-point sums).
    import json
    from pathlib import Path

    from distributed_train import build

    script = Path(__file__).with_name("distributed_train.py")
    out = tmp_path / "w2.json"
    launch([str(script), str(out)], nproc=2, timeout=300)
    sharded = json.loads(out.read_text())

    model, objective, cfg = build()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(model, objective, cfg, CPU, log=[].append)
    finally:
        torch.set_num_threads(threads)
    assert [s for s, _ in sharded["loss_curve"]] == list(range(12))
    for (_, a), (_, b) in zip(sharded["loss_curve"], single.loss_curve, strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    assert sharded["val_loss"] == pytest.approx(single.val_loss, rel=1e-4)
    assert single.loss_curve[-1][1] < single.loss_curve[0][1] - 0.5  # it did learn
