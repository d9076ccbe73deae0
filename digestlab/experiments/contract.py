"""The contract between an experiment and the drivers that run it.

An experiment is a package `<package>.<name>` (by default in digestlab.experiments). Its
`__init__.py` is the spec, importable without torch, so the workflow reads it while it parses:

    Params: type[pydantic.BaseModel]  # everything the experiment takes, typed; it nests the
                                      # model and loop configs (digestlab.configs)
    SCALES: dict[str, Params]         # the params of "smoke", "cpu" and "gpu"
    BUDGET_S: dict[str, float]        # seconds each scale may take (see benchmarks/)
    BASES: tuple[str, ...] = ()       # base models it stands on, each a field of Params
    REPLICATES: dict[str, str] = {}   # base -> the Params field of its seeds: one model each
    STARTS_FROM: dict[str, str] = {}  # base -> the base whose trained weights it fine-tunes
    CLAIMS: dict[str, claims.ClaimSpec]  # the paper's claims, declared before any run (claims.py):
                                      # bounds with their sources, premises, the paper's numbers
    SELECTIONS: tuple[Selection, ...] = ()  # what the spec chose by measurement, and on what

Its module `run.py` holds `run(params: Params, ctx: RunContext) -> Report`, the analysis; its
module `figures.py`, when it has one, draws the figures from what the analysis saved for them
(see digestlab.figures), at render time and in every language; its module `methods.py`, when it
has one, names the methods it measures and the paper each comes from, with their rows in a
result (see digestlab.methods), also read at render time only. Each base model `b` is trained
by `base_<b>.py`'s `train(params.b, ctx) -> TrainedBase`, as a job of its own whose model file
`run` finds at `ctx.bases[b]`: changing the analysis, or params outside `b`, reruns the analysis
and not the training. A base named in REPLICATES is trained once per seed of the field it names
(its `train.seed` set to that seed), each model a job of its own found at `ctx.bases["b-<seed>"]`
(`registry.replica`): the units of replication then include the base model itself. A base named
in STARTS_FROM is a fine-tune of another base: its job waits for that base's model file, which
its `train` finds at `ctx.bases[parent]`, and a model file records the params it was trained
with, so the fine-tune can rebuild its parent's data from them.

Anything a spec chose by measurement (a learning rate, a lambda, a feature) was chosen on
units that never vote: each `Selection` names the param holding those tuning units and the one
holding the scored units, and params whose two overlap are refused.

The README's "Adding an experiment" walks through a new one, file by file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from digestlab.claims import Claim
from digestlab.configs import GPTConfig, TrainConfig

if TYPE_CHECKING:
    from digestlab.nn import GPT
    from digestlab.train import TrainResult


class ExperimentError(Exception):
    """An experiment cannot be run as asked (unknown name, bad params, wrong scale)."""


@dataclass
class RunContext:
    """What an experiment (or a base model's training) gets besides its params."""

    scale: str
    threads: int = 1
    log: Callable[[str], None] = print
    bases: dict[str, Path] = field(default_factory=dict)  # base model name -> its model file


@dataclass(frozen=True)
class Selection:
    """Something a spec chose by measurement (`what`), the param that holds the units it was
    chosen on (`tuned_on`: tuning seeds, or the seed of a selection split) and the param that
    holds the units that vote (`scored_on`). The two must never share a unit."""

    what: str
    tuned_on: str  # a dotted path into Params: an int or a list of ints
    scored_on: str


@dataclass
class Report:
    """What an experiment returns. `timing` holds everything that depends on the clock."""

    seeds: list[int]
    device: str
    metrics: dict[str, Any]
    claims: list[Claim]
    figures: dict[str, Any] = field(default_factory=dict)  # figure name -> what it shows
    timing: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)  # the paper's own numbers, if any


@dataclass
class TrainedBase:
    """What a base model's `train` returns: the model, its training result, and the sha256 of
    the data it was trained on (checked again when the analysis loads it)."""

    model: GPT
    result: TrainResult  # the last stage of training, whose weights these are
    data_sha256: str
    stages: dict[str, TrainResult] = field(default_factory=dict)  # earlier stages, by name


class LanguageModelParams(BaseModel):
    """What every base language model takes: the model, its training, and its windows. An
    experiment subclasses it with the fields of its own data."""

    model_config = ConfigDict(extra="forbid")

    model: GPTConfig
    train: TrainConfig
    batch_size: int = Field(gt=0)
    seq_len: int = Field(gt=0)  # tokens per training window

    @model_validator(mode="after")
    def _window_fits(self) -> LanguageModelParams:
        if self.seq_len > self.model.block_size:
            raise ValueError(f"seq_len {self.seq_len} exceeds model.block_size "
                             f"{self.model.block_size}")
        return self

