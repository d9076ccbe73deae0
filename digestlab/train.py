"""The one training loop every experiment uses, for any model and any loss.

What it trains on and what it minimises come in an `Objective` (a batch source and a loss
function); `digestlab/objectives.py` builds the usual ones: next-token prediction for
pretraining and supervised fine-tuning, and DPO against a frozen reference. Everything else is
here, once: AdamW with decay on matrices only, linear warmup then a cosine (or a held peak and a
linear) decay to a floor, global gradient clipping, bf16 autocast on CUDA, optional
torch.compile, the loss curve (and a validation curve every `eval_every` steps, beside the
curves of a probe: measurements of the model such as where its attention goes), and honest
throughput: items (tokens or samples) per second after warmup, the median step time, and MFU
against the measured matmul peak. Progress goes to plain log lines (a progress bar too when
stderr is a terminal), so Snakemake logs show it. With cfg.accumulate = k, each step's batch is
cut into k micro-batches whose gradients add up: the same data and (in fp32, for a mean over
equal rows, without dropout) the same trajectory up to rounding, in less memory.

Under torch.distributed (FSDP under torchrun) every rank draws the same global batch and trains
on its own share of the rows; logged losses are averaged over ranks. Where the loss is a mean
over rows of equal weight (language-model windows, preference pairs) and there is no dropout,
the loss trajectory does not depend on the world size; a loss averaged over a varying number of
scored tokens per row (supervised fine-tuning) is weighted slightly differently across ranks.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from digestlab.configs import TrainConfig
from digestlab.device import measure_peak_flops, seed_everything, spec_peak_flops, synchronize

__all__ = ["Objective", "TrainConfig", "TrainResult", "evaluate", "map_runs", "run_probe",
           "train"]

# What autocast="auto" means on CPU, chosen by measurement on the 2-core EPYC (AVX512-BF16).
# With two threads bf16 autocast trained 1.1x (d_model 128) to 1.5x (d_model 256, batch 32)
# faster than fp32, within seed noise of fp32's loss (+0.005 nats over four seeds). But the
# experiments train one single-threaded model per core, and there a 6-layer d_model 128 model
# ran at the same speed in both (5.2k tok/s), so bf16 buys nothing where it would be used.
CPU_AUTOCAST_DEFAULT = "none"

T, R = TypeVar("T"), TypeVar("R")
Batch = tuple[torch.Tensor, ...]  # tensors whose first axis is the batch's rows
Probe = Callable[[nn.Module], Mapping[str, float]]  # a model's measurements, by name


@dataclass
class Objective:
    """What the loop trains on and what it minimises."""

    next_batch: Callable[[torch.Generator], Batch]  # a fresh training batch, drawn on the CPU
    loss: Callable[[nn.Module, Batch], torch.Tensor]  # scalar mean loss of the model on a batch
    items_per_batch: int  # tokens (or samples) in one batch, for throughput
    flops_per_item: float = 0.0  # training FLOPs per item; 0 when unknown (then no MFU)
    unit: str = "tok"  # what an item is, for the log: "tok", "sample", "pair"...
    val_batches: Sequence[Batch] = ()  # fixed validation batches; val_loss is their mean loss
    # called before each step with (step, steps), for a loss that changes over training (an
    # SAE's sparsity penalty warming up)
    schedule: Callable[[int, int], None] | None = None


@dataclass
class TrainResult:
    """What a run measured; plain numbers, ready for metrics.json."""

    final_train_loss: float  # mean training loss over the last min(10, steps) steps
    val_loss: float | None  # mean loss over the objective's validation batches, if any
    items_seen: int  # training items (tokens or samples) consumed, over all ranks
    items_per_s: float  # training throughput after the warmup steps, over all ranks
    unit: str  # what an item is: "tok", "sample", "pair"...
    mfu: float | None  # achieved FLOP/s over the measured matmul peak in the compute dtype
    mfu_spec: float | None  # achieved FLOP/s over the GPU's spec-sheet bf16 peak; None on CPU
    peak_flops: float  # the measured peak of one device the MFU is relative to, FLOP/s
    wall_time_s: float  # the whole call, compile and evaluation included
    # median seconds per step over the log windows after warmup (one window per log line)
    step_time_s: float | None = None
    loss_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, loss), every step
    # (steps done, validation loss) every cfg.eval_every steps and at the end, when validating
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    # each value the probe measures, by name: (steps done, value) at the same points and the end
    probe_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

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
    """Learning rate for a 0-based step: linear warmup, the peak held until the decay starts
    (the last `decay_fraction` of the steps; right after warmup by default), then a cosine or
    linear decay to min_lr, then the floor."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    start = max(cfg.warmup_steps, cfg.steps - round(cfg.decay_fraction * cfg.steps))
    if step < start:
        return cfg.learning_rate
    progress = min(1.0, (step - start) / max(1, cfg.steps - start))
    if cfg.decay == "cosine":
        remaining = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        remaining = 1.0 - progress
    return cfg.min_lr + remaining * (cfg.learning_rate - cfg.min_lr)


def configure_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device
                        ) -> torch.optim.AdamW:
    """AdamW over the trainable parameters that decays matrices and embeddings but not norms,
    biases or other 1-d parameters (fused on CUDA)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = device.type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=cfg.betas, **extra)


def _full(t: torch.Tensor) -> torch.Tensor:
    # FSDP2 shards parameters as DTensors, and the gradient norm of sharded gradients is one too.
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def micro_batches(batch: Batch, parts: int) -> list[Batch]:
    """The batch cut into `parts` equal micro-batches of consecutive rows, in order; the batch
    itself when parts is 1."""
    if parts == 1:
        return [batch]
    rows = {len(t) for t in batch}
    if len(rows) != 1:
        # a preference batch holds 2B rows of tokens and B shifts: row i is not one example
        raise ValueError(
            f"cannot cut a batch into {parts} micro-batches: its tensors have "
            f"{sorted(rows)} rows, so their rows do not line up one example each"
        )
    (n,) = rows
    if n % parts:
        raise ValueError(
            f"a batch of {n} rows cannot be cut into {parts} equal micro-batches: make the "
            f"batch size (per rank, under torch.distributed) a multiple of accumulate={parts}"
        )
    return list(zip(*(t.split(n // parts) for t in batch), strict=True))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    batch: Batch,
    grad_clip: float,
    amp_dtype: torch.dtype | None = None,
    accumulate: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch: forward and backward over its `accumulate` micro-batches,
    global gradient clipping, the update. Returns (the mean of the micro-batch losses, gradient
    norm before clipping) as detached tensors, so the caller decides when to synchronize."""
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for micro_batch in micro_batches(batch, accumulate):
        with _autocast_context(micro_batch[0].device, amp_dtype):
            loss = loss_fn(model, micro_batch)
        # Gradients add up over backward passes: scaled by 1/accumulate, they are those of the
        # mean of the micro-batch losses. For a loss that is a mean over equal rows, that is the
        # whole batch's loss; one averaged over a varying count of scored targets (ignore_index
        # -1, weights) becomes a mean of per-micro-batch means, as it does across ranks.
        (loss / accumulate).backward()
        losses.append(loss.detach())
    # An infinite bound still returns the norm, which the log reports either way.
    max_norm = grad_clip if grad_clip > 0 else math.inf
    params = [p for p in model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    return torch.stack(losses).mean(), _full(grad_norm).detach()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Sequence[Batch],
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    device: torch.device,
    autocast: str = "none",
) -> float:
    """Mean loss over fixed batches, each weighted by its rows; the model's mode is restored."""
    if not batches:
        raise ValueError("evaluate needs at least one batch")
    was_training = model.training
    model.eval()
    amp_dtype = autocast_dtype(autocast, device)
    total, rows = torch.zeros((), device=device), 0
    for batch in batches:
        batch = tuple(t.to(device) for t in batch)
        with _autocast_context(device, amp_dtype):
            loss = loss_fn(model, batch)
        total += loss.float() * len(batch[0])
        rows += len(batch[0])
    model.train(was_training)
    return total.item() / rows


@torch.no_grad()
def run_probe(model: nn.Module, probe: Probe) -> dict[str, float]:
    """What the probe measures on the model in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    values = {name: float(value) for name, value in probe(model).items()}
    model.train(was_training)
    return values


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rows_of_rank(batch: Batch, rank: int, world: int) -> Batch:
    """This rank's contiguous share of every tensor's rows (the whole batch in one process)."""
    if world == 1:
        return batch
    rows = len(batch[0])
    if rows % world:
        raise ValueError(f"a batch of {rows} rows cannot be split evenly over {world} ranks")
    share = rows // world
    return tuple(t[rank * share : (rank + 1) * share] for t in batch)


def _mean_over_ranks(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= world
    return values


def _single_thread() -> None:
    # One thread per run: results do not depend on how many runs share the machine.
    torch.set_num_threads(1)


_NOTHING = object()
_worker_shared: object = _NOTHING  # what map_runs' `shared` is, in a worker process


def _start_worker(shared: object) -> None:
    global _worker_shared
    _single_thread()
    _worker_shared = shared


def _with_shared(fn: Callable, job: object) -> object:
    return fn(job) if _worker_shared is _NOTHING else fn(_worker_shared, job)


def worker_count(threads: int, device: torch.device, jobs: int) -> int:
    """How many runs `map_runs` puts side by side: on the CPU one single-threaded run per core
    it was given (`threads`), never more than there are jobs; on a GPU one."""
    return max(1, min(threads, jobs)) if device.type == "cpu" else 1


def map_runs(fn: Callable[..., R], jobs: list[T], threads: int, device: torch.device,
             shared: object = _NOTHING) -> list[R]:
    """Run `fn` over `jobs`, the independent runs of an experiment, in order, on the `threads`
    cores the job was given.

    On the CPU each run is single-threaded and `worker_count` of them run side by side, one per
    core, so a run's numbers do not depend on how many cores there are. On a GPU the runs go
    one at a time in this process (a forked child cannot use CUDA once the parent touched it).
    With `shared`, each run is `fn(shared, job)`: what every run reads (trained models,
    activations) reaches each worker once, inherited by the fork, where the jobs themselves are
    pickled. This is the one way a trained model reaches the workers.
    """
    workers = worker_count(threads, device, len(jobs))
    if device.type != "cpu" or workers <= 1:
        threads = torch.get_num_threads()
        if device.type == "cpu":
            _single_thread()
        try:
            if shared is _NOTHING:
                return [fn(job) for job in jobs]
            return [fn(shared, job) for job in jobs]
        finally:
            torch.set_num_threads(threads)
    # fork, not spawn: spawn re-runs the main module, which under Snakemake is the job script
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=fork, initializer=_start_worker,
                             initargs=(shared,)) as pool:
        return list(pool.map(functools.partial(_with_shared, fn), jobs))


def _log_line(line: str) -> None:
    # tqdm.write keeps a live progress bar intact and is a plain print without one.
    tqdm.write(line, file=sys.stderr)


def _describe(model: nn.Module, objective: Objective, cfg: TrainConfig, device: torch.device,
              amp_dtype: torch.dtype | None, world: int) -> str:
    # the opening log line: what trains where, for how long, in what precision
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)  # DTensor: global
    ranks = f" on {world} ranks" if world > 1 else ""
    micro = f" in {cfg.accumulate} micro-batches" if cfg.accumulate > 1 else ""
    precision = "bf16 autocast" if amp_dtype else "fp32"
    return (f"training {n_params:,} parameters on {device.type}{ranks} for {cfg.steps} steps of "
            f"{objective.items_per_batch:,} {objective.unit}{micro}, {precision}, "
            f"compile={cfg.compile}")


def _utilization(objective: Objective, items_per_s: float, world: int, device: torch.device,
                 amp_dtype: torch.dtype | None) -> tuple[float | None, float | None, float]:
    """(MFU, spec-sheet MFU, the measured peak FLOP/s of one device) at a throughput over all
    ranks; the MFUs are None without the objective's FLOP count (and without a spec sheet)."""
    peak_flops = measure_peak_flops(device, amp_dtype or torch.float32)
    if not objective.flops_per_item:
        return None, None, peak_flops
    achieved_flops = objective.flops_per_item * items_per_s / world  # per device
    spec_flops = spec_peak_flops(device)
    return (achieved_flops / peak_flops, achieved_flops / spec_flops if spec_flops else None,
            peak_flops)


def _summary(result: TrainResult) -> str:
    # the closing log line
    line = f"done: train loss {result.final_train_loss:.4f}"
    if result.val_loss is not None:
        line += f" | val loss {result.val_loss:.4f}"
    line += f" | {result.items_per_s:,.0f} {result.unit}/s"
    if result.mfu is not None:
        line += f" | MFU {result.mfu:.1%}"
    if result.mfu_spec is not None:
        line += f" (spec-sheet MFU {result.mfu_spec:.1%})"
    return line + f" | {result.wall_time_s:.1f} s"


def train(
    model: nn.Module,
    objective: Objective,
    cfg: TrainConfig,
    device: torch.device,
    log: Callable[[str], None] = _log_line,
    probe: Probe | None = None,
) -> TrainResult:
    """Train the model in place on the objective's batches and return what was measured.
    The `probe` measures the model wherever validation is (every cfg.eval_every steps and at
    the end), without gradients and outside the timed throughput; every rank runs it, as a
    sharded model needs. Same seed, same model init and CPU: bitwise the same losses."""
    wall_start = time.perf_counter()
    seed_everything(cfg.seed)
    batch_generator = torch.Generator().manual_seed(cfg.seed)  # batches drawn on the CPU
    rank, world = process_group()
    model.to(device)
    model.train()
    optimizer = configure_optimizer(model, cfg, device)
    step_model = torch.compile(model) if cfg.compile else model
    amp_dtype = autocast_dtype(cfg.autocast, device)
    log(_describe(model, objective, cfg, device, amp_dtype, world))

    loss_curve: list[tuple[int, float]] = []
    val_curve: list[tuple[int, float]] = []
    probe_curves: dict[str, list[tuple[int, float]]] = {}

    def validate(steps_done: int) -> None:
        # the validation loss and the probe's measurements, both without gradients
        if objective.val_batches:
            val_curve.append((steps_done, evaluate(model, objective.val_batches, objective.loss,
                                                   device, cfg.autocast)))
        if probe is not None:
            for name, value in run_probe(model, probe).items():
                probe_curves.setdefault(name, []).append((steps_done, value))

    # The first steps pay for compilation, allocation and cold caches; time the rest.
    timed_from = min(cfg.steps - 1, max(3 if cfg.compile else 1, cfg.steps // 10))
    timer_start = window_start = time.perf_counter()
    window_step = 0  # the first step of the current log window
    eval_time = 0.0  # validation inside the timed steps, taken out of the throughput
    timed_windows: list[float] = []  # seconds per step of each log window after warmup
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step, loss, grad norm)
    progress = tqdm(total=cfg.steps, file=sys.stderr, leave=False, unit="step",
                    disable=rank != 0 or not sys.stderr.isatty())
    for step in range(cfg.steps):
        if step == timed_from:
            synchronize(device)
            timer_start = window_start = time.perf_counter()
            window_step = step

        # One optimizer step on a fresh global batch (this rank's share of its rows).
        lr = learning_rate_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if objective.schedule is not None:
            objective.schedule(step, cfg.steps)
        batch = rows_of_rank(objective.next_batch(batch_generator), rank, world)
        batch = tuple(t.to(device, non_blocking=True) for t in batch)
        loss, grad_norm = train_step(step_model, optimizer, objective.loss, batch,
                                     cfg.grad_clip, amp_dtype, cfg.accumulate)
        pending.append((step, loss, grad_norm))
        progress.update()

        if (step + 1) % cfg.log_every == 0 or step == cfg.steps - 1:
            # Reading losses back synchronizes with the device; do it only at log points.
            losses = _mean_over_ranks(torch.stack([p[1] for p in pending]).float(), world)
            loss_curve += [(p[0], loss) for p, loss in zip(pending, losses.tolist(), strict=True)]
            grad_norm_value = pending[-1][2].item()
            pending.clear()
            now = time.perf_counter()
            steps_in_window = step + 1 - window_step
            window_rate = steps_in_window * objective.items_per_batch / (now - window_start)
            if step >= timed_from:
                timed_windows.append((now - window_start) / steps_in_window)
            window_start, window_step = now, step + 1
            progress.set_postfix(loss=f"{loss_curve[-1][1]:.4f}")
            if rank == 0:
                log(
                    f"step {step + 1:>6}/{cfg.steps} | loss {loss_curve[-1][1]:.4f} | "
                    f"lr {lr:.2e} | grad norm {grad_norm_value:.3f} | "
                    f"{window_rate:,.0f} {objective.unit}/s"
                )

        if ((objective.val_batches or probe) and cfg.eval_every
                and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps):
            eval_start = time.perf_counter()
            validate(step + 1)
            eval_seconds = time.perf_counter() - eval_start
            if step >= timed_from:
                eval_time += eval_seconds
            window_start += eval_seconds  # out of the log window's rate too
    synchronize(device)
    # every step is one global batch, whatever it was cut into
    items_per_s = (cfg.steps - timed_from) * objective.items_per_batch / (
        time.perf_counter() - timer_start - eval_time)
    progress.close()

    mfu, mfu_spec, peak_flops = _utilization(objective, items_per_s, world, device, amp_dtype)
    # Every rank validates every batch: sharded models need all ranks in each forward.
    validate(cfg.steps)
    tail = [loss for _, loss in loss_curve[-10:]]
    result = TrainResult(
        final_train_loss=sum(tail) / len(tail),
        val_loss=val_curve[-1][1] if objective.val_batches else None,
        items_seen=cfg.steps * objective.items_per_batch,
        items_per_s=items_per_s,
        unit=objective.unit,
        mfu=mfu,
        mfu_spec=mfu_spec,
        peak_flops=peak_flops,
        wall_time_s=time.perf_counter() - wall_start,
        loss_curve=loss_curve,
        val_curve=val_curve,
        step_time_s=statistics.median(timed_windows) if timed_windows else None,
        probe_curves=probe_curves,
    )
    if rank == 0:
        log(_summary(result))
    return result

