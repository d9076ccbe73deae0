"""Choose each CLA design's peak learning rate on a tuning seed, and write the choice into the spec.

    python benchmarks/cla_learning_rates.py --scale cpu             # the grid, then write it
    python benchmarks/cla_learning_rates.py --scale cpu --dry-run   # the grid, printed only
    python benchmarks/cla_learning_rates.py --scale cpu --reuse     # keep the record's runs

The paper tuned the learning rate per design before its reported runs (§3.2.2), so one shared
rate, low enough for the design that needs it lowest, does not cost another design its best.
Here one rule serves every design: train it at each rate of a short grid around the scale's
shared rate (x1/sqrt2, x1, xsqrt2; the schedule's floor scales with it) on one tuning seed,
exactly as the experiment trains (the seed's common initial weights, its batches, the one loop),
and keep the rate of lowest validation loss. While some design's best rate is at an end of
the grid, the grid grows by one more step of sqrt2 past that end, for every design (at most
--extend times), so that no design is held at an edge. The seed defaults to the scale's
first tuning seed and must not be one the claims are scored on. The validation losses of the
whole grid are written to digestlab/experiments/cla/learning_rates.json under the scale, where
the spec reads them (`LearningRates`), so the default run trains only the scored seeds and the
page shows the grid and the choice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from digestlab.device import pick_device
from digestlab.experiments import ExperimentError, load_spec, merge_params, overrides_from
from digestlab.experiments.cla import LearningRates
from digestlab.experiments.cla import run as cla
from digestlab.io import write_json_atomic
from digestlab.train import map_runs

RECORD = Path(__file__).resolve().parents[1] / "digestlab/experiments/cla/learning_rates.json"


def run_job(job: tuple) -> dict:
    design, rate, seed, params, state, splits = job
    try:
        _, result, _ = cla.train_design(design, seed, params, state, splits)
    except ExperimentError as e:  # diverged: recorded as no loss, never chosen
        print(e, flush=True)
        return {"design": design, "rate": rate, "val_loss": None}
    return {"design": design, "rate": rate, "val_loss": result.val_loss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu", choices=("smoke", "cpu", "gpu"))
    parser.add_argument("--seed", type=int, help="the tuning seed (default: the scale's first)")
    parser.add_argument("--extend", type=int, default=6,
                        help="most steps the grid may grow past its ends (default 6)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the losses the record holds for this seed instead of training "
                             "them again; only when nothing but the grid changed since")
    parser.add_argument("--workers", type=int, default=2, help="runs side by side on the CPU")
    parser.add_argument("--dry-run", action="store_true", help="print the choice, write nothing")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="override a param, e.g. train.steps=900 (repeatable)")
    args = parser.parse_args()

    # every design at the rate of its grid point: no earlier choice applies
    params = merge_params(load_spec("cla"), args.scale,
                          overrides_from(args.set) | {"learning_rates": None})
    seed = args.seed if args.seed is not None else (params.tuning_seeds or [None])[0]
    if seed is None:
        parser.error(f"the {args.scale} scale has no tuning seeds; choose one with --seed")
    if seed in params.seeds:
        parser.error(f"seed {seed} scores the claims at the {args.scale} scale; tune on another")
    shared = params.train
    steps = [-1, 0, 1]  # powers of sqrt2 around the shared rate

    def rate(step: int) -> float:
        return float(f"{shared.learning_rate * math.sqrt(2) ** step:.3g}")

    record = json.loads(RECORD.read_text())
    losses: dict[tuple[str, float], float] = {}
    if args.reuse and record.get(args.scale, {}).get("seed") == seed:
        old = record[args.scale]
        losses = {(d, r): v for d, row in old["val_loss"].items()
                  for r, v in zip(old["grid"], row, strict=True) if d in params.designs}
    splits = cla.corpus_splits(params)
    states = dict(zip(params.designs, cla.initial_states(params, seed), strict=True))
    started, extended = time.perf_counter(), 0
    while True:
        jobs = []
        for r in sorted({rate(step) for step in steps}):
            at_rate = params.model_copy(update={"train": dataclasses.replace(
                shared, learning_rate=r, min_lr=shared.min_lr * r / shared.learning_rate)})
            jobs += [(d, r, seed, at_rate, states[d], splits) for d in params.designs
                     if (d, r) not in losses]
        for run in map_runs(run_job, jobs, args.workers, pick_device()):
            losses[run["design"], run["rate"]] = run["val_loss"]
        grid = sorted({rate(step) for step in steps})
        tuned = LearningRates(seed=seed, grid=grid, val_loss={
            d: [losses[d, r] for r in grid] for d in params.designs})
        chosen = set(tuned.chosen.values())
        if extended == args.extend or not chosen & {grid[0], grid[-1]}:
            break
        if grid[-1] in chosen:
            steps.append(max(steps) + 1)
        if grid[0] in chosen:
            steps.append(min(steps) - 1)
        extended += 1
    print(f"\n{len(grid) * len(params.designs)} runs of seed {seed}, "
          f"{time.perf_counter() - started:,.0f} s here")
    print(f"{'design':>16}  " + "  ".join(f"{r:>9.3g}" for r in grid) + "  chosen")
    for design, row in tuned.val_loss.items():
        print(f"{design:>16}  " + "  ".join(f"{loss:9.4f}" if loss is not None else
                                             f"{'diverged':>9}" for loss in row)
              + f"  {tuned.chosen[design]:.3g}")
    at_edge = sorted(d for d, r in tuned.chosen.items() if r in (grid[0], grid[-1]))
    if at_edge:
        print(f"still at an end of the grid after {extended} extensions: {at_edge}")
    if not args.dry_run:
        record[args.scale] = tuned.model_dump(mode="json")
        write_json_atomic(RECORD, record)
        print(f"written to {RECORD.relative_to(RECORD.parents[3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
