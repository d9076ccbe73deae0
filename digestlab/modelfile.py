"""Model files: a trained model with its config, what its training measured and the fingerprint
of the data it saw, in one file.

Loading rebuilds the model from its config and refuses a model file trained on other data than
the caller expects, so an analysis can never run on a base model of a different corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from digestlab.configs import GPTConfig
from digestlab.io import write_bytes_atomic
from digestlab.nn import GPT
from digestlab.train import TrainResult

FORMAT = 1  # bumped when the layout of the file changes


class ModelFileError(Exception):
    """A model file is unreadable, of another format, or of other data than expected."""


def save_model(
    path: str | Path,
    model: GPT,
    result: TrainResult,
    data_sha256: str,
    provenance: dict[str, Any] | None = None,
    stages: dict[str, TrainResult] | None = None,
) -> None:
    """Write the model's weights and config, the training result (and those of earlier
    training stages, by name) and the data's sha256 to `path`, atomically. For a model in one
    process (a sharded model would save its shards)."""
    payload = {
        "format": FORMAT,
        "config": dataclasses.asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train": dataclasses.asdict(result),
        "stages": {name: dataclasses.asdict(r) for name, r in (stages or {}).items()},
        "data_sha256": data_sha256,
        "provenance": provenance or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The model file's contents as saved (tensors on the CPU), without building the model."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelFileError(f"{path}: cannot be read as a model file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a model file of format {FORMAT}")
    return payload


def load_model(
    path: str | Path, data_sha256: str | None, device: torch.device | str = "cpu"
) -> tuple[GPT, dict[str, Any]]:
    """Rebuild the model saved at `path` on `device`, in eval mode; also return the rest of the
    file. `data_sha256` must match the fingerprint it was saved with (None skips that)."""
    payload = read_model_file(path)
    if data_sha256 is not None and payload["data_sha256"] != data_sha256:
        raise ModelFileError(
            f"{path}: trained on data {payload['data_sha256'][:12]}, but this run's data is "
            f"{data_sha256[:12]}; retrain the base model"
        )
    model = GPT(GPTConfig(**payload.pop("config")))
    model.load_state_dict(payload.pop("state_dict"))
    return model.to(device).eval(), payload


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
