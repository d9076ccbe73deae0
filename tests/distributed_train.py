"""Train a tiny GPT with the one loop, sharded by FSDP2 over however many ranks torchrun starts,
and write the loss curve as JSON. Run by tests/test_train.py, which trains `build()`'s model in
one process to compare:

    torchrun --standalone --nproc_per_node 2 tests/distributed_train.py out.json
"""

import json
import sys

import torch
import torch.distributed as dist

from digestlab.configs import GPTConfig, TrainConfig
from digestlab.data import build_splits
from digestlab.device import seed_everything
from digestlab.nn import GPT
from digestlab.objectives import language_model
from digestlab.parallel import shard
from digestlab.train import Objective


def build() -> tuple[GPT, Objective, TrainConfig]:
    """The model, objective and loop settings both runs use."""
    splits = build_splits(30, seed=0)
    seed_everything(0)
    model = GPT(GPTConfig(block_size=32, n_layer=2, d_model=32, n_heads=2, n_kv_heads=2,
                          head_dim=16))
    objective = language_model(model, splits.train, 8, 32, splits.val, eval_batches=2)
    cfg = TrainConfig(steps=12, learning_rate=3e-3, min_lr=3e-4, warmup_steps=2, log_every=4)
    return model, objective, cfg


def main(out: str) -> None:
    """Shard each block and then the root, train, and write rank 0's curve to `out`."""
    from digestlab.train import train

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    model, objective, cfg = build()
    shard(model)
    result = train(model, objective, cfg, torch.device("cpu"), log=lambda line: None)
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump({"loss_curve": result.loss_curve, "val_loss": result.val_loss}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
