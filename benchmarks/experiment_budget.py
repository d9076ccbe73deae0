"""Run one experiment at one scale as the workflow would, and compare its wall time with its budget.

    python benchmarks/experiment_budget.py cla --scale smoke
    python benchmarks/experiment_budget.py cla --scale cpu --threads 2   # snakemake --cores 2
    python benchmarks/experiment_budget.py cla --scale cpu --set corpus=generated \
        --set train.steps=900 --set 'seeds=[0,1,2,3]'   # try a lever: spread and cost

Each experiment states its budgets in `BUDGET_S` (seconds per scale). Exits non-zero when the
run is over budget, so the script can gate a release. `--set` overrides a param as a paper
entry's `reproduction.params` would (a dotted path, a JSON or plain value), to measure what a
change costs and, for paired claims, the spread it gives.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from digestlab.experiments import load_spec, overrides_from, reproduce


def main() -> int:
    """Run the experiment in a temporary directory and print wall time, budget and verdicts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--scale", default="smoke", choices=("smoke", "cpu", "gpu"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="the cores Snakemake would give the job (default: all)")
    parser.add_argument("--keep", type=Path, help="write metrics.json and figures here")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="override a param, e.g. train.steps=900 (repeatable)")
    args = parser.parse_args()
    overrides = overrides_from(args.set)

    budget = load_spec(args.experiment).BUDGET_S[args.scale]
    out = args.keep or Path(tempfile.mkdtemp(prefix="digestlab-budget-"))
    started = time.perf_counter()
    metrics = reproduce(args.experiment, args.scale, overrides, out / "metrics.json",
                        out / "figures", threads=args.threads,
                        log=lambda line: print(line, flush=True))
    wall = time.perf_counter() - started

    print(f"\n{args.experiment} at {args.scale} scale on {metrics['device']} "
          f"({args.threads} threads)")
    for claim in metrics["claims"]:
        print(f"  {claim['verdict']:>15}  {claim['id']} ({claim['n']} {claim['unit']})")
        for t in claim["comparisons"]:
            spread = f", sd {t['sd']:.4f}" if t["sd"] is not None else ""
            interval = (f", {t['level']:.0%} interval {t['interval'][0]:.4f}-{t['interval'][1]:.4f}"
                        if t["interval"] else "")
            statistic = t["statistic"]["en"] if isinstance(t["statistic"], dict) else t["statistic"]
            print(f"{'':19}{statistic} {t['direction']} {t['bound']['value']:g}: "
                  f"{t['estimate']:.4f}{spread}{interval}")
    within = wall <= budget
    print(f"wall time {wall:,.1f} s, budget {budget:,} s: {'within' if within else 'OVER'} budget")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
