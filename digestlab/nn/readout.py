"""Reading a trained model: its residual stream, its loss with the stream replaced, and its
greedy continuations with the stream steered, for batches of token rows of different lengths.

A row is a list of token ids that begins with a context token (a document separator): it is
read but not scored, so activations and losses cover each row's positions from 1 on. Rows go
through the model CHUNK at a time, right-padded for full forwards (causal attention never
looks ahead, so padding after a row changes nothing in it) and left-padded, with an attention
mask, for decoding with the KV cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch
from torch.nn import functional as F

from digestlab.nn.inspect import Hook, residual_hook, stream_after
from digestlab.nn.model import GPT
from digestlab.nn.rows import left_mask, pad_rows

CHUNK = 256  # rows per forward pass


def scored_positions(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(N, width) mask of each right-padded row's positions from 1 to its end."""
    at = torch.arange(width)
    return (at >= 1) & (at < lengths[:, None])


def _chunks(rows: Sequence, chunk: int):
    for start in range(0, len(rows), chunk):
        yield rows[start : start + chunk]


def _steered(model: GPT, layer: int, hook: Hook | None):
    return residual_hook(model, layer, hook) if hook else contextlib.nullcontext()


@torch.no_grad()
def residual(model: GPT, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """The residual stream after block `layer`, (N, T, d) in float32, of ids (N, T)."""
    return stream_after(model, ids.to(model.wte.weight.device), layer).float()


@torch.no_grad()
def stream(model: GPT, rows: Sequence[Sequence[int]], layer: int, pad: int,
           last_only: bool = False, chunk: int = CHUNK) -> torch.Tensor:
    """Residual-stream vectors after block `layer` on the CPU: (M, d) at every scored position
    of every row, in order, or (N, d) at each row's last position (`last_only`)."""
    out = []
    for part in _chunks(rows, chunk):
        ids, lengths = pad_rows(part, pad)
        h = residual(model, ids, layer).cpu()
        if last_only:
            out.append(h[torch.arange(len(ids)), lengths - 1])
        else:
            out.append(h[scored_positions(lengths, ids.shape[1])])
    return torch.cat(out)


@torch.no_grad()
def spliced_losses(model: GPT, rows: Sequence[Sequence[int]], layer: int, pad: int,
                   replacements: Mapping[str, Hook | None], chunk: int = CHUNK
                   ) -> dict[str, float]:
    """Mean next-token cross-entropy over every scored position of the rows with the residual
    stream after `layer` replaced by each hook (None: the model as it is)."""
    device = model.wte.weight.device
    totals = dict.fromkeys(replacements, 0.0)
    count = 0
    for part in _chunks(rows, chunk):
        ids, lengths = pad_rows(part, pad)
        targets = ids[:, 1:].clone()
        targets[~scored_positions(lengths, ids.shape[1])[:, 1:]] = -1
        count += int((targets >= 0).sum())
        ids, targets = ids.to(device), targets.to(device)
        for name, hook in replacements.items():
            with _steered(model, layer, hook):
                logits, _ = model(ids[:, :-1])
            totals[name] += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                            ignore_index=-1, reduction="sum").item()
    return {name: total / count for name, total in totals.items()}


@torch.no_grad()
def greedy(model: GPT, rows: Sequence[Sequence[int]], max_new: int, pad: int,
           stop: int | None = None, layer: int = 0, hook: Hook | None = None,
           chunk: int = CHUNK) -> tuple[torch.Tensor, list[list[int]]]:
    """Each row's greedy continuation (at most `max_new` tokens, cut before `stop`) and the
    model's next-token probabilities right after the row (N, vocab), with `hook` on the stream
    after block `layer` throughout (the prompt's forward and every decoded token)."""
    device = model.wte.weight.device
    first, continuations = [], []
    with _steered(model, layer, hook):
        for part in _chunks(rows, chunk):
            ids, lengths = pad_rows(part, pad, left=True)
            mask = left_mask(lengths, ids.shape[1])
            out, logits = model.generate(ids.to(device), max_new, temperature=0.0,
                                         attention_mask=mask.to(device), stop_token=stop,
                                         return_logits=True)
            first.append(logits[:, 0].float().softmax(-1).cpu())
            for row in out[:, ids.shape[1]:].tolist():
                continuations.append(row[: row.index(stop)] if stop in row else row)
    return torch.cat(first), continuations
