"""An experiment's params: its scale's, with an entry's overrides merged over them, validated
by its Params model, with every problem named by its field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ValidationError

from digestlab.experiments.contract import ExperimentError


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


def units(params: BaseModel, path: str) -> set[int]:
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
        shared = units(params, selection.tuned_on) & units(params, selection.scored_on)
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

