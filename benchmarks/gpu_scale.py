"""Run experiments at gpu scale on one GPU, one after another, and print each one's minutes, MFU
and verdicts as soon as it finishes, so that a run cut short still reports what finished.

    python benchmarks/gpu_scale.py                 # every registered experiment
    python benchmarks/gpu_scale.py cla --out out   # metrics.json and figures under out/cla/

It uses the package's Python API, not Snakemake: a GPU box needs only Python 3.11+, torch,
numpy, matplotlib, tqdm, scipy and pydantic (with pydantic's own dependencies), and this
repository on PYTHONPATH. Each experiment's gpu scale is meant to fit 10 minutes on one
H100/H200-class GPU; the budget is checked and shown.
"""

from __future__ import annotations

import argparse
import pkgutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import digestlab.experiments
from digestlab.experiments import load_spec, reproduce


def registered() -> list[str]:
    """Every experiment shipped in digestlab/experiments/, by name."""
    return sorted(m.name for m in pkgutil.iter_modules(digestlab.experiments.__path__) if m.ispkg)


def mfu_values(timing: Any) -> list[float]:
    """Every MFU an experiment's timing reports, wherever it nests them."""
    if isinstance(timing, dict):
        found = [v for k, v in timing.items() if k == "mfu" and isinstance(v, float)]
        return found + [x for k, v in timing.items() if k != "mfu" for x in mfu_values(v)]
    if isinstance(timing, list):
        return [x for v in timing for x in mfu_values(v)]
    return []


def main() -> int:
    """Run each chosen experiment at gpu scale and print one summary line per experiment."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", help="default: all of them")
    parser.add_argument("--out", type=Path, help="keep metrics.json and figures here")
    parser.add_argument("--scale", default="gpu", choices=("smoke", "cpu", "gpu"),
                        help="gpu unless trying the script out on a CPU")
    args = parser.parse_args()

    names = args.experiments or registered()
    out = args.out or Path(tempfile.mkdtemp(prefix="digestlab-gpu-"))
    over_budget = []
    for name in names:
        started = time.perf_counter()
        metrics = reproduce(name, args.scale, {}, out / name / "metrics.json",
                            out / name / "figures", threads=1,
                            log=lambda line: print(f"  {line}", flush=True))
        minutes = (time.perf_counter() - started) / 60
        budget = load_spec(name).BUDGET_S[args.scale] / 60
        mfus = mfu_values(metrics["timing"])
        mfu = f"MFU {sum(mfus) / len(mfus):.1%}" if mfus else "MFU n/a"
        verdicts = ", ".join(f"{c['id']}={c['verdict']}" for c in metrics["claims"])
        print(f"{name}: {minutes:.1f} min (budget {budget:.1f}) on {metrics['device']}, {mfu}; "
              f"{verdicts}", flush=True)
        if minutes > budget:
            over_budget.append(name)
    print(f"results in {out}" + (f"; over budget: {', '.join(over_budget)}" if over_budget
                                 else ""))
    return 1 if over_budget else 0


if __name__ == "__main__":
    sys.exit(main())
