"""Deciding a paper's claims from measurements, with the spread across seeds taken into account.

A claim about a noisy quantity is `reproduced` only when a one-sided 95% t-bound over the
per-seed values lies on the claimed side of the bound, `not_reproduced` when the other one-sided
95% t-bound lies on the other side, and `inconclusive` otherwise (including with a single seed).
Statistics that a single seed cannot give are None, so metrics.json stays valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not_reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)


def t95(dof: int) -> float:
    """One-sided 95% quantile of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        raise ValueError(f"Student's t needs at least one degree of freedom, got {dof}")
    # Imported here: scipy.stats takes most of a second to import, and the render jobs, which
    # import this module for VERDICTS alone, never need it.
    import scipy.stats

    return float(scipy.stats.t.ppf(0.95, dof))


def summarize(samples: Sequence[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation (None for one value) and count of per-seed values."""
    n = len(samples)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = sum(samples) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in samples) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "n": n}


def decide_below(samples: Sequence[float], bound: float) -> tuple[str, dict[str, float | None]]:
    """Verdict on "the per-seed values are below `bound` on average", and the statistics used."""
    stats = summarize(samples)
    if stats["n"] < 2:
        return INCONCLUSIVE, stats | {"low": None, "high": None}
    half = t95(stats["n"] - 1) * stats["sd"] / math.sqrt(stats["n"])
    low, high = stats["mean"] - half, stats["mean"] + half
    if high < bound:
        verdict = REPRODUCED
    elif low > bound:
        verdict = NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    return verdict, stats | {"low": low, "high": high}


def decide_above(samples: Sequence[float], bound: float) -> tuple[str, dict[str, float | None]]:
    """Verdict on "the per-seed values are above `bound` on average", and the statistics used."""
    verdict, stats = decide_below([-x for x in samples], -bound)
    flipped = {"mean": -stats["mean"], "sd": stats["sd"], "n": stats["n"],
               "low": None if stats["high"] is None else -stats["high"],
               "high": None if stats["low"] is None else -stats["low"]}
    return verdict, flipped


def seeds_to_decide(gap: float, sd: float, most: int = 1000) -> int | None:
    """The fewest seeds whose one-sided 95% t-bound clears a mean `gap` from the bound at
    paired spread `sd`, if the mean and spread held; None beyond `most`."""
    for n in range(2, most + 1):
        if t95(n - 1) * sd / math.sqrt(n) < abs(gap):
            return n
    return None


def band(stats: dict[str, float | None], to_value=lambda x: x) -> list[float] | None:
    """The [low, high] t-band of a decide_* verdict's statistics (through `to_value`), or None
    when one sample gave no band."""
    if stats["low"] is None:
        return None
    return [to_value(stats["low"]), to_value(stats["high"])]


def samples_to_decide(verdict: str, stats: dict[str, float | None], bound: float,
                      samples: str = "seeds") -> dict[str, int | None]:
    """For an inconclusive verdict with a spread, {"<samples> to decide": n}, the samples that
    would decide it if the mean and spread held (see seeds_to_decide); else {}."""
    if verdict != INCONCLUSIVE or not stats["sd"]:
        return {}
    return {f"{samples} to decide": seeds_to_decide(stats["mean"] - bound, stats["sd"])}


def decide_equal(value: float, target: float, rel_tol: float = 1e-9) -> str:
    """Verdict on an exact, noise-free quantity such as a byte count."""
    return REPRODUCED if math.isclose(value, target, rel_tol=rel_tol) else NOT_REPRODUCED


def claim(
    claim_id: str,
    text: dict[str, str],
    measured: dict[str, Any],
    expected: str,
    verdict: str,
    from_clock: bool = False,
) -> dict[str, Any]:
    """One entry of metrics.json's `claims`. `from_clock` marks a claim decided from timings or
    memory use, which differ from run to run (so its numbers, unlike the rest, do not repeat)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    if set(text) != {"ko", "en"}:
        raise ValueError(f"claim {claim_id!r} needs its text in ko and en, got {sorted(text)}")
    return {"id": claim_id, "text": text, "measured": measured, "expected": expected,
            "verdict": verdict, "from_clock": from_clock}
