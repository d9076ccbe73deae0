"""Byte-level tokens and training batches made from any corpus of UTF-8 documents.

A corpus is a list of documents; on disk and in memory each is followed by the separator byte.
Splits are by document, never by window, so no validation text leaks into training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from digestlab.data.rng import SplitMix64

DOCUMENT_SEPARATOR = 0  # byte written after every document; never occurs inside one (text)
VOCAB_SIZE = 256  # byte-level tokens


def split_documents(docs: list[str], val_fraction: float, seed: int = 0
                    ) -> tuple[list[str], list[str]]:
    """Split documents (never windows) into train and validation sets, each in corpus order."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = list(range(len(docs)))
    SplitMix64(seed ^ 0x5EED5EED).shuffle(order)
    n_val = round(len(docs) * val_fraction)
    if val_fraction > 0 and len(docs) >= 2:
        n_val = max(1, n_val)
    val_indices = set(order[:n_val])
    train = [doc for i, doc in enumerate(docs) if i not in val_indices]
    val = [doc for i, doc in enumerate(docs) if i in val_indices]
    return train, val


def corpus_sha256(docs: list[str]) -> str:
    """Return the sha256 of the documents as stored: each followed by the separator byte."""
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(doc.encode("utf-8"))
        digest.update(bytes([DOCUMENT_SEPARATOR]))
    return digest.hexdigest()


def encode(text: str) -> list[int]:
    """Return the byte-level tokens of an ASCII (or any UTF-8) text."""
    return list(text.encode("utf-8"))


def decode(tokens: list[int] | torch.Tensor) -> str:
    """Return the text of byte-level tokens; the separator shows as a newline-free NUL."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.tolist()
    return bytes(tokens).decode("utf-8", errors="replace")


def tokens_from_documents(docs: list[str]) -> torch.Tensor:
    """Concatenate documents, each followed by the separator, into one uint8 token tensor."""
    joined = bytes([DOCUMENT_SEPARATOR]).join(doc.encode("utf-8") for doc in docs)
    if docs:
        joined += bytes([DOCUMENT_SEPARATOR])
    return torch.frombuffer(bytearray(joined), dtype=torch.uint8)


def _windows(data: torch.Tensor, starts: torch.Tensor, seq_len: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = starts[:, None] + torch.arange(seq_len + 1)  # (B, T+1)
    window = data[offsets].long()  # (B, T+1)
    # Contiguous, so models may .view() them like nanoGPT's batches.
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


def get_batch(data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample random windows: x (B, T) int64 tokens and y, the same windows shifted by one."""
    if len(data) < seq_len + 1:
        raise ValueError(f"{len(data)} tokens is too few for windows of {seq_len} + 1")
    starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator)
    return _windows(data, starts, seq_len)


def validation_windows(data: torch.Tensor, n_windows: int, seq_len: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a fixed set of windows evenly spread over the data (no randomness), as (x, y)."""
    if len(data) < seq_len + 1:
        raise ValueError(f"{len(data)} tokens is too few for windows of {seq_len} + 1")
    last_start = len(data) - seq_len - 1
    # Integer arithmetic: the same starts on every machine, with no float rounding to differ.
    starts = torch.tensor([i * last_start // max(1, n_windows - 1) for i in range(n_windows)])
    return _windows(data, starts, seq_len)


@dataclass
class CorpusSplits:
    """The corpus as train and validation tokens, with what identifies it."""

    train: torch.Tensor  # uint8 tokens of the training documents
    val: torch.Tensor  # uint8 tokens of the validation documents
    sha256: str  # corpus_sha256 of all documents, before the split
    n_train_documents: int
    n_val_documents: int


def splits_from_documents(docs: list[str], val_fraction: float = 0.1, seed: int = 0
                          ) -> CorpusSplits:
    """Split any generator's documents by document and return both splits as token tensors."""
    train_docs, val_docs = split_documents(docs, val_fraction, seed)
    return CorpusSplits(
        train=tokens_from_documents(train_docs),
        val=tokens_from_documents(val_docs),
        sha256=corpus_sha256(docs),
        n_train_documents=len(train_docs),
        n_val_documents=len(val_docs),
    )
