"""Looking inside a GPT: the residual stream after a block (read, or replaced through a hook)
and every head's attention probabilities. Nothing here changes how the model runs."""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from digestlab.nn.attention import CausalSelfAttention
from digestlab.nn.model import GPT

Hook = Callable[[torch.Tensor], torch.Tensor | None]  # a residual-stream hook


@contextmanager
def residual_hook(model: GPT, layer: int, fn: Hook) -> Iterator[None]:
    """Within the block, call fn on the residual stream after `layer`; a tensor it returns
    replaces the stream, None leaves it unchanged."""

    def hook(module: nn.Module, args: tuple, output: tuple) -> tuple | None:
        h, kv = output
        new = fn(h)
        return None if new is None else (new, kv)

    handle = model.blocks[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def stream_after(model: GPT, idx: torch.Tensor, layer: int) -> torch.Tensor:
    """The residual stream after block `layer`, (B, T, d_model), of idx (B, T), without running
    the blocks above it (nor any residual hook on them)."""
    rope_q, rope_k, mask = model.prepare(idx)
    x = model.drop(model.wte(idx))
    kv = None
    for block in model.blocks[: layer + 1]:
        x, kv = block(x, rope_q, rope_k, kv, None, mask)
    return x


@torch.no_grad()
def attention_weights(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The causal attention probabilities of every layer and head on idx (B, T), without a
    cache: (n_layer, B, n_heads, T, T), row t the weights query t gives keys 0..t."""
    maps = []

    def record(attn: CausalSelfAttention, args: tuple, output: tuple) -> None:
        x, rope_q = args[0], args[1]
        k = output[1][0]  # (B, n_kv, T, qk), rotated
        q = attn.queries(x, rope_q)  # (B, nh, T, qk)
        k = k.repeat_interleave(attn.n_heads // k.shape[1], dim=1)  # (B, nh, T, qk)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, nh, T, T)
        T = idx.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
        maps.append(scores.float().masked_fill(~causal, float("-inf")).softmax(dim=-1))

    handles = [block.attn.register_forward_hook(record) for block in model.blocks]
    try:
        model(idx)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(maps)
