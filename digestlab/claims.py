"""A paper's claims, declared before any run and decided from what the run measured.

An experiment's spec (its `__init__.py`, importable without torch) declares each claim as a
`ClaimSpec`: its text, the comparisons that decide it (a statistic, a direction and a `Bound` that
says where its number comes from: the paper, with section or table, or us, with the reason,
fixed before any run) and the premises the claim needs (`PremiseSpec`: a quantity measured
apart from the claim's own statistic, with its own bound). The run only measures: it hands
`ClaimSpec.decide` the per-unit values of each comparison and the value of each premise, and gets
back a `Claim`, the typed record that metrics.json holds and every template reads by field.

How a comparison decides, for per-unit values x_1..x_n (seeds, streams, rounds, ...):
- `mean` (the default): the one-sided 95% t-bound on the mean lies on the claimed side of the
  bound → `reproduced`; the other one-sided 95% bound lies on the other side → `not_reproduced`;
  otherwise (a single unit included) `inconclusive`. The two bounds together are a two-sided
  90% interval, and are labelled so. A `log` comparison decides ratios on their logs.
- `every`: every unit on the claimed side → `reproduced`, else `not_reproduced` (no noise model:
  for quantities compared against a noise level measured in the same run).
- `exact`: one noise-free value (bytes) compared exactly.
- `ratio-of-means`: a share, mean(a) / mean(b), from per-unit pairs (a_i, b_i). Decided by the
  mean rule on a_i - bound * b_i, which tests the bound itself; the interval is Fieller's, at the
  same level. It reads as a share only while mean(b) > 0, so such a claim declares that as a
  premise.
A claim is `not_testable` when one of its premises does not hold (however its comparisons came
out: their numbers are still recorded); else it is `not_reproduced` when any comparison is,
`reproduced` when all are, and `inconclusive` otherwise. A premise may instead condition one
comparison (`PremiseSpec.comparison`, say one error type of several): when it fails, that
comparison is `not_testable` and the claim is decided by the others (not testable when none
is left). Over a paper's findings decided by
the mean rule, `holm` adds what Holm's family-wise correction would make of each verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

REPRODUCED, NOT_REPRODUCED = "reproduced", "not_reproduced"
INCONCLUSIVE, NOT_TESTABLE = "inconclusive", "not_testable"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTABLE)
Verdict = Literal["reproduced", "not_reproduced", "inconclusive", "not_testable"]
SCHEMA_VERSION = 3  # of metrics.json's claims; a result of another version is rerun
ONE_SIDED = 0.95  # each end of an interval is a one-sided bound at this level
LEVEL = round(2 * ONE_SIDED - 1, 12)  # so the interval is two-sided at this level (90%)
FAMILY_ALPHA = round(1 - ONE_SIDED, 12)  # Holm's family-wise error rate over a paper's claims

# The units a claim's values can be replicated over, as the pages name them.
Unit = Literal["training seeds", "SAE seeds", "fine-tuned policies", "rounds", "streams", "games",
               "runs", "windows"]


def _bilingual(text: dict[str, str]) -> dict[str, str]:
    if set(text) != {"ko", "en"} or not all(isinstance(v, str) and v for v in text.values()):
        raise ValueError(f"needs its text in ko and en, got {sorted(text)}")
    return text


Text = Annotated[dict[str, str], AfterValidator(_bilingual)]
# A statistic as the page shows it: a formula, the same in every language
# ("ppl(a) / ppl(b)"), or words, in each ({"ko": ..., "en": ...}).
Statistic = str | Text


class _Frozen(BaseModel):
    """Specs and records are values: immutable, and no key they do not name."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- what a spec declares ------------------------------------------------------------------------

class Bound(_Frozen):
    """A claim's threshold and where it comes from: the paper (`where`: section, table or
    figure) or us (`why`: the reason, in both languages, fixed before any run)."""

    value: float
    source: Literal["paper", "ours"]
    where: str = ""
    why: Text | None = None

    @model_validator(mode="after")
    def _sourced(self) -> Bound:
        if self.source == "paper" and not self.where:
            raise ValueError("a bound from the paper names where in it (section, table)")
        if self.source == "ours" and self.why is None:
            raise ValueError("a bound of ours says why, in ko and en")
        return self


def paper_bound(value: float, where: str) -> Bound:
    """A bound taken from the paper, e.g. paper_bound(0.65, "§3, Table 2")."""
    return Bound(value=value, source="paper", where=where)


def our_bound(value: float, ko: str, en: str) -> Bound:
    """A bound of ours, with the reason for its number in both languages."""
    return Bound(value=value, source="ours", why={"ko": ko, "en": en})


class ComparisonSpec(_Frozen):
    """One comparison a claim is decided by: `statistic` `direction` `bound`, over per-unit
    values."""

    statistic: Statistic
    direction: Literal["<", ">", "="]
    bound: Bound
    space: Literal["linear", "log"] = "linear"  # log: ratios, decided on their logs
    rule: Literal["mean", "every", "exact", "ratio-of-means"] = "mean"

    @model_validator(mode="after")
    def _consistent(self) -> ComparisonSpec:
        if (self.direction == "=") != (self.rule == "exact"):
            raise ValueError("'=' goes with the exact rule, and only with it")
        if self.rule == "ratio-of-means" and self.space != "linear":
            raise ValueError("a ratio of means is decided in linear space")
        if self.space == "log" and self.bound.value <= 0:
            raise ValueError("a ratio's bound must be positive")
        return self


class PremiseSpec(_Frozen):
    """What a claim needs of this model or device, measured apart from the claim's own
    statistic: when it does not hold, the claim is `not_testable`, or only the comparison it
    names in `comparison`."""

    text: Text
    statistic: Statistic
    direction: Literal["<", ">", ">=", "<="]
    bound: Bound
    comparison: str | None = None

    def is_met(self, value: float) -> bool:
        return {"<": value < self.bound.value, ">": value > self.bound.value,
                "<=": value <= self.bound.value, ">=": value >= self.bound.value}[self.direction]


class TheirNumber(_Frozen):
    """The paper's own number for a claim's statistic, to show beside ours."""

    value: float
    where: str
    note: Text | None = None


class ClaimSpec(_Frozen):
    """A claim as the spec declares it, before any run. `text` may hold {fields} that the
    run fills in (a cache size, say); `kind` "property" marks what holds by construction when
    the code is right (shown as a check, never counted as a reproduction)."""

    id: str
    text: Text
    comparisons: dict[str, ComparisonSpec] = Field(min_length=1)
    premises: dict[str, PremiseSpec] = Field(default_factory=dict)
    theirs: TheirNumber | None = None
    kind: Literal["finding", "property"] = "finding"
    from_clock: bool = False  # decided from timings or memory, which differ from run to run

    @model_validator(mode="after")
    def _premises_name_comparisons(self) -> ClaimSpec:
        for name, premise in self.premises.items():
            if premise.comparison is not None and premise.comparison not in self.comparisons:
                raise ValueError(f"premise {name!r} conditions {premise.comparison!r}, which is "
                                 "not one of the claim's comparisons")
        return self

    def decide(self, values: Mapping[str, Sequence[float] | float], unit: Unit,
               premises: Mapping[str, float] | None = None, base_models: int | None = None,
               fields: Mapping[str, object] | None = None) -> Claim:
        """The claim decided from each comparison's per-unit `values` (a single number for an
        exact one) over `unit`, with each declared premise's measured value. `base_models` says how
        many trained models the units share (1: the verdict speaks for that model)."""
        premises = dict(premises or {})
        if set(values) != set(self.comparisons):
            raise ValueError(f"claim {self.id!r}: values for {sorted(values)}, "
                             f"its comparisons are {sorted(self.comparisons)}")
        if set(premises) != set(self.premises):
            raise ValueError(f"claim {self.id!r}: premises measured {sorted(premises)}, "
                             f"declared {sorted(self.premises)}")
        checked = [Premise(name=name, value=float(premises[name]),
                           holds=spec.is_met(float(premises[name])), **spec.model_dump())
                   for name, spec in self.premises.items()]
        untestable = {p.comparison for p in checked if not p.holds}
        comparisons = [compare(name, spec, values[name]) for name, spec in self.comparisons.items()]
        comparisons = [c.model_copy(update={"verdict": NOT_TESTABLE, "p": None, "to_decide": None})
                       if c.name in untestable else c for c in comparisons]
        testable = [c.verdict for c in comparisons if c.verdict != NOT_TESTABLE]
        verdict = (NOT_TESTABLE if None in untestable or not testable else combine(testable))
        n = max(len(c.values) for c in comparisons)
        text = {lang: t.format(**fields) if fields else t for lang, t in self.text.items()}
        return Claim(id=self.id, text=text, kind=self.kind, comparisons=comparisons,
                     premises=checked, theirs=self.theirs, verdict=verdict, unit=unit, n=n,
                     base_models=base_models, from_clock=self.from_clock)


# --- what a run records ---------------------------------------------------------------------------

class Comparison(_Frozen):
    """One comparison of a claim, decided: the per-unit values, their estimate and spread, the
    two-sided LEVEL interval (each end a one-sided 95% bound) in the statistic's own space,
    the one-sided p-value of the side it was decided on, and the units that would decide it."""

    name: str
    statistic: Statistic
    direction: Literal["<", ">", "="]
    bound: Bound
    space: Literal["linear", "log"]
    rule: Literal["mean", "every", "exact", "ratio-of-means"]
    values: list[float]  # per unit; for a ratio of means, a_i - bound * b_i
    estimate: float  # the mean; the geometric mean of ratios in log space; mean(a) / mean(b)
    sd: float | None  # of the values, of their logs in log space; None for one value
    interval: tuple[float, float] | None  # None: one value, or a rule without noise model
    level: float | None  # the interval's two-sided coverage
    p: float | None  # one-sided p of the verdict's side (mean rule), for Holm
    verdict: Verdict  # not_testable: a premise of this comparison alone does not hold
    to_decide: int | None = None  # units that would decide it if mean and spread held
    pairs: list[tuple[float, float]] | None = None  # (a_i, b_i) of a ratio of means


class Premise(PremiseSpec):
    """A declared premise with its measured value."""

    name: str
    value: float
    holds: bool


class Holm(_Frozen):
    """Holm's step-down correction over a paper's claims decided by the mean rule."""

    family: int  # claims in the family
    p: float  # this claim's p-value (decided side)
    threshold: float  # the level Holm gives its rank
    verdict: Verdict  # what the claim would read under the correction


class Claim(_Frozen):
    """One claim of metrics.json, decided."""

    id: str
    text: Text
    kind: Literal["finding", "property"]
    comparisons: list[Comparison]
    premises: list[Premise]
    theirs: TheirNumber | None
    verdict: Verdict
    unit: Unit
    n: int  # units
    base_models: int | None  # trained models the units share
    from_clock: bool
    holm: Holm | None = None

    @property
    def flips_under_holm(self) -> bool:
        return self.holm is not None and self.holm.verdict != self.verdict


# --- statistics ----------------------------------------------------------------------------------

def t95(dof: int) -> float:
    """One-sided 95% quantile of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        raise ValueError(f"Student's t needs at least one degree of freedom, got {dof}")
    # Imported here: scipy.stats takes most of a second to import, and the render jobs, which
    # import this module for the records alone, never need it.
    import scipy.stats

    return float(scipy.stats.t.ppf(ONE_SIDED, dof))


def summarize(samples: Sequence[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation (None for one value) and count of per-unit values."""
    n = len(samples)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = sum(samples) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in samples) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "n": n}


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """The interval of the mean of per-unit values that comparisons are decided on: each end a
    one-sided 95% t-bound (a premise may read one end, giving a model the benefit of the
    doubt)."""
    stats = summarize(values)
    if stats["n"] < 2:
        raise ValueError("an interval of a mean needs at least two values")
    half = t95(stats["n"] - 1) * stats["sd"] / math.sqrt(stats["n"])
    return stats["mean"] - half, stats["mean"] + half


def units_to_decide(gap: float, sd: float, most: int = 1000) -> int | None:
    """The fewest units whose one-sided 95% t-bound clears a mean `gap` from the bound at
    spread `sd`, if the mean and spread held; None beyond `most`."""
    for n in range(2, most + 1):
        if t95(n - 1) * sd / math.sqrt(n) < abs(gap):
            return n
    return None


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a_i / b_i for each unit: a and b measured on the same unit (seed, round, stream)."""
    return [x / y for x, y in zip(a, b, strict=True)]


def paired_differences(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a_i - b_i for each unit: a and b measured on the same unit (seed, round, stream)."""
    return [x - y for x, y in zip(a, b, strict=True)]


def binomial_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's interval for a rate of `successes` out of `n` (scipy's binomtest)."""
    import scipy.stats

    ci = scipy.stats.binomtest(successes, n).proportion_ci(level, method="wilson")
    return float(ci.low), float(ci.high)


def rate(flags: Iterable[bool]) -> dict:
    """A rate over programs (or any trials): {"rate", "n", "interval"}, the interval Wilson's
    at 95%."""
    flags = [bool(f) for f in flags]
    k, n = sum(flags), len(flags)
    return {"rate": k / n, "n": n, "interval": list(binomial_interval(k, n))}


def auroc(scores, positive):
    """Area under the ROC curve of each column of `scores` (N, F), or of one score (N,), for
    boolean labels (N,): the chance that a positive outscores a negative, ties counting one
    half (numpy arrays, or anything numpy reads, such as CPU tensors)."""
    import numpy as np
    import scipy.stats

    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positives and negatives")
    ranks = scipy.stats.rankdata(scores, axis=0)
    return (ranks[positive].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def combine(verdicts: Iterable[str]) -> str:
    """A claim of several comparisons: reproduced when all are, not reproduced when any is not."""
    verdicts = list(verdicts)
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    return REPRODUCED if all(v == REPRODUCED for v in verdicts) else INCONCLUSIVE


def compare(name: str, spec: ComparisonSpec, values: Sequence[float] | float) -> Comparison:
    """Decide one comparison of a claim from its per-unit values (see the module's docstring)."""
    if spec.rule == "ratio-of-means":
        return ratio_of_means(name, spec, values)
    values = [float(v) for v in (values if isinstance(values, Sequence) else [values])]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"comparison {name!r} needs finite values, got {values}")
    if spec.space == "log" and min(values) <= 0:
        raise ValueError(f"comparison {name!r} compares ratios, which must be positive: {values}")
    common = dict(name=name, statistic=spec.statistic, direction=spec.direction,
                  bound=spec.bound, space=spec.space, rule=spec.rule, values=values)
    to_space = math.log if spec.space == "log" else float
    back = math.exp if spec.space == "log" else float
    xs = [to_space(v) for v in values]
    bound = to_space(spec.bound.value)
    stats = summarize(xs)
    estimate = back(stats["mean"])
    if spec.rule == "exact":
        if len(values) != 1:
            raise ValueError(f"exact comparison {name!r} takes one value, got {len(values)}")
        ok = math.isclose(values[0], spec.bound.value, rel_tol=1e-9)
        return Comparison(**common, estimate=estimate, sd=None, interval=None, level=None,
                          p=None, verdict=REPRODUCED if ok else NOT_REPRODUCED)
    below = spec.direction == "<"
    if spec.rule == "every":
        ok = all((x < bound) if below else (x > bound) for x in xs)
        return Comparison(**common, estimate=estimate, sd=stats["sd"], interval=None,
                          level=None, p=None, verdict=REPRODUCED if ok else NOT_REPRODUCED)
    if stats["n"] < 2 or not stats["sd"]:
        # one unit, or units that agree exactly: no spread to build a t-interval on
        if stats["n"] >= 2 and stats["mean"] != bound:
            ok = (stats["mean"] < bound) if below else (stats["mean"] > bound)
            return Comparison(**common, estimate=estimate, sd=0.0,
                              interval=(estimate, estimate), level=LEVEL, p=0.0,
                              verdict=REPRODUCED if ok else NOT_REPRODUCED)
        return Comparison(**common, estimate=estimate, sd=stats["sd"], interval=None,
                          level=None, p=None, verdict=INCONCLUSIVE)
    import scipy.stats

    low, high = mean_interval(xs)
    t = (stats["mean"] - bound) / (stats["sd"] / math.sqrt(stats["n"]))
    # one-sided p of "mean < bound" (small when the values lie clearly below) and its mirror
    p_below = float(scipy.stats.t.cdf(t, stats["n"] - 1))
    p_above = 1.0 - p_below
    claimed, other = (high < bound, low > bound) if below else (low > bound, high < bound)
    verdict = REPRODUCED if claimed else NOT_REPRODUCED if other else INCONCLUSIVE
    p_claimed, p_other = (p_below, p_above) if below else (p_above, p_below)
    p = p_other if verdict == NOT_REPRODUCED else p_claimed if verdict == REPRODUCED else min(
        p_claimed, p_other)
    to_decide = (units_to_decide(stats["mean"] - bound, stats["sd"])
                 if verdict == INCONCLUSIVE else None)
    return Comparison(**common, estimate=estimate, sd=stats["sd"],
                      interval=(back(low), back(high)), level=LEVEL, p=p, verdict=verdict,
                      to_decide=to_decide)


def ratio_of_means(name: str, spec: ComparisonSpec, pairs: Sequence[Sequence[float]]
                   ) -> Comparison:
    """Decide mean(a) / mean(b) `direction` `bound` from per-unit pairs (a_i, b_i): by the mean
    rule on d_i = a_i - bound * b_i (below zero is below the bound while mean(b) > 0), with
    Fieller's interval for the ratio, which is bounded only when mean(b) is clearly away from 0."""
    pairs = [(float(a), float(b)) for a, b in pairs]
    if len(pairs) < 2:
        raise ValueError(f"comparison {name!r} needs at least two pairs, got {len(pairs)}")
    a, b = zip(*pairs, strict=True)
    n, ma, mb = len(pairs), sum(a) / len(a), sum(b) / len(b)
    if mb == 0:
        raise ValueError(f"comparison {name!r} divides by a mean of zero")
    on_the_difference = spec.model_copy(update={
        "rule": "mean", "bound": spec.bound.model_copy(update={"value": 0.0})})
    decided = compare(name, on_the_difference, [x - spec.bound.value * y for x, y in pairs])
    # Fieller: the ratios r with (ma - r mb)^2 <= t^2 var(a - r b) / n, a quadratic in r
    t2 = t95(n - 1) ** 2 / n
    saa = sum((x - ma) ** 2 for x in a) / (n - 1)
    sbb = sum((y - mb) ** 2 for y in b) / (n - 1)
    sab = sum((x - ma) * (y - mb) for x, y in pairs) / (n - 1)
    qa, qb, qc = mb * mb - t2 * sbb, ma * mb - t2 * sab, ma * ma - t2 * saa
    interval = None
    if qa > 0:
        root = math.sqrt(max(qb * qb - qa * qc, 0.0))
        interval = ((qb - root) / qa, (qb + root) / qa)
    return decided.model_copy(update={
        "bound": spec.bound, "rule": spec.rule, "estimate": ma / mb, "interval": interval,
        "level": LEVEL if interval else None, "pairs": pairs})


def _claim_p(claim: Claim) -> float | None:
    """A claim's p-value for Holm: over its mean-rule comparisons, the largest p when all must
    hold (reproduced or inconclusive), the smallest p of the failing ones when one fails."""
    testable = [c for c in claim.comparisons if c.verdict != NOT_TESTABLE]
    decided = [c for c in testable if c.p is not None]
    if claim.verdict == NOT_TESTABLE or not decided or len(decided) != len(testable):
        return None
    if claim.verdict == NOT_REPRODUCED:
        return min(c.p for c in decided if c.verdict == NOT_REPRODUCED)
    return max(c.p for c in decided)


def holm(claims: Sequence[Claim]) -> list[Claim]:
    """The claims with Holm's step-down correction over the family of findings decided by
    the mean rule: a decided claim whose p-value misses its Holm threshold reads inconclusive.
    Claims outside the family (properties, untestable claims, exact or every-unit comparisons)
    are returned unchanged."""
    family = [(p, i) for i, c in enumerate(claims)
              if c.kind == "finding" and (p := _claim_p(c)) is not None]
    out = list(claims)
    m = len(family)
    still_rejecting = True
    for rank, (p, i) in enumerate(sorted(family)):
        threshold = FAMILY_ALPHA / (m - rank)
        still_rejecting = still_rejecting and p < threshold
        verdict = claims[i].verdict if still_rejecting else INCONCLUSIVE
        out[i] = claims[i].model_copy(update={
            "holm": Holm(family=m, p=p, threshold=threshold, verdict=verdict)})
    return out
