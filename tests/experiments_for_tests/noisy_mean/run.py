"""The noisy_mean test experiment's run: per-seed sample means and one claim."""

from __future__ import annotations

import random
import time

from digestlab.claims import claim, decide_below
from digestlab.experiments import Report, RunContext
from experiments_for_tests.noisy_mean import Params


def run(params: Params, ctx: RunContext) -> Report:
    means = []
    for seed in params.seeds:
        rng = random.Random(seed)
        xs = [rng.gauss(params.true_mean, 1.0) for _ in range(params.samples)]
        means.append(sum(xs) / len(xs))
        ctx.log(f"seed {seed}: mean {means[-1]:.4f}")
    verdict, stats = decide_below(means, params.bound)
    time.sleep(params.pause_s)
    return Report(
        seeds=list(params.seeds),
        device="cpu",
        metrics={"means": means},
        claims=[claim(
            "mean-below-bound",
            {"ko": "평균이 경계보다 작다", "en": "The mean is below the bound"},
            {"mean": stats["mean"], "sd": stats["sd"], "high": stats["high"]},
            f"mean < {params.bound}",
            verdict,
        )],
        figures={"means": {"means": means, "bound": params.bound}},
        timing={"samples_per_s": 1.0},
        reference={"columns": ["quantity", "value"], "rows": [["bound", params.bound]]},
    )
