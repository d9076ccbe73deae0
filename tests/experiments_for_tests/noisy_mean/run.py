"""The noisy_mean test experiment's run: per-seed sample means and one claim."""

from __future__ import annotations

import random
import time

from digestlab.experiments import Report, RunContext
from experiments_for_tests.noisy_mean import CLAIMS, Params


def run(params: Params, ctx: RunContext) -> Report:
    bound = CLAIMS["mean-below-bound"].comparisons["mean"].bound.value
    means = []
    for seed in params.seeds:
        rng = random.Random(seed)
        xs = [rng.gauss(params.true_mean, 1.0) for _ in range(params.samples)]
        means.append(sum(xs) / len(xs))
        ctx.log(f"seed {seed}: mean {means[-1]:.4f}")
    time.sleep(params.pause_s)
    return Report(
        seeds=list(params.seeds),
        device="cpu",
        metrics={"means": means},
        claims=[CLAIMS["mean-below-bound"].decide({"mean": means}, unit="training seeds")],
        figures={"means": {"means": means, "bound": bound}},
        timing={"samples_per_s": 1.0},
        reference={"columns": ["quantity", "value"], "rows": [["bound", bound]]},
    )
