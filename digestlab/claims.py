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

# One-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T95 = (
    6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812,
    1.796, 1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725,
    1.721, 1.717, 1.714, 1.711, 1.708, 1.706, 1.703, 1.701, 1.699, 1.697,
)  # fmt: skip


def t95(dof: int) -> float:
    """One-sided 95% quantile of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        raise ValueError(f"Student's t needs at least one degree of freedom, got {dof}")
    if dof <= len(_T95):
        return _T95[dof - 1]
    # Beyond the table, the Cornish-Fisher expansion around the normal quantile is exact to 1e-4.
    z = 1.6448536269514722
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


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


def decide_equal(value: float, target: float, rel_tol: float = 1e-9) -> str:
    """Verdict on an exact, noise-free quantity such as a byte count."""
    return REPRODUCED if math.isclose(value, target, rel_tol=rel_tol) else NOT_REPRODUCED


def claim(
    claim_id: str,
    text: dict[str, str],
    measured: dict[str, Any],
    expected: str,
    verdict: str,
) -> dict[str, Any]:
    """One entry of metrics.json's `claims`."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    if set(text) != {"ko", "en"}:
        raise ValueError(f"claim {claim_id!r} needs its text in ko and en, got {sorted(text)}")
    return {"id": claim_id, "text": text, "measured": measured, "expected": expected,
            "verdict": verdict}
