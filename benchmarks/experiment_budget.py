"""Run one experiment at one scale as the workflow would, and compare its wall time with its budget.

    python benchmarks/experiment_budget.py cla --scale smoke
    python benchmarks/experiment_budget.py cla --scale cpu --threads 2   # snakemake --cores 2

Each experiment states its budgets in `BUDGET_S` (seconds per scale). Exits non-zero when the
run is over budget, so the script can gate a release.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from digestlab.experiments import load_spec, reproduce


def main() -> int:
    """Run the experiment in a temporary directory and print wall time, budget and verdicts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--scale", default="smoke", choices=("smoke", "cpu", "gpu"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="the cores Snakemake would give the job (default: all)")
    parser.add_argument("--keep", type=Path, help="write metrics.json and figures here")
    args = parser.parse_args()

    budget = load_spec(args.experiment).BUDGET_S[args.scale]
    out = args.keep or Path(tempfile.mkdtemp(prefix="digestlab-budget-"))
    started = time.perf_counter()
    metrics = reproduce(args.experiment, args.scale, {}, out / "metrics.json", out / "figures",
                        threads=args.threads, log=lambda line: print(line, flush=True))
    wall = time.perf_counter() - started

    print(f"\n{args.experiment} at {args.scale} scale on {metrics['device']} "
          f"({args.threads} threads)")
    for claim in metrics["claims"]:
        print(f"  {claim['verdict']:>15}  {claim['id']}")
    within = wall <= budget
    print(f"wall time {wall:,.1f} s, budget {budget:,} s: {'within' if within else 'OVER'} budget")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
