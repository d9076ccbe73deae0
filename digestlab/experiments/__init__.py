"""The experiment registry and the reproduction contract.

An experiment is a package `<package>.<name>` (by default in this package). Its `__init__.py`
is the spec, importable without torch, so the workflow reads it while it parses:

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
(see digestlab.figures), at render time and in every language. Each base model `b` is trained
by `base_<b>.py`'s `train(params.b, ctx) -> TrainedBase`, as a job of its own whose checkpoint
`run` finds at `ctx.bases[b]`: changing the analysis, or params outside `b`, reruns the analysis
and not the training. A base named in REPLICATES is trained once per seed of the field it names
(its `train.seed` set to that seed), each model a job of its own found at `ctx.bases["b-<seed>"]`
(`replica`): the units of replication then include the base model itself. A base named in
STARTS_FROM is a fine-tune of another base: its job waits for that base's checkpoint, which its
`train` finds at `ctx.bases[parent]`, and a checkpoint records the params it was trained with,
so the fine-tune can rebuild its parent's data from them.

`reproduce` merges an entry's params over the chosen scale's, runs the experiment and writes
`metrics.json`: what was run, what was measured, the claims with their verdicts (typed records,
with Holm's correction over the paper's findings), and where the numbers (and the base models)
came from; and `figures/data.json`, the data of its figures.

Anything a spec chose by measurement (a learning rate, a lambda, a feature) was chosen on
units that never vote: each `Selection` names the param holding those tuning units and the one
holding the scored units, and params whose two overlap are refused.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from digestlab import package_files
from digestlab.claims import SCHEMA_VERSION, Claim, holm
from digestlab.configs import GPTConfig, TrainConfig
from digestlab.io import write_json_atomic

if TYPE_CHECKING:
    from digestlab.nn import GPT
    from digestlab.train import TrainResult

DEFAULT_PACKAGES = ("digestlab.experiments",)
SCALES = ("smoke", "cpu", "gpu")
BASE_PREFIX = "base_"  # base model b of an experiment is trained by its module base_<b>.py


class ExperimentError(Exception):
    """An experiment cannot be run as asked (unknown name, bad params, wrong scale)."""


@dataclass
class RunContext:
    """What an experiment (or a base model's training) gets besides its params."""

    scale: str
    threads: int = 1
    log: Callable[[str], None] = print
    bases: dict[str, Path] = field(default_factory=dict)  # base model name -> its checkpoint


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


def _module_name(name: str, packages: tuple[str, ...]) -> str | None:
    if not name.isidentifier():
        return None
    for package in packages:
        try:
            if importlib.util.find_spec(f"{package}.{name}") is not None:
                return f"{package}.{name}"
        except ModuleNotFoundError:
            continue
    return None


def experiment_exists(name: str, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> bool:
    """True when `name` is a registered experiment; checked without importing it."""
    return _module_name(name, packages) is not None


def load_spec(name: str, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> ModuleType:
    """Import experiment `name`'s spec (its package's __init__, which needs no torch)."""
    module_name = _module_name(name, packages)
    if module_name is None:
        raise ExperimentError(f"unknown experiment {name!r} (looked in {', '.join(packages)})")
    return importlib.import_module(module_name)


def experiment_dir(name: str, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> Path:
    """The folder of experiment `name`'s package, found without importing it."""
    module_name = _module_name(name, packages)
    if module_name is None:
        raise ExperimentError(f"unknown experiment {name!r} (looked in {', '.join(packages)})")
    return Path(importlib.util.find_spec(module_name).origin).parent


# The code a base model's training runs: a change here retrains every base model.
TRAINING_SOURCES = (
    "experiments/__init__.py", "checkpoint.py", "configs.py", "device.py", "objectives.py",
    "parallel.py", "train.py", "nn/*.py", "data/*.py",
)
# The code every experiment's analysis stands on: a change here reruns every analysis (and
# only that: deciding claims never retrains a base model).
SHARED_SOURCES = (*TRAINING_SOURCES, "claims.py")
FIGURES_MODULE = "figures.py"  # an experiment's figures: drawn at render time, not by its run
FIGURE_DATA = "data.json"  # in a result's figures folder: what each figure shows


def experiment_sources(name: str, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> list[str]:
    """The files whose contents decide experiment `name`'s analysis: its package but for the
    base models' training and the figures, and the shared code."""
    own = [str(p) for p in experiment_dir(name, packages).glob("*.py")
           if not p.name.startswith(BASE_PREFIX) and p.name != FIGURES_MODULE]
    return sorted({*package_files(*SHARED_SOURCES), *own})


def figure_sources(name: str, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> list[str]:
    """The files whose contents decide how experiment `name`'s figures look: the figure code
    (its own and the shared), its spec, and the UI catalogs their labels come from."""
    folder = experiment_dir(name, packages)
    own = [str(p) for p in (folder / "__init__.py", folder / FIGURES_MODULE) if p.exists()]
    shared = package_files("figures.py", "i18n.py", "claims.py", "locale/*/LC_MESSAGES/*.po")
    return sorted({*shared, *own})


def base_sources(name: str, base: str, packages: tuple[str, ...] = DEFAULT_PACKAGES
                 ) -> list[str]:
    """The files whose contents decide base model `base` (or a replica of it) of experiment
    `name`."""
    module = experiment_dir(name, packages) / f"{BASE_PREFIX}{base_field(base)}.py"
    return sorted({*package_files(*TRAINING_SOURCES), str(module)})


def replica(base: str, seed: int) -> str:
    """The name of the replica of base model `base` trained with `seed`."""
    return f"{base}-{seed}"


def base_field(name: str) -> str:
    """The Params field (and base module) of a base model or of one of its replicas."""
    return name.split("-", 1)[0]


def parent_base(spec: ModuleType, base: str) -> str | None:
    """The base model whose weights base model `base` starts from (STARTS_FROM), if any."""
    return getattr(spec, "STARTS_FROM", {}).get(base_field(base))


def base_models(spec: ModuleType, params: BaseModel) -> dict[str, dict[str, Any]]:
    """Every base model the experiment stands on, by name, to its own params (JSON-ready): one
    per base, or one per seed of a base in REPLICATES, each with that training seed; a base
    another starts from comes before it. A model's params hold nothing of the others', so
    adding a seed trains only the new replica."""
    bases, out = getattr(spec, "BASES", ()), {}
    for base, parent in getattr(spec, "STARTS_FROM", {}).items():
        if base not in bases or parent not in bases[: bases.index(base)]:
            raise ExperimentError(f"STARTS_FROM: {base!r} must be a base listed after {parent!r}")
        if {base, parent} & set(getattr(spec, "REPLICATES", {})):
            raise ExperimentError(f"STARTS_FROM: {base!r} and {parent!r} cannot be replicated")
    for base in bases:
        values = getattr(params, base).model_dump(mode="json")
        seeds = getattr(spec, "REPLICATES", {}).get(base)
        if seeds is None:
            out[base] = values
            continue
        for seed in sorted(_units(params, seeds)):
            out[replica(base, seed)] = values | {"train": values["train"] | {"seed": seed}}
    return out


def cuda_visible() -> bool:
    """A cheap look for an NVIDIA GPU that does not import torch (used while the DAG is parsed)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def resolve_scale(scale: str) -> str:
    """`auto` becomes `gpu` on a machine with an NVIDIA GPU and `cpu` otherwise."""
    if scale == "auto":
        return "gpu" if cuda_visible() else "cpu"
    if scale not in SCALES:
        raise ExperimentError(f"unknown scale {scale!r} (allowed: auto, {', '.join(SCALES)})")
    return scale


def _merged(defaults: Any, overrides: Any) -> Any:
    # Nested mappings merge key by key; anything else in the overrides replaces the default.
    if isinstance(defaults, dict) and isinstance(overrides, Mapping):
        return {**defaults, **{k: _merged(defaults.get(k), v) for k, v in overrides.items()}}
    return overrides


def _allowed(model: type | None) -> str:
    fields = getattr(model, "model_fields", None) or getattr(model, "__dataclass_fields__", {})
    return f" (allowed: {', '.join(fields)})" if fields else ""


def _field_type(model: type, loc: tuple) -> type | None:
    """The (dataclass or pydantic) type that holds the field at `loc`, for the allowed names."""
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None) or getattr(model, "__pydantic_fields__", {})
        if part not in fields:
            return None
        model = fields[part].annotation
    return model


def _units(params: BaseModel, path: str) -> set[int]:
    value: Any = params
    for part in path.split("."):
        value = getattr(value, part)
        if value is None:  # an optional selection that was not made
            return set()
    return set(value) if isinstance(value, list | tuple | set) else {value}


def selection_problems(spec: ModuleType, params: BaseModel) -> list[tuple[str, str]]:
    """Each declared selection whose tuning units overlap the scored ones, as (field, what is
    wrong): something chosen by measurement must never be chosen on what votes."""
    problems = []
    for selection in getattr(spec, "SELECTIONS", ()):
        shared = _units(params, selection.tuned_on) & _units(params, selection.scored_on)
        if shared:
            problems.append((selection.tuned_on,
                             f"{selection.what} is chosen on {sorted(shared)}, which "
                             f"{selection.scored_on} also scores; tuning and scored units must "
                             "be disjoint"))
    return problems


def param_problems(spec: ModuleType, scale: str, overrides: Mapping[str, Any]
                   ) -> list[tuple[str, str]]:
    """Each problem of `overrides` over the `scale` params, as (field, what is wrong); the field
    is "" for a problem of the params as a whole."""
    name = spec.__name__.rsplit(".", 1)[-1]
    if scale not in spec.SCALES:
        return [("", f"experiment {name!r} has no {scale!r} scale")]
    merged = _merged(spec.SCALES[scale].model_dump(), overrides)
    try:
        params = spec.Params.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
                message = "unknown param" + _allowed(_field_type(spec.Params, loc))
            else:
                message = error["msg"].removeprefix("Value error, ")
            problems.append((".".join(str(part) for part in loc), message))
        return problems
    return selection_problems(spec, params)


def overrides_from(assignments: list[str]) -> dict[str, Any]:
    """Nested param overrides from `path=value` strings, as a paper entry's
    `reproduction.params` would give them: the path dotted (`train.steps`), the value JSON or,
    failing that, a plain string."""
    overrides: dict[str, Any] = {}
    for item in assignments:
        path, _, text = item.partition("=")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        *parents, leaf = path.split(".")
        node = overrides
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return overrides


def merge_params(spec: ModuleType, scale: str, overrides: Mapping[str, Any]) -> BaseModel:
    """The `scale` params of the experiment with the entry's `overrides` on top, nested
    mappings merged key by key, validated by its Params model."""
    problems = param_problems(spec, scale, overrides)
    if problems:
        raise ExperimentError("; ".join(f"{field}: {message}" if field else message
                                        for field, message in problems))
    return spec.Params.model_validate(_merged(spec.SCALES[scale].model_dump(), overrides))


def _git_commit() -> str | None:
    # The commit of the code itself (not of the working directory), marked -dirty when edited.
    package_dir = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(package_dir), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """Where a result came from: package, code and interpreter versions."""
    from digestlab import __version__

    info = {
        "digestlab": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if "torch" in sys.modules:
        info["torch"] = str(sys.modules["torch"].__version__)  # a plain str, not TorchVersion
    return info


def _require_cuda_for(scale: str) -> None:
    if scale == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise ExperimentError("scale 'gpu' needs a CUDA device; use --config scale=cpu")


def _base_record(path: Path) -> dict[str, Any]:
    """What metrics.json says about a base model: its file's hash and its own provenance."""
    from digestlab.checkpoint import file_sha256, read_checkpoint

    saved = read_checkpoint(path)
    def summary(result: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in result.items() if k != "loss_curve"}

    record = {"file": path.name, "sha256": file_sha256(path),
              "data_sha256": saved["data_sha256"], "train": summary(saved["train"]),
              # its params are already in metrics.json's own
              "provenance": {k: v for k, v in saved["provenance"].items() if k != "params"}}
    if saved.get("stages"):
        record["stages"] = {name: summary(r) for name, r in saved["stages"].items()}
    return record


def pretrain(
    name: str,
    base: str,
    scale: str,
    overrides: Mapping[str, Any],
    checkpoint_path: str | Path,
    packages: tuple[str, ...] = DEFAULT_PACKAGES,
    threads: int = 1,
    log: Callable[[str], None] = print,
    bases: Mapping[str, str | Path] | None = None,
) -> None:
    """Train base model `base` (or a replica, `b-<seed>`) of experiment `name` at `scale` and
    save its checkpoint. `overrides` are the entry's params for that base (its field of Params),
    as `base_models` gives them; `bases` holds the checkpoint of the base it starts from, if
    any (STARTS_FROM)."""
    from digestlab.checkpoint import save_checkpoint

    spec = load_spec(name, packages)
    field = base_field(base)
    if field not in getattr(spec, "BASES", ()):
        raise ExperimentError(f"experiment {name!r} has no base model {base!r}")
    scale = resolve_scale(scale)
    params = getattr(merge_params(spec, scale, {field: overrides}), field)
    _require_cuda_for(scale)
    log(f"base model {base} of {name} at scale {scale} with params {params}")
    import torch

    module = importlib.import_module(f"{spec.__name__}.{BASE_PREFIX}{field}")
    checkpoint_path = Path(checkpoint_path)
    parent = parent_base(spec, base)
    if parent is not None and parent not in (bases or {}):
        raise ExperimentError(f"base model {base!r} starts from {parent!r}: pass its checkpoint")
    ctx = RunContext(scale, threads, log,
                     {parent: Path(bases[parent])} if parent is not None else {})
    # One model on the cores the job was given; on the CPU its numbers follow the thread count,
    # which the provenance records.
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    started = time.perf_counter()
    try:
        trained: TrainedBase = module.train(params, ctx)
    finally:
        torch.set_num_threads(saved_threads)
    seconds = time.perf_counter() - started
    # the params it was trained with, JSON-ready: a fine-tune rebuilds its parent's data from them
    save_checkpoint(checkpoint_path, trained.model, trained.result, trained.data_sha256,
                    provenance() | {"experiment": name, "base": base, "scale": scale,
                                    "threads": max(1, threads),
                                    "params": params.model_dump(mode="json")}, trained.stages)
    log(f"saved {checkpoint_path} ({seconds:.1f}s of training)")


def reproduce(
    name: str,
    scale: str,
    overrides: Mapping[str, Any],
    metrics_path: str | Path,
    figures_dir: str | Path,
    packages: tuple[str, ...] = DEFAULT_PACKAGES,
    threads: int = 1,
    log: Callable[[str], None] = print,
    bases: Mapping[str, str | Path] | None = None,
) -> dict[str, Any]:
    """Run experiment `name` at `scale` and write its metrics.json, and its figures' data into
    `figures_dir`; return the metrics. `bases` maps each of its base models to a checkpoint
    (trained here, beside metrics.json, when not given)."""
    spec = load_spec(name, packages)
    scale = resolve_scale(scale)
    params = merge_params(spec, scale, overrides)
    _require_cuda_for(scale)
    # The folder exists from the start: should the job be killed, Snakemake finds an output of
    # it on disk, marked incomplete, and the next run redoes the job (a job whose outputs are
    # all missing is redone only when something downstream is out of date).
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    base_paths = {b: Path(p) for b, p in (bases or {}).items()}
    for base, values in base_models(spec, params).items():
        if base not in base_paths:  # run on its own (benchmarks): train the base beside
            base_paths[base] = Path(metrics_path).parent / "bases" / f"{base}.pt"
            pretrain(name, base, scale, values, base_paths[base], packages, threads, log,
                     base_paths)
    log(f"experiment {name} at scale {scale} with params {params}")

    started = time.perf_counter()
    runner = importlib.import_module(f"{spec.__name__}.run")
    report: Report = runner.run(params, RunContext(scale, threads, log, base_paths))
    wall = time.perf_counter() - started

    declared = getattr(spec, "CLAIMS", {})
    for claim in report.claims:
        if claim.id not in declared:
            raise ExperimentError(f"claim {claim.id!r} is not declared in {name}'s spec CLAIMS")
    claims = holm(report.claims)
    metrics = {
        "experiment": name,
        "scale": scale,
        "device": report.device,
        "seeds": report.seeds,
        "params": params.model_dump(mode="json"),
        "metrics": report.metrics,
        "claims_schema": SCHEMA_VERSION,
        "claims": [c.model_dump(mode="json") for c in claims],
        "figures": list(report.figures),
        "reference": report.reference,
        "timing": report.timing | {"wall_time_s": round(wall, 2)},
        # the base models' files and their own provenance: what the result stands on
        "provenance": provenance() | {
            "bases": {base: _base_record(path) for base, path in sorted(base_paths.items())}},
    }
    write_json_atomic(figures_dir / FIGURE_DATA, report.figures)
    write_json_atomic(metrics_path, metrics)
    verdicts = ", ".join(f"{c.id}={c.verdict}" for c in claims)
    log(f"done in {wall:.1f}s: {verdicts}")
    return metrics
