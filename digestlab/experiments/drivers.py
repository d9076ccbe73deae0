"""The drivers: `pretrain` trains one base model and saves its model file; `reproduce` runs an
experiment's analysis and writes its metrics.json, with the claims' verdicts (Holm's correction
over the paper's findings) and where the numbers (and the base models) came from."""

from __future__ import annotations

import importlib
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from digestlab.claims import SCHEMA_VERSION, holm
from digestlab.experiments.contract import ExperimentError, Report, RunContext, TrainedBase
from digestlab.experiments.params import merge_params
from digestlab.experiments.registry import (
    BASE_PREFIX,
    DEFAULT_PACKAGES,
    FIGURE_DATA,
    base_field,
    base_models,
    load_spec,
    parent_base,
    resolve_scale,
)
from digestlab.io import write_json_atomic


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
    from digestlab.modelfile import file_sha256, read_model_file

    saved = read_model_file(path)
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
    model_path: str | Path,
    packages: tuple[str, ...] = DEFAULT_PACKAGES,
    threads: int = 1,
    log: Callable[[str], None] = print,
    bases: Mapping[str, str | Path] | None = None,
) -> None:
    """Train base model `base` (or a replica, `b-<seed>`) of experiment `name` at `scale` and
    save its model file. `overrides` are the entry's params for that base (its field of Params),
    as `base_models` gives them; `bases` holds the model file of the base it starts from, if
    any (STARTS_FROM)."""
    from digestlab.modelfile import save_model

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
    model_path = Path(model_path)
    parent = parent_base(spec, base)
    if parent is not None and parent not in (bases or {}):
        raise ExperimentError(f"base model {base!r} starts from {parent!r}: pass its model file")
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
    save_model(model_path, trained.model, trained.result, trained.data_sha256,
               provenance() | {"experiment": name, "base": base, "scale": scale,
                               "threads": max(1, threads),
                               "params": params.model_dump(mode="json")}, trained.stages)
    log(f"saved {model_path} ({seconds:.1f}s of training)")


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
    `figures_dir`; return the metrics. `bases` maps each of its base models to a model file
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
