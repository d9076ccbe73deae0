"""The training levers that wrap a model from outside, block by block: activation
checkpointing, compilation and FSDP2 sharding, applied the way torchtitan and fms-fsdp apply
them, and `launch`, which starts the processes a run needs (under torchrun when there are
several).

All three act on `model.blocks`, the GPT's plain ModuleList of transformer blocks, in this
order: checkpointing (it replaces a block with a wrapper), compiling each block, then sharding
(each block, then the root, so that every block's parameters are gathered just before it runs
and freed after).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

__all__ = ["checkpoint_blocks", "checkpointed_blocks", "compile_blocks", "launch", "shard"]


def checkpointed_blocks(n_layer: int, fraction: float) -> list[int]:
    """Indices of the floor(fraction * n_layer) blocks to checkpoint, spread evenly over depth
    (0.5 checkpoints every second block: fms-fsdp's selective activation checkpointing)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the checkpointed fraction must be in [0, 1], got {fraction}")
    return [i for i in range(n_layer) if math.floor((i + 1) * fraction) > math.floor(i * fraction)]


def checkpoint_blocks(model: nn.Module, fraction: float) -> list[int]:
    """Wrap `fraction` of the model's blocks so that their activations are recomputed in the
    backward pass instead of kept; returns the wrapped blocks' indices."""
    # imported here, like FSDP below: torch.distributed's modules take half a second to load,
    # which every process that uses neither would pay
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    chosen = checkpointed_blocks(len(model.blocks), fraction)
    for i in chosen:
        model.blocks[i] = checkpoint_wrapper(model.blocks[i])  # non-reentrant checkpointing
    return chosen


def compile_blocks(model: nn.Module) -> None:
    """Compile each block in place, as torchtitan does: the blocks are alike, so one
    compilation serves them all, and a block wrapped for checkpointing compiles with its
    recomputation."""
    for block in model.blocks:
        block.compile()


def shard(model: nn.Module, param_dtype: torch.dtype | None = None) -> None:
    """Shard the model with FSDP2 over the default process group: each block, then the root.
    With `param_dtype` (bf16) parameters are gathered and computed in it while gradients are
    reduced and the optimizer steps in fp32: FSDP's mixed precision."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32
                                  if param_dtype is not None else None)
    for block in model.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def launch(args: list[str], nproc: int = 1, env: dict[str, str] | None = None,
           timeout: float | None = None) -> None:
    """Run `python ARGS` in a new process, or, for nproc > 1, under torchrun:
    `python -m torch.distributed.run --standalone --nproc_per_node NPROC ARGS`. The processes
    import this package, see `env` on top of this process's environment, and write to this
    process's stdout and stderr (the job's log under Snakemake). Raises RuntimeError when a
    process fails."""
    package_root = str(Path(__file__).resolve().parents[1])
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, full_env.get("PYTHONPATH")) if p)
    full_env.setdefault("OMP_NUM_THREADS", "1")  # each process sets its own thread count
    runner = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    command = [sys.executable, *(runner if nproc > 1 else []), *args]
    sys.stdout.flush()
    sys.stderr.flush()
    done = subprocess.run(command, env=full_env, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} on {nproc} process(es) exited with status "
                           f"{done.returncode}")
