"""Experiments: each a package of this one, registered by being here.

- contract.py: what an experiment provides (its spec, `run`, its base models) and what it gets
  (`RunContext`) and returns (`Report`, `TrainedBase`); read it first.
- registry.py: finding experiments, their base models and the files each job depends on.
- params.py: an experiment's params at a scale, with an entry's overrides, validated.
- drivers.py: `pretrain` and `reproduce`, which the workflow's jobs call.
"""

from digestlab.experiments.contract import (
    ExperimentError,
    LanguageModelParams,
    Report,
    RunContext,
    Selection,
    TrainedBase,
)
from digestlab.experiments.drivers import pretrain, provenance, reproduce
from digestlab.experiments.params import (
    merge_params,
    overrides_from,
    param_problems,
    selection_problems,
)
from digestlab.experiments.registry import (
    BASE_PREFIX,
    DEFAULT_PACKAGES,
    FIGURE_DATA,
    FIGURES_MODULE,
    METHODS_MODULE,
    SCALES,
    base_field,
    base_models,
    base_sources,
    cuda_visible,
    experiment_dir,
    experiment_exists,
    experiment_sources,
    figure_sources,
    load_methods,
    load_spec,
    methods_sources,
    parent_base,
    replica,
    resolve_scale,
)

__all__ = [
    "BASE_PREFIX", "DEFAULT_PACKAGES", "FIGURES_MODULE", "FIGURE_DATA", "METHODS_MODULE", "SCALES",
    "ExperimentError", "LanguageModelParams", "Report", "RunContext", "Selection",
    "TrainedBase", "base_field", "base_models", "base_sources", "cuda_visible",
    "experiment_dir", "experiment_exists", "experiment_sources", "figure_sources",
    "load_methods", "load_spec", "merge_params", "methods_sources", "overrides_from",
    "param_problems", "parent_base", "pretrain", "provenance", "replica", "reproduce",
    "resolve_scale", "selection_problems",
]
