"""Methods the experiments measure, each credited to the paper it comes from.

An experiment measures more than its own paper's method: CLA is compared against MQA, SirLLM
against StreamingLLM, SPO against DPO and a Lagrangian. Its package says so in `methods.py`,
importable without torch like the rest of the spec:

- `METHODS`: a tuple of `Method`, each with the paper it comes from (an arXiv id or a URL), and
  the ids of the claims decided here that are that paper's own claims (SirLLM's experiment
  decides StreamingLLM's claim that sink tokens keep perplexity near recomputation);
- `REFERENCE`: the id of the method every other method's headline number is set against;
- `rows(result)`: each measured method's numbers (`Row`) from a result (a metrics.json: its
  params, metrics and timing), headline first; a method the result did not measure (not
  trained at its scale, say) gets no rows.

The module is read when pages are made, never by an experiment's run: editing it re-renders
pages and reruns nothing. `credit` writes a result's methods with their rows and claims
(results/<paper>/methods.json); an entry whose paper one of them comes from (by arXiv id in any
version, by URL, or by its own `measured_as`) shows them in "Measured in this digest".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from digestlab.claims import LEVEL, Text, Unit, binomial_interval, mean_interval
from digestlab.papers import http_url, is_arxiv_id, paper_key


def _paper_ref(value: str) -> str:
    if is_arxiv_id(value):
        return value
    try:
        return http_url(value)  # what an entry's links allow: it lands in a Markdown link
    except ValueError:
        raise ValueError(f"{value!r} is neither an arXiv id nor an http(s) URL") from None


PaperRef = Annotated[str, AfterValidator(_paper_ref)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Method(_Frozen):
    """A method an experiment measures: a design, a cache policy, a loss, a training lever."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")  # unique within its experiment
    name: str = Field(min_length=1)  # as pages show it, in every language: "MQA", "StreamingLLM"
    paper: PaperRef  # the paper it comes from
    # "proposed": the method the reproduced paper proposes, or part of it (a lever of its
    # recipe); "baseline": a method it is compared against
    role: Literal["proposed", "baseline"]
    how: Text  # how the experiment measures it, one sentence per language
    # ids of the claims decided here that are claims of the paper it comes from (not those of
    # the reproduced paper about it)
    claims: tuple[str, ...] = ()


class Row(_Frozen):
    """One measured number of a method, with its interval where it has one."""

    quantity: Text  # what was measured: "validation perplexity"
    setting: Text | None = None  # under what, when the method was measured under several
    value: float
    interval: tuple[float, float] | None = None
    level: float | None = None  # the interval's two-sided coverage
    n: int = Field(ge=1)  # units the value rests on
    unit: Unit
    better: Literal["lower", "higher"] | None = None

    @model_validator(mode="after")
    def _interval_has_level(self) -> Row:
        if (self.interval is None) != (self.level is None):
            raise ValueError("an interval comes with its level, and a level with its interval")
        if self.level is not None and self.level != LEVEL:
            raise ValueError(f"intervals are at the claims' level, {LEVEL}, as pages label them")
        return self

    @property
    def key(self) -> tuple[str, str]:
        """What the row measures and under what: rows of two methods with the same key compare."""
        return self.quantity["en"], self.setting["en"] if self.setting else ""


def mean_row(quantity: Text, values: Sequence[float], unit: Unit, setting: Text | None = None,
             better: Literal["lower", "higher"] | None = None, log: bool = False) -> Row:
    """The mean of per-unit values with the interval the claims use (each end a one-sided 95%
    t-bound); one value has none. `log`: ratios, averaged on their logs (the geometric mean) as
    a claim decided in log space averages them."""
    values = [float(v) for v in values]
    xs = [math.log(v) for v in values] if log else values
    back = math.exp if log else float
    spread = len(xs) > 1 and len(set(xs)) > 1
    interval = tuple(back(x) for x in mean_interval(xs)) if spread else None
    return Row(quantity=quantity, setting=setting, value=back(sum(xs) / len(xs)), n=len(xs),
               unit=unit, better=better, interval=interval, level=LEVEL if spread else None)


def rate_row(quantity: Text, successes: int, n: int, unit: Unit, setting: Text | None = None,
             better: Literal["lower", "higher"] | None = "higher") -> Row:
    """A rate of `successes` out of `n` with Wilson's interval at the claims' level."""
    return Row(quantity=quantity, setting=setting, value=successes / n, n=n, unit=unit,
               better=better, interval=binomial_interval(successes, n, LEVEL), level=LEVEL)


# --- an experiment's methods ---------------------------------------------------------------------

@dataclass(frozen=True)
class Declared:
    """An experiment's methods.py, read: its methods, its reference method and its rows."""

    methods: tuple[Method, ...]
    reference: str | None
    rows: Callable[[Mapping[str, Any]], Mapping[str, Sequence[Row]]] | None

    def by_id(self) -> dict[str, Method]:
        return {m.id: m for m in self.methods}


NONE_DECLARED = Declared((), None, None)


def declared(experiment: str, packages: tuple[str, ...]) -> Declared:
    """What experiment `experiment` declares it measures; nothing for an experiment without a
    methods.py (or one that does not exist). Raises ValueError for a declaration that
    contradicts itself."""
    from digestlab.experiments.registry import load_methods

    module = load_methods(experiment, packages)
    if module is None:
        return NONE_DECLARED
    methods = tuple(module.METHODS)
    ids = [m.id for m in methods]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{module.__name__}: method ids must be unique, got {ids}")
    reference = getattr(module, "REFERENCE", None)
    if reference is not None and reference not in ids:
        raise ValueError(f"{module.__name__}: REFERENCE {reference!r} is none of {ids}")
    return Declared(methods, reference, getattr(module, "rows", None))


def credit(metrics: Mapping[str, Any], packages: tuple[str, ...]) -> dict[str, Any]:
    """A result's methods (results/<paper>/methods.json): each method its experiment declares,
    with its rows in `metrics` (a metrics.json; none for a method its scale did not measure)
    and the records of the claims of its paper that the result decided."""
    found = declared(metrics["experiment"], packages)
    rows = found.rows(metrics) if found.rows else {}
    unknown = set(rows) - set(found.by_id())
    if unknown:
        raise ValueError(f"{metrics['experiment']}: rows for undeclared methods {sorted(unknown)}")
    claims = {c["id"]: c for c in metrics["claims"]}
    methods = []
    for method in found.methods:
        missing = [c for c in method.claims if c not in claims]
        if missing:
            raise ValueError(f"{metrics['experiment']}: method {method.id!r} names claims "
                             f"{missing} that the result does not hold")
        methods.append(method.model_dump(mode="json") | {
            "rows": [row.model_dump(mode="json") for row in rows.get(method.id, ())],
            "decided": [claims[c] for c in method.claims],
        })
    return {"experiment": metrics["experiment"], "scale": metrics["scale"],
            "claims_schema": metrics["claims_schema"], "reference": found.reference,
            "methods": methods}


# --- which entries a method credits --------------------------------------------------------------

class Link(BaseModel):
    """A method measured in this digest, credited to an entry."""

    model_config = ConfigDict(frozen=True)

    entry: str  # the entry whose page shows it
    measured_in: str  # the entry whose reproduction measures it
    method: str  # the method's id in that reproduction's experiment
    explicit: bool  # named by the entry's `measured_as`, not matched by arXiv id or URL


def links(papers: Mapping[str, Any], measured: Mapping[str, tuple[str, Sequence[Any]]]
          ) -> list[Link]:
    """Every (entry, measuring entry, method) among `papers` (entry id -> Paper). `measured`
    maps each reproduced entry to its experiment and the methods it measures (Method, or a
    method of a methods.json, with "id" and "paper"). A method is credited to the entry whose
    source is its paper (arXiv id in any version, or URL) and to every entry that names it in
    `measured_as`; never to the measuring entry itself, whose own page already shows it."""
    by_key = {paper_key(p.arxiv_id or p.url): p.id for p in papers.values()}
    found: dict[tuple[str, str, str], Link] = {}
    for measuring, (experiment, methods) in measured.items():
        for method in methods:
            method_id, paper = (method["id"], method["paper"]) if isinstance(method, Mapping) \
                else (method.id, method.paper)
            entry = by_key.get(paper_key(paper))
            if entry is not None and entry != measuring:
                found[entry, measuring, method_id] = Link(
                    entry=entry, measured_in=measuring, method=method_id, explicit=False)
            for paper_entry in papers.values():
                named = any(m.experiment == experiment and m.method == method_id
                            for m in paper_entry.measured_as)
                if named and paper_entry.id != measuring:
                    found.setdefault((paper_entry.id, measuring, method_id), Link(
                        entry=paper_entry.id, measured_in=measuring, method=method_id,
                        explicit=True))
    return sorted(found.values(), key=lambda link: (link.entry, link.measured_in, link.method))


def declared_links(papers: Mapping[str, Any], packages: tuple[str, ...]) -> list[Link]:
    """`links` among `papers` from what each reproduced entry's experiment declares: what the
    workflow plans the pages' inputs by, before any result exists."""
    measured = {p.id: (p.reproduction.experiment,
                       declared(p.reproduction.experiment, packages).methods)
                for p in papers.values() if p.reproduction is not None}
    return links(papers, measured)


def measured_elsewhere(ref: str, reproductions: Mapping[str, str], packages: tuple[str, ...]
                       ) -> list[tuple[str, Method]]:
    """The methods of paper `ref` (arXiv id or URL) that the digest's reproductions measure:
    (measuring entry id, method) for `reproductions` mapping entry ids to experiments."""
    key = paper_key(ref)
    return [(entry, method) for entry, experiment in sorted(reproductions.items())
            for method in declared(experiment, packages).methods
            if paper_key(method.paper) == key]
