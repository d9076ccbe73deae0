"""Time one training step (forward, backward, clip, AdamW) of the shared GPT, eager vs compiled
and fp32 vs bf16 autocast, and print tokens/s and MFU against the measured matmul peaks.

    python benchmarks/throughput.py                      # d_model 256, 4 layers, seq 128
    python benchmarks/throughput.py --modes compile --precisions fp32 --batch-sizes 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from digestlab.configs import TrainConfig
from digestlab.data import build_splits, get_batch
from digestlab.device import device_name, measure_peak_flops, pick_device, seed_everything
from digestlab.nn import GPT, GPTConfig
from digestlab.objectives import next_token_loss
from digestlab.train import autocast_dtype, configure_optimizer, train_step


def time_steps(model: GPT, data: torch.Tensor, batch_size: int, seq_len: int, mode: str,
               precision: str, device: torch.device, warmup: int, steps: int) -> float:
    """Median seconds per training step after `warmup` untimed steps (compilation included)."""
    optimizer = configure_optimizer(model, TrainConfig(), device)
    step_model = torch.compile(model) if mode == "compile" else model
    amp = autocast_dtype(precision, device)
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for i in range(warmup + steps):
        batch = tuple(t.to(device) for t in get_batch(data, batch_size, seq_len, generator))
        start = time.perf_counter()
        loss, _ = train_step(step_model, optimizer, next_token_loss, batch, grad_clip=1.0,
                             amp_dtype=amp)
        loss.item()  # waits for the device
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    """Parse arguments, run every (mode, precision, batch size) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--mlp", default="swiglu", choices=("swiglu", "gelu"))
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--modes", nargs="+", default=["eager", "compile"],
                        choices=("eager", "compile"))
    parser.add_argument("--precisions", nargs="+", default=["none", "bf16"],
                        choices=("none", "bf16"))
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compile included)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps; the median is shown")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0 keeps the default")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    config = GPTConfig(
        block_size=args.seq_len, n_layer=args.n_layer, d_model=args.d_model,
        n_heads=args.n_heads, n_kv_heads=args.n_heads, head_dim=args.head_dim, mlp=args.mlp,
    )
    data = build_splits(300, seed=0).train
    peak_fp32 = measure_peak_flops(device, torch.float32)
    peak_bf16 = measure_peak_flops(device, torch.bfloat16)
    seed_everything(0)
    flops_per_token = GPT(config).flops_per_token(args.seq_len)
    print(f"{device_name(device)}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"measured matmul peak: fp32 {peak_fp32 / 1e9:,.0f} GFLOP/s, "
          f"bf16 {peak_bf16 / 1e9:,.0f} GFLOP/s; model {flops_per_token / 1e6:.2f} MFLOP/token")
    print(f"{'mode':<8} {'precision':<9} {'batch':>5} {'ms/step':>9} {'tok/s':>9} "
          f"{'MFU fp32':>9} {'MFU bf16':>9}")
    for mode in args.modes:
        for precision in args.precisions:
            for batch_size in args.batch_sizes:
                torch._dynamo.reset()  # each row compiles its own graph, as a fresh run would
                seed_everything(0)
                model = GPT(config).to(device)
                seconds = time_steps(model, data, batch_size, args.seq_len, mode, precision,
                                     device, args.warmup, args.steps)
                tokens_per_s = batch_size * args.seq_len / seconds
                achieved = flops_per_token * tokens_per_s
                label = "fp32" if precision == "none" else precision
                print(f"{mode:<8} {label:<9} {batch_size:>5} {seconds * 1e3:>9.1f} "
                      f"{tokens_per_s:>9,.0f} {achieved / peak_fp32:>9.1%} "
                      f"{achieved / peak_bf16:>9.1%}", flush=True)


if __name__ == "__main__":
    main()
