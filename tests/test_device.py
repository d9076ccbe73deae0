"""The code paths of a GPU run, checked on the CPU wherever they can be: device selection, the
spec-sheet peak, and torch.compile in the training loop (bf16 autocast: tests/test_train.py)."""

from __future__ import annotations

import pytest
import torch

from digestlab import device
from digestlab.configs import GPTConfig, TrainConfig
from digestlab.data import build_splits
from digestlab.nn import GPT
from digestlab.objectives import language_model
from digestlab.train import train


@pytest.fixture
def tf32_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_auto_picks_cuda_when_present_and_turns_tf32_on(monkeypatch, tf32_flags):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    torch.backends.cuda.matmul.allow_tf32 = False
    assert device.pick_device().type == "cuda"
    assert torch.backends.cuda.matmul.allow_tf32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.pick_device().type == "cpu"


def test_asking_for_cuda_without_it_fails_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        device.pick_device("cuda")


@pytest.mark.parametrize("name, flops", [
    ("NVIDIA H200", 989.4e12), ("NVIDIA H100 PCIe", 756.0e12), ("NVIDIA H100 80GB HBM3", 989.4e12),
    ("NVIDIA A100-SXM4-80GB", 312.0e12), ("Some Future GPU", None),
])
def test_spec_sheet_peak_is_matched_by_name_most_specific_first(monkeypatch, name, flops):
    monkeypatch.setattr(device, "device_name", lambda _: name)
    assert device.spec_peak_flops(torch.device("cuda")) == flops
    assert device.spec_peak_flops(torch.device("cpu")) is None


def test_compiled_training_follows_eager_training():
    splits = build_splits(30, seed=0)
    curves = {}
    for compiled in (False, True):
        device.seed_everything(0)
        model = GPT(GPTConfig(block_size=32, n_layer=2, d_model=32, n_heads=2, n_kv_heads=2,
                              head_dim=16))
        cfg = TrainConfig(steps=8, learning_rate=3e-3, min_lr=3e-4, warmup_steps=2, log_every=8,
                          compile=compiled)
        result = train(model, language_model(model, splits.train, 8, 32), cfg,
                       torch.device("cpu"), log=[].append)
        curves[compiled] = [loss for _, loss in result.loss_curve]
    assert curves[True] == pytest.approx(curves[False], abs=1e-4)
    assert curves[True][-1] < curves[True][0] - 0.3


def test_memory_in_use_and_its_peak_see_a_large_allocation_on_the_cpu():
    cpu = torch.device("cpu")
    held = device.memory_in_use(cpu)
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, every page written
    assert device.memory_in_use(cpu) > held + 60 * 2**20
    assert device.peak_memory(cpu) >= device.memory_in_use(cpu)
    del block
