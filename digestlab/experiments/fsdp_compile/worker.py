"""Runs of the experiment, in each of their processes:

    python -m digestlab.experiments.fsdp_compile.worker JOB OUT                 # one process
    torchrun --standalone --nproc_per_node W -m digestlab.experiments.fsdp_compile.worker JOB OUT

JOB is a JSON file with the params and the setups to run one after the other; rank 0 writes
what the loop measured in each, and the peak memory over ranks, to OUT. Every timed or memory
run is a job of its own, in processes of its own, so that its peak memory is its own and
nothing compiled or allocated by one run serves the next; the loss-parity runs, which measure
neither, share their processes. At the smoke scale (`Params.one_process`) every single-process
run goes through `run_plan` in the experiment's own process instead, sharing what it compiled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import torch
import torch.distributed as dist

from digestlab.data import build_splits
from digestlab.device import (
    device_name,
    memory_in_use,
    peak_memory,
    pick_device,
    reset_peak_memory,
    seed_everything,
)
from digestlab.experiments.fsdp_compile import Params, Setup
from digestlab.io import write_json_atomic
from digestlab.nn import GPT
from digestlab.objectives import language_model
from digestlab.parallel import checkpoint_blocks, compile_blocks, shard
from digestlab.train import process_group, train


def run(params: Params, setup: Setup, device: torch.device) -> dict:
    """Build the model with the setup's levers (checkpointing, then compiling each block, then
    sharding, as torchtitan applies them), train it with the one loop, and return the loop's
    measurements with the training memory (peak above the built model, max over ranks)."""
    splits = build_splits(params.n_documents, seed=0)
    seed_everything(setup.seed)
    shape = params.parity if setup.parity else params  # its model, batch_size and seq_len
    with device:  # built where it trains: a billion parameters initialise slowly on a CPU
        model = GPT(shape.model)
    checkpointed = checkpoint_blocks(model, setup.checkpoint)
    if setup.compile:
        # this run compiles its own blocks, as in a process of its own; with one process for
        # every run, what one run compiled serves the next run of its shape
        if not params.one_process:
            torch._dynamo.reset()
        compile_blocks(model)
    if setup.fsdp:
        shard(model, torch.bfloat16 if setup.bf16_params else None)
    val = (splits.val, params.parity.eval_batches) if setup.parity else (None,)
    objective = language_model(model, splits.train, shape.batch_size, shape.seq_len, *val)
    # FSDP's mixed precision casts the parameters itself; autocast would only add casts.
    cfg = dataclasses.replace(params.train, seed=setup.seed,
                              autocast="none" if setup.bf16_params else params.train.autocast)
    if setup.memory:
        cfg = dataclasses.replace(cfg, steps=params.memory_steps, warmup_steps=1)
    if setup.parity:  # long enough for bf16 rounding to compound
        steps = params.parity.steps
        cfg = dataclasses.replace(cfg, steps=steps, warmup_steps=max(1, steps // 10),
                                  log_every=max(1, steps // 4), autocast="bf16")
    rank, world = process_group()
    log = print if rank == 0 else (lambda line: None)
    log(f"{setup.name} (seed {setup.seed}) on {world} process(es), {device_name(device)}")
    held = memory_in_use(device)
    reset_peak_memory(device)
    result = train(model, objective, cfg, device, log=log)
    training_memory = torch.tensor(float(peak_memory(device) - held))
    if world > 1:
        training_memory = training_memory.to(device)
        dist.all_reduce(training_memory, op=dist.ReduceOp.MAX)
    # Speed from the median step: one slow step (a page fault storm, a busy neighbour) moves a
    # mean, not a median. MFU is proportional to speed.
    tokens_per_s = objective.items_per_batch / result.step_time_s
    scale = tokens_per_s / result.items_per_s
    return {
        "setup": setup.__dict__,
        "checkpointed_blocks": checkpointed,
        "world": world,
        "n_params": sum(p.numel() for p in model.parameters()),  # a DTensor counts in full
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_mean": result.items_per_s,
        "step_time_s": result.step_time_s,
        "mfu": result.mfu and result.mfu * scale,
        "mfu_spec": result.mfu_spec and result.mfu_spec * scale,
        "peak_flops": result.peak_flops,
        "training_memory_bytes": training_memory.item(),
        "wall_time_s": result.wall_time_s,
        "loss_curve": [loss for _, loss in result.loss_curve],
        "val_loss": result.val_loss,
    }


def run_plan(params: Params, plan: list[Setup], device: torch.device) -> list[dict]:
    """Run the setups one after the other in this process (a rank of the group torchrun
    started, when it did) and return what each measured, on every rank. FSDP outside such a
    group runs in a group of one, made here."""
    alone = any(setup.fsdp for setup in plan) and not dist.is_initialized()
    if alone:  # no rendezvous needed
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(params.threads)
    try:
        return [run(params, setup, device) for setup in plan]
    finally:
        torch.set_num_threads(threads)  # as it was, for a caller that goes on in this process
        if alone:
            dist.destroy_process_group()


def main(job_path: str, out_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    params = Params.model_validate(job["params"])
    plan = [Setup(**setup) for setup in job["setups"]]
    device = pick_device(job["device"])
    torchrun = "WORLD_SIZE" in os.environ
    if torchrun:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        measured = run_plan(params, plan, device)
        if process_group()[0] == 0:
            write_json_atomic(out_path, measured)
    finally:
        if torchrun:
            dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
