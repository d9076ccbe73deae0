"""The experiment registry and the reproduction contract.

An experiment is a module `<package>.<name>` (by default in this package) that defines

    SCALES: dict[str, dict]     # default params for "smoke", "cpu" and "gpu"
    BUDGET_S: dict[str, float]  # seconds each scale may take (benchmarks/experiment_budget.py)
    def run(params: dict, ctx: RunContext) -> Report

`reproduce` merges an entry's params over the defaults of the chosen scale, runs the experiment and
writes `metrics.json`: what was run, what was measured, the claims with their verdicts, and where
the numbers came from. Importing this package stays cheap: experiments are imported only to run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from digestlab import package_files
from digestlab.io import write_json_atomic

DEFAULT_PACKAGES = ("digestlab.experiments",)
SCALES = ("smoke", "cpu", "gpu")


class ExperimentError(Exception):
    """An experiment cannot be run as asked (unknown name, unknown param, wrong scale)."""


@dataclass
class RunContext:
    """What an experiment gets besides its params."""

    scale: str
    figures_dir: Path  # write figures here; list their file names in Report.figures
    threads: int = 1
    log: Callable[[str], None] = print


@dataclass
class Report:
    """What an experiment returns. `timing` holds everything that depends on the clock."""

    seeds: list[int]
    device: str
    metrics: dict[str, Any]
    claims: list[dict[str, Any]]
    figures: list[str] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)  # the paper's own numbers, if any


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


# The code every experiment stands on: a change here can change any result.
SHARED_SOURCES = (
    "experiments/__init__.py", "claims.py", "device.py", "figures.py", "train.py",
    "nn/*.py", "data/*.py",
)


def experiment_sources(name: str, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> list[str]:
    """The files whose contents decide experiment `name`'s results, found without importing it."""
    module_name = _module_name(name, packages)
    if module_name is None:
        raise ExperimentError(f"unknown experiment {name!r} (looked in {', '.join(packages)})")
    return sorted({*package_files(*SHARED_SOURCES), importlib.util.find_spec(module_name).origin})


def load_experiment(name: str, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> ModuleType:
    """Import the experiment module `name`."""
    module_name = _module_name(name, packages)
    if module_name is None:
        raise ExperimentError(f"unknown experiment {name!r} (looked in {', '.join(packages)})")
    return importlib.import_module(module_name)


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


def _merge(defaults: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ExperimentError(
            f"unknown param {', '.join(repr(where + k) for k in unknown)} "
            f"(allowed: {', '.join(sorted(defaults))})"
        )
    merged = dict(defaults)
    for key, value in overrides.items():
        if isinstance(defaults[key], dict) and isinstance(value, dict):
            merged[key] = _merge(defaults[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def merge_params(module: ModuleType, scale: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The experiment's defaults for `scale` with the entry's `overrides` on top, nested dicts
    merged key by key."""
    name = module.__name__.rsplit(".", 1)[-1]
    if scale not in module.SCALES:
        raise ExperimentError(f"experiment {name!r} has no {scale!r} scale")
    params = _merge(module.SCALES[scale], overrides, "")
    if "seeds" in params and not params["seeds"]:
        raise ExperimentError(f"experiment {name!r} needs at least one seed")
    return params


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
        info["torch"] = sys.modules["torch"].__version__
    return info


def reproduce(
    name: str,
    scale: str,
    overrides: dict[str, Any],
    metrics_path: str | Path,
    figures_dir: str | Path,
    packages: tuple[str, ...] = DEFAULT_PACKAGES,
    threads: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run experiment `name` at `scale` and write its metrics.json; return what was written."""
    module = load_experiment(name, packages)
    scale = resolve_scale(scale)
    params = merge_params(module, scale, overrides)
    if scale == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise ExperimentError("scale 'gpu' needs a CUDA device; use --config scale=cpu")
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    log(f"experiment {name} at scale {scale} with params {params}")

    started = time.perf_counter()
    report: Report = module.run(params, RunContext(scale, figures_dir, threads, log))
    wall = time.perf_counter() - started

    for claim in report.claims:
        missing = {"id", "text", "measured", "expected", "verdict"} - set(claim)
        if missing:
            raise ExperimentError(f"claim {claim.get('id')!r} lacks {', '.join(sorted(missing))}")
    metrics = {
        "experiment": name,
        "scale": scale,
        "device": report.device,
        "seeds": report.seeds,
        "params": params,
        "metrics": report.metrics,
        "claims": report.claims,
        "figures": report.figures,
        "reference": report.reference,
        "timing": report.timing | {"wall_time_s": round(wall, 2)},
        "provenance": provenance(),
    }
    write_json_atomic(metrics_path, metrics)
    verdicts = ", ".join(f"{c['id']}={c['verdict']}" for c in report.claims)
    log(f"done in {wall:.1f}s: {verdicts}")
    return metrics
