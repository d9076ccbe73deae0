"""Finding experiments, and the files whose contents decide each of their jobs.

Experiments are the packages of digestlab.experiments (or of the packages a caller names); a
module there that is not a package (this one) is none. The workflow imports this module while
it parses, so it needs no torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from digestlab import package_files
from digestlab.experiments.contract import ExperimentError
from digestlab.experiments.params import units

DEFAULT_PACKAGES = ("digestlab.experiments",)
SCALES = ("smoke", "cpu", "gpu")
BASE_PREFIX = "base_"  # base model b of an experiment is trained by its module base_<b>.py


def _module_name(name: str, packages: tuple[str, ...]) -> str | None:
    if not name.isidentifier():
        return None
    for package in packages:
        try:
            found = importlib.util.find_spec(f"{package}.{name}")
        except ModuleNotFoundError:
            continue
        if found is not None and found.submodule_search_locations is not None:
            return f"{package}.{name}"
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
    "experiments/*.py", "modelfile.py", "configs.py", "device.py", "objectives.py",
    "parallel.py", "train.py", "nn/*.py", "data/*.py",
)
# The code every experiment's analysis stands on: a change here reruns every analysis (and
# only that: deciding claims never retrains a base model).
SHARED_SOURCES = (*TRAINING_SOURCES, "claims.py")
FIGURES_MODULE = "figures.py"  # an experiment's figures: drawn at render time, not by its run
METHODS_MODULE = "methods.py"  # the methods it measures, credited to papers: read at render time
FIGURE_DATA = "data.json"  # in a result's figures folder: what each figure shows


def experiment_sources(name: str, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> list[str]:
    """The files whose contents decide experiment `name`'s analysis: its package but for the
    base models' training, the figures and the methods, and the shared code."""
    render_time = (FIGURES_MODULE, METHODS_MODULE)
    own = [str(p) for p in experiment_dir(name, packages).glob("*.py")
           if not p.name.startswith(BASE_PREFIX) and p.name not in render_time]
    return sorted({*package_files(*SHARED_SOURCES), *own})


def figure_sources(name: str, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> list[str]:
    """The files whose contents decide how experiment `name`'s figures look: the figure code
    (its own and the shared), its spec, and the UI catalogs their labels come from."""
    folder = experiment_dir(name, packages)
    own = [str(p) for p in (folder / "__init__.py", folder / FIGURES_MODULE) if p.exists()]
    shared = package_files("figures.py", "i18n.py", "claims.py", "locale/*/LC_MESSAGES/*.po")
    return sorted({*shared, *own})


def load_methods(name: str, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> ModuleType | None:
    """Experiment `name`'s methods module (digestlab.methods says what it holds), or None when
    it has none or there is no such experiment."""
    module_name = _module_name(name, packages)
    if module_name is None or importlib.util.find_spec(
            f"{module_name}.{Path(METHODS_MODULE).stem}") is None:
        return None
    return importlib.import_module(f"{module_name}.{Path(METHODS_MODULE).stem}")


def methods_sources(name: str, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> list[str]:
    """The files whose contents decide what a result of experiment `name` credits to papers
    (results/<paper>/methods.json): its package but for the base models' training and the
    figures (its methods module may import any other of its modules), and the shared code."""
    own = [str(p) for p in experiment_dir(name, packages).glob("*.py")
           if not p.name.startswith(BASE_PREFIX) and p.name != FIGURES_MODULE]
    return sorted({*package_files("methods.py", "claims.py", "papers.py"), *own})


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
        for seed in sorted(units(params, seeds)):
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

