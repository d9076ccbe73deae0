"""The one training loop every experiment uses.

AdamW from the model's own parameter groups, linear warmup then cosine decay to a floor,
global gradient clipping, bf16 autocast on CUDA, optional torch.compile, and honest
throughput: tokens/s after warmup and MFU against the measured matmul peak. Progress goes to
plain log lines (a progress bar too when stderr is a terminal), so Snakemake logs show it.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn
from tqdm import tqdm

from digestlab.data.corpus import get_batch, validation_windows
from digestlab.device import measure_peak_flops, seed_everything, spec_peak_flops

# What autocast="auto" means on CPU, chosen by measurement on the 2-core EPYC (AVX512-BF16).
# With two threads bf16 autocast trained 1.1x (d_model 128) to 1.5x (d_model 256, batch 32)
# faster than fp32, within seed noise of fp32's loss (+0.005 nats over four seeds). But the
# experiments train one single-threaded model per core, and there a 6-layer d_model 128 model
# ran at the same speed in both (5.2k tok/s), so bf16 buys nothing where it would be used.
CPU_AUTOCAST_DEFAULT = "none"

T, R = TypeVar("T"), TypeVar("R")


@dataclass
class TrainConfig:
    """Everything the loop needs besides the model and the data."""

    steps: int = 200  # optimizer steps
    batch_size: int = 32  # sequences per step
    seq_len: int = 128  # tokens per sequence
    learning_rate: float = 1e-3  # peak learning rate, reached at the end of warmup
    min_lr: float = 1e-4  # floor of the cosine decay
    warmup_steps: int = 20  # steps of linear warmup from learning_rate / warmup_steps
    weight_decay: float = 0.1  # AdamW decay on matrices and embeddings (not norms or biases)
    grad_clip: float = 1.0  # largest global gradient norm; 0 turns clipping off
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    seed: int = 0  # seeds dropout and the batch sampler; the model is seeded by its builder
    compile: bool = False  # run the model through torch.compile
    autocast: str = "auto"  # "auto" (bf16 on CUDA, CPU_AUTOCAST_DEFAULT on CPU), "bf16", "none"
    eval_batches: int = 8  # validation batches of batch_size fixed windows each
    log_every: int = 50  # steps between progress lines


@dataclass
class TrainResult:
    """What a run measured; plain numbers, ready for metrics.json."""

    final_train_loss: float  # mean training loss over the last min(10, steps) steps
    val_loss: float | None  # mean loss over the fixed validation windows; None without val data
    tokens_seen: int  # training tokens consumed
    tokens_per_s: float  # training throughput after the warmup steps
    mfu: float  # achieved FLOP/s over the measured matmul peak in the compute dtype
    mfu_spec: float | None  # achieved FLOP/s over the GPU's spec-sheet bf16 peak; None on CPU
    peak_flops: float  # the measured peak the MFU is relative to, FLOP/s
    wall_time_s: float  # the whole call, compile and evaluation included
    loss_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, loss), every step

    @property
    def val_perplexity(self) -> float | None:
        """exp(val_loss), or None without validation data."""
        return None if self.val_loss is None else math.exp(self.val_loss)


def autocast_dtype(autocast: str, device: torch.device) -> torch.dtype | None:
    """Resolve an autocast setting to bf16 or None (full precision) for this device."""
    if autocast == "auto":
        autocast = "bf16" if device.type == "cuda" else CPU_AUTOCAST_DEFAULT
    if autocast == "bf16":
        return torch.bfloat16
    if autocast == "none":
        return None
    raise ValueError(f"autocast must be 'auto', 'bf16' or 'none', got {autocast!r}")


def _autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def learning_rate_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for a 0-based step: linear warmup, cosine decay to min_lr, then the floor."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr + cosine * (cfg.learning_rate - cfg.min_lr)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    grad_clip: float,
    amp_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward, backward, clip and optimizer step; returns (loss, gradient norm before
    clipping) as detached tensors, so the caller decides when to synchronize."""
    optimizer.zero_grad(set_to_none=True)
    with _autocast_context(x.device, amp_dtype):
        _, loss = model(x, y)
    loss.backward()
    # An infinite bound still returns the norm, which the log reports either way.
    max_norm = grad_clip if grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.detach(), grad_norm.detach()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    val_data: torch.Tensor,
    device: torch.device,
    seq_len: int = 128,
    batch_size: int = 32,
    n_batches: int = 8,
    autocast: str = "none",
) -> float:
    """Mean loss over a fixed set of validation windows (same windows every call);
    perplexity is exp of it."""
    was_training = model.training
    model.eval()
    amp_dtype = autocast_dtype(autocast, device)
    x_all, y_all = validation_windows(val_data, batch_size * n_batches, seq_len)
    total = torch.zeros((), device=device)
    for start in range(0, len(x_all), batch_size):
        x = x_all[start : start + batch_size].to(device)
        y = y_all[start : start + batch_size].to(device)
        with _autocast_context(device, amp_dtype):
            _, loss = model(x, y)
        total += loss.float() * len(x)
    model.train(was_training)
    return total.item() / len(x_all)


def _single_thread() -> None:
    # One thread per run: results do not depend on how many runs share the machine.
    torch.set_num_threads(1)


def map_runs(fn: Callable[[T], R], jobs: list[T], workers: int, device: torch.device) -> list[R]:
    """Run `fn` over `jobs`, the independent training runs of an experiment, in order.

    On the CPU each run is single-threaded and `workers` of them run side by side, one per
    core, so a run's numbers do not depend on how many cores there are. On a GPU the runs go
    one at a time in this process (a forked child cannot use CUDA once the parent touched it).
    """
    if device.type != "cpu" or workers <= 1:
        threads = torch.get_num_threads()
        if device.type == "cpu":
            _single_thread()
        try:
            return [fn(job) for job in jobs]
        finally:
            torch.set_num_threads(threads)
    # fork, not spawn: spawn re-runs the main module, which under Snakemake is the job script
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=fork, initializer=_single_thread) as pool:
        return list(pool.map(fn, jobs))


def _log_line(line: str) -> None:
    # tqdm.write keeps a live progress bar intact and is a plain print without one.
    tqdm.write(line, file=sys.stderr)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    model: nn.Module,
    train_data: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    val_data: torch.Tensor | None = None,
    log: Callable[[str], None] = _log_line,
) -> TrainResult:
    """Train the model in place on random windows of train_data (uint8 tokens) and return
    what was measured. Same seed, same model init and CPU: bitwise the same losses."""
    wall_start = time.perf_counter()
    seed_everything(cfg.seed)
    batch_generator = torch.Generator().manual_seed(cfg.seed)  # windows drawn on the CPU
    model.to(device)
    model.train()
    optimizer = model.configure_optimizers(
        cfg.weight_decay, cfg.learning_rate, cfg.betas, device.type
    )
    step_model = torch.compile(model) if cfg.compile else model
    amp_dtype = autocast_dtype(cfg.autocast, device)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    precision = "bf16 autocast" if amp_dtype else "fp32"
    log(
        f"training {model.num_params():,} parameters on {device.type} for {cfg.steps} steps of "
        f"{cfg.batch_size}x{cfg.seq_len} tokens, {precision}, compile={cfg.compile}"
    )

    # The first steps pay for compilation, allocation and cold caches; time the rest.
    timed_from = min(cfg.steps - 1, max(3 if cfg.compile else 1, cfg.steps // 10))
    timer_start = time.perf_counter()
    window_start, window_step = time.perf_counter(), 0
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    loss_curve: list[tuple[int, float]] = []
    progress = tqdm(total=cfg.steps, file=sys.stderr, disable=not sys.stderr.isatty(),
                    leave=False, unit="step")
    for step in range(cfg.steps):
        if step == timed_from:
            _synchronize(device)
            timer_start = time.perf_counter()
        lr = learning_rate_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, cfg.batch_size, cfg.seq_len, batch_generator)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, grad_norm = train_step(step_model, optimizer, x, y, cfg.grad_clip, amp_dtype)
        pending.append((step, loss, grad_norm))
        progress.update()
        last = step == cfg.steps - 1
        if (step + 1) % cfg.log_every == 0 or last:
            # Reading losses back synchronizes with the device; do it only at log points.
            losses = torch.stack([p[1] for p in pending]).float().tolist()
            loss_curve += [(p[0], loss) for p, loss in zip(pending, losses, strict=True)]
            grad_norm_value = pending[-1][2].item()
            pending.clear()
            now = time.perf_counter()
            window_tokens_per_s = (step + 1 - window_step) * tokens_per_step / (now - window_start)
            window_start, window_step = now, step + 1
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
            log(
                f"step {step + 1:>6}/{cfg.steps} | loss {losses[-1]:.4f} | lr {lr:.2e} | "
                f"grad norm {grad_norm_value:.3f} | {window_tokens_per_s:,.0f} tok/s"
            )
    _synchronize(device)
    timed_steps = cfg.steps - timed_from
    tokens_per_s = timed_steps * tokens_per_step / (time.perf_counter() - timer_start)
    progress.close()

    achieved_flops = model.flops_per_token(cfg.seq_len) * tokens_per_s
    peak_flops = measure_peak_flops(device, amp_dtype or torch.float32)
    spec_flops = spec_peak_flops(device)
    val_loss = None
    if val_data is not None:
        val_loss = evaluate(model, val_data, device, cfg.seq_len, cfg.batch_size,
                            cfg.eval_batches, cfg.autocast)
    tail = [loss for _, loss in loss_curve[-10:]]
    result = TrainResult(
        final_train_loss=sum(tail) / len(tail),
        val_loss=val_loss,
        tokens_seen=cfg.steps * tokens_per_step,
        tokens_per_s=tokens_per_s,
        mfu=achieved_flops / peak_flops,
        mfu_spec=achieved_flops / spec_flops if spec_flops else None,
        peak_flops=peak_flops,
        wall_time_s=time.perf_counter() - wall_start,
        loss_curve=loss_curve,
    )
    summary = f"done: train loss {result.final_train_loss:.4f}"
    if val_loss is not None:
        summary += f" | val loss {val_loss:.4f} (ppl {result.val_perplexity:.2f})"
    summary += f" | {tokens_per_s:,.0f} tok/s | MFU {result.mfu:.1%}"
    if result.mfu_spec is not None:
        summary += f" (spec-sheet MFU {result.mfu_spec:.1%})"
    log(summary + f" | {result.wall_time_s:.1f} s")
    return result
