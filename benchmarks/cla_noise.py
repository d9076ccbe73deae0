"""Where the CLA experiment's paired spread comes from: training variance or evaluation noise.

    python benchmarks/cla_noise.py --designs MQA MQA-CLA2 --big-eval 12288
    python benchmarks/cla_noise.py --designs MQA --seeds 0 --twins 1 2      # how chaotic
    python benchmarks/cla_noise.py --set batch_size=12 --set train.steps=1800 \
        --set train.warmup_steps=180                                        # try a lever

A tuning tool: by default it trains the scale's tuning seeds (those the cpu scale's settings
were chosen on), never the seeds that score the claims. Trains the chosen designs for those
seeds exactly as the experiment does (the seed's common initial weights, its batches, the one
loop), two runs at a time, one per core. Then evaluates every run on the experiment's validation
batches ("exp") and, with --big-eval, on that many windows spread over the whole validation split
("big"), and prints for each set:

- per design, the validation loss of every seed and its sd across seeds;
- per pair, the per-seed loss differences (the log-perplexity ratios the claims use), their sd
  across seeds (the paired sd), and the evaluation noise of one difference: the standard error
  over independent windows and over 32 contiguous blocks of windows (larger if losses cluster
  by file). A paired sd far above both is training variance, which no evaluation set removes.

With --twins, each run is repeated from its initial weights plus a relative perturbation of
every tensor (--eps, default 1e-5), one twin per perturbation seed, on the same batches. The
twins' loss differences show how far training amplifies a tiny change: when a change of 1e-5
moves the result as much as a different architecture does, common random numbers cannot
correlate two designs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time

import torch

from digestlab.data import CorpusSplits, validation_windows
from digestlab.device import pick_device
from digestlab.experiments import load_spec, merge_params, overrides_from
from digestlab.experiments.cla import Params
from digestlab.experiments.cla import run as cla
from digestlab.train import map_runs

BLOCKS = 32  # contiguous blocks of windows for the clustered standard error


@dataclasses.dataclass
class Job:
    design: str
    seed: int
    twin: int | None  # perturbation seed; None for the run the experiment itself makes
    params: Params
    state: dict[str, torch.Tensor]
    splits: CorpusSplits
    big: list[tuple[torch.Tensor, torch.Tensor]]  # extra validation batches


def perturbed(state: dict[str, torch.Tensor], eps: float, seed: int) -> dict[str, torch.Tensor]:
    """Every float tensor plus eps times its own sd times standard normal noise."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + eps * v.std() * torch.randn(v.shape, generator=g)
            if v.is_floating_point() and v.numel() > 1 else v for k, v in state.items()}


def run_job(job: Job) -> dict:
    model, result, objective = cla.train_design(job.design, job.seed, job.params, job.state,
                                                job.splits)
    losses = {"exp": cla.window_losses(model, objective.val_batches)}
    if job.big:
        losses["big"] = cla.window_losses(model, job.big)
    return {"design": job.design, "seed": job.seed, "twin": job.twin, "losses": losses,
            "seconds": result.wall_time_s}


def standard_errors(diff: torch.Tensor) -> tuple[float, float]:
    """Standard error of a mean per-window difference: windows independent, and blocks."""
    iid = diff.std().item() / math.sqrt(len(diff))
    blocks = torch.stack([b.mean() for b in diff.tensor_split(BLOCKS)])
    return iid, blocks.std().item() / math.sqrt(BLOCKS)


def report(runs: list[dict], designs: list[str], seeds: list[int], which: str) -> None:
    """Print per-design spreads, paired spreads and evaluation noise for one validation set."""
    loss = {(r["design"], r["seed"]): r["losses"][which] for r in runs if r["twin"] is None}
    n_tokens = len(next(iter(loss.values())))
    print(f"\n[{which}] {n_tokens:,} windows")
    for d in designs:
        values = [loss[d, s].mean().item() for s in seeds]
        sd = f"sd {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        print(f"  {d:>10}  " + " ".join(f"{v:.4f}" for v in values) + f"  {sd}")
    for i, a in enumerate(designs):
        for b in designs[i + 1:]:
            diffs = [(loss[a, s] - loss[b, s]).mean().item() for s in seeds]
            errors = [standard_errors(loss[a, s] - loss[b, s]) for s in seeds]
            paired = f"paired sd {statistics.stdev(diffs):.4f}" if len(diffs) > 1 else ""
            print(f"  {a} - {b}: " + " ".join(f"{x:+.4f}" for x in diffs) + f"  {paired}  "
                  f"evaluation noise {statistics.mean(e[0] for e in errors):.4f} (windows), "
                  f"{statistics.mean(e[1] for e in errors):.4f} (blocks)")
    for r in runs:
        if r["twin"] is not None:
            base = loss[r["design"], r["seed"]].mean().item()
            print(f"  twin {r['twin']} of {r['design']} seed {r['seed']}: "
                  f"{r['losses'][which].mean().item() - base:+.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu", choices=("smoke", "cpu", "gpu"))
    parser.add_argument("--designs", nargs="+", default=["MQA", "MQA-CLA2"])
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="seeds to train (default: the scale's tuning seeds)")
    parser.add_argument("--big-eval", type=int, default=0, metavar="WINDOWS",
                        help="also evaluate on this many windows of the validation split")
    parser.add_argument("--twins", nargs="*", type=int, default=[], metavar="SEED",
                        help="perturbation seeds: one perturbed twin of every run each")
    parser.add_argument("--eps", type=float, default=1e-5)
    parser.add_argument("--workers", type=int, default=2, help="runs side by side on the CPU")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="override a param, e.g. train.steps=900 (repeatable)")
    args = parser.parse_args()

    params = merge_params(load_spec("cla"), args.scale, overrides_from(args.set))
    seeds = params.tuning_seeds if args.seeds is None else args.seeds
    if not seeds:
        parser.error(f"the {args.scale} scale has no tuning seeds; choose some with --seeds")
    unknown = [d for d in args.designs if d not in params.designs]
    if unknown:
        parser.error(f"designs {unknown} are not trained at this scale: {params.designs}")
    splits = cla.corpus_splits(params)
    big = []
    if args.big_eval:
        x, y = validation_windows(splits.val, args.big_eval, params.seq_len)
        big = [(x[i:i + 64], y[i:i + 64]) for i in range(0, len(x), 64)]
    jobs = []
    for seed in seeds:
        states = dict(zip(params.designs, cla.initial_states(params, seed), strict=True))
        for design in args.designs:
            for twin in [None, *args.twins]:
                state = states[design] if twin is None else perturbed(states[design], args.eps,
                                                                      twin)
                jobs.append(Job(design, seed, twin, params, state, splits, big))
    started = time.perf_counter()
    runs = map_runs(run_job, jobs, args.workers, pick_device())
    print(f"\n{len(runs)} runs of {params.train.steps} steps x {params.batch_size} x "
          f"{params.seq_len} tokens in {time.perf_counter() - started:,.0f} s "
          f"({statistics.mean(r['seconds'] for r in runs):.0f} s per run)")
    for which in ("exp", "big") if big else ("exp",):
        report(runs, args.designs, seeds, which)
    return 0


if __name__ == "__main__":
    sys.exit(main())
