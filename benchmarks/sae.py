"""Train both SAE recipes on activations with known features, and print how well each finds them
and how fast it trains.

    python benchmarks/sae.py                      # d 128, 4,096 true features, width 1,024
    python benchmarks/sae.py --width 4096 --steps 4000 --threads 2

The data are sums of random unit directions (`synthetic_activations`), each present with a small
probability, so the right dictionary is known: "recovery" is the mean, over the true directions,
of the best cosine similarity with any learned decoder row. Beside it: explained variance, L0,
dead features, and training throughput in samples/s with its MFU against the measured matmul
peak (one SAE, `--threads` threads; the experiments train one single-threaded SAE per core).
"""

from __future__ import annotations

import argparse

import torch

from digestlab.configs import SAEConfig
from digestlab.nn.sae import (
    SparseAutoencoder,
    evaluate_sae,
    objective,
    recovery,
    synthetic_activations,
    training_config,
)
from digestlab.train import train


def main() -> None:
    """Train each recipe once on the same data and print one line per recipe."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=128, help="activation width")
    parser.add_argument("--features", type=int, default=512, help="true features in the data")
    parser.add_argument("--active", type=float, default=0.01, help="chance each is present")
    parser.add_argument("--width", type=int, default=1024, help="SAE features")
    parser.add_argument("--k", type=int, default=8, help="TopK's active features")
    parser.add_argument("--l1", type=float, default=3.0, help="ReLU recipe's lambda")
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x, directions = synthetic_activations(args.samples + 20_000, args.d, args.features,
                                          args.active, g)
    train_x, held_x = x[: args.samples], x[args.samples :]
    print(f"{args.samples:,} samples of width {args.d}, {args.features} true features, "
          f"{args.features * args.active:.1f} present per sample; SAE width {args.width}")
    for kind in ("relu", "topk"):
        sae = SparseAutoencoder(SAEConfig(d_in=args.d, width=args.width, kind=kind,
                                          l1_coeff=args.l1, k=args.k),
                                torch.Generator().manual_seed(1))
        sae.fit_to(train_x)
        cfg = training_config(args.steps, args.lr)
        result = train(sae, objective(sae, train_x, args.batch), cfg, torch.device("cpu"),
                       log=lambda _: None)
        q = evaluate_sae(sae, held_x)
        print(f"{kind:>5}: recovery {recovery(sae, directions):.3f} | explained variance "
              f"{q['explained_variance']:.3f} | L0 {q['l0']:.1f} | dead "
              f"{q['dead_fraction']:.1%} | {result.items_per_s:,.0f} samples/s | "
              f"MFU {result.mfu:.1%} | {result.wall_time_s:.1f} s")


if __name__ == "__main__":
    main()
