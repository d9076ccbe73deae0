"""Estimate the mean of a seeded normal distribution and decide whether it is below a bound.

It runs in milliseconds and uses the whole contract: scales, typed params, seeds, claims, a
figure. The spec; `run.py` runs it.
"""

from pydantic import BaseModel, ConfigDict, Field

from digestlab.claims import ClaimSpec, ComparisonSpec, our_bound


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    true_mean: float
    samples: int = Field(gt=0)
    seeds: list[int] = Field(min_length=1)
    pause_s: float = Field(0.0, ge=0)  # a slow job, for the tests that interrupt a run


SCALES = {
    "smoke": Params(true_mean=0.0, samples=200, seeds=[0, 1, 2]),
    "cpu": Params(true_mean=0.0, samples=2000, seeds=[0, 1, 2, 3]),
    "gpu": Params(true_mean=0.0, samples=20000, seeds=[0, 1, 2, 3]),
}

CLAIMS = {c.id: c for c in (
    ClaimSpec(
        id="mean-below-bound",
        text={"ko": "평균이 1보다 작다", "en": "The mean is below 1"},
        comparisons={"mean": ComparisonSpec(
            statistic="mean", direction="<",
            bound=our_bound(1.0, ko="시험용 경계입니다.", en="A bound for the tests."))},
    ),
)}

BUDGET_S = {"smoke": 1, "cpu": 5, "gpu": 5}
