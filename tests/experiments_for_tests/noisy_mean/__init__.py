"""Estimate the mean of a seeded normal distribution and decide whether it is below a bound.

It runs in milliseconds and uses the whole contract: scales, typed params, seeds, claims, a
figure. The spec; `run.py` runs it.
"""

from pydantic import BaseModel, ConfigDict, Field


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    true_mean: float
    bound: float
    samples: int = Field(gt=0)
    seeds: list[int] = Field(min_length=1)
    pause_s: float = Field(0.0, ge=0)  # a slow job, for the tests that interrupt a run


SCALES = {
    "smoke": Params(true_mean=0.0, bound=1.0, samples=200, seeds=[0, 1, 2]),
    "cpu": Params(true_mean=0.0, bound=1.0, samples=2000, seeds=[0, 1, 2, 3]),
    "gpu": Params(true_mean=0.0, bound=1.0, samples=20000, seeds=[0, 1, 2, 3]),
}

BUDGET_S = {"smoke": 1, "cpu": 5, "gpu": 5}
