"""A real-text corpus that needs no download: the Python source of the pinned torch wheel.

torch==2.13.0 is installed wherever digestlab runs, and the library source it ships (the
compiler, autograd, nn, optim, distributed...) is about 27 MB of hand-written Python: long
files, real identifiers, docstrings and comments. Unlike the generated corpus, no model that
fits this project's budgets comes near its entropy, so designs are not all squeezed onto one
floor. The bytes are identified by sha256: another torch version, or a build whose files
differ, fails with a clear error instead of training on a different corpus. Where another torch
is installed (a bare GPU machine), DIGESTLAB_TORCH_SOURCE can name the `torch/` directory of an
unpacked torch 2.13.0 wheel instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from digestlab.data.tokens import CorpusSplits, splits_from_documents

TORCH_VERSION = "2.13.0"
# The packages of torch whose .py files make up the corpus, relative to torch's directory.
PACKAGES = (
    "_decomp", "_dynamo", "_functorch", "_inductor", "_refs", "autograd", "distributed",
    "distributions", "fx", "nn", "optim",
)
# corpus_sha256 of the documents, in the order documents() returns them.
SHA256 = "932a391308617fdb0b605b76f2393d291f15000479ce9cdb452559fdfb0c4d50"


class CorpusUnavailable(RuntimeError):
    """The installed torch does not carry the corpus's exact bytes."""


def torch_root() -> Path:
    """$DIGESTLAB_TORCH_SOURCE, or the installed torch package's directory (found without
    importing torch)."""
    if os.environ.get("DIGESTLAB_TORCH_SOURCE"):
        return Path(os.environ["DIGESTLAB_TORCH_SOURCE"])
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise CorpusUnavailable("the torch-source corpus needs torch installed")
    return Path(spec.origin).parent


def source_files(root: Path) -> list[Path]:
    """The corpus's files in a fixed order: by path relative to torch, as text."""
    files = [p for package in PACKAGES for p in (root / package).rglob("*.py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def documents(root: Path | None = None) -> list[str]:
    """Every file's text, one document each, checked against the corpus's sha256."""
    root = root or torch_root()
    docs = [p.read_bytes().decode("utf-8") for p in source_files(root)]
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(doc.encode("utf-8") + b"\0")
    if digest.hexdigest() != SHA256:
        raise CorpusUnavailable(
            f"the torch-source corpus under {root} has sha256 {digest.hexdigest()[:12]}, not "
            f"{SHA256[:12]}: it needs the files of torch=={TORCH_VERSION}"
        )
    return docs


def build_splits(val_fraction: float = 0.1, seed: int = 0) -> CorpusSplits:
    """The torch-source corpus split by file into train and validation token tensors."""
    return splits_from_documents(documents(), val_fraction, seed)
