"""The one decoder-only transformer every experiment uses.

Reads top to bottom like nanoGPT's model.py: norm, rotary, attention, MLP, block, model. Its
config, GPTConfig, lives in digestlab/configs.py, which the workflow imports without torch.
Attention variants are config fields, not subclasses:
- MHA / GQA / MQA: n_kv_heads == n_heads / divides n_heads / == 1.
- Cross-Layer Attention (Brandon et al. 2024, arXiv 2405.12981): with kv_share = s, the first
  layer of each group of s consecutive layers computes K/V; the other s - 1 layers have no K/V
  projections and attend to the producer's K/V with their own queries.
- Latent KV (DeepSeek-V2 MLA): K/V are up-projected from a small latent c_kv, and a decoupled
  RoPE key shared across heads carries position; only c_kv and that key are cached.
"""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from digestlab.configs import GPTConfig
from digestlab.nn.cache import KVCache

# K and V as handed from a producing layer to the layers that reuse them:
# k (B, n_kv, S, qk_dim) already rotated, v (B, n_kv, S, hs).
KV = tuple[torch.Tensor, torch.Tensor]


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale and no bias."""

    def __init__(self, ndim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension, in x's dtype: under autocast a bf16 input (MLA's latent)
        with an fp32 weight would miss the fused kernel."""
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


class Rotary(nn.Module):
    """Rotary position embedding angles for explicit position ids."""

    def __init__(self, dim: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        # not persistent: it is a function of the config, so checkpoints need not carry it
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (cos, sin), each (B, 1, T, dim/2), for position ids of shape (B, T)."""
        # fp32 angles: positions can be large after cache eviction re-assigns them
        angles = positions.float()[..., None] * self.inv_freq  # (B, T, dim/2)
        angles = angles[:, None]  # (B, 1, T, dim/2)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, h, T, d) by the angles (B, 1, T, d/2), GPT-NeoX half-split layout."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    """Causal self-attention with GQA/MQA, cross-layer KV sharing and optional latent KV."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.latent = config.kv_latent_dim > 0
        self.rope_dim = config.kv_rope_dim if self.latent else 0  # decoupled RoPE part of q/k
        self.produces_kv = layer_idx % config.kv_share == 0
        self.kv_slot = layer_idx // config.kv_share  # which cache entry this layer's group uses
        self.dropout = config.dropout
        qk_dim = self.head_dim + self.rope_dim
        self.q_proj = nn.Linear(config.d_model, self.n_heads * qk_dim, bias=config.bias)
        # consumer layers (CLA) own no K/V parameters at all
        if self.produces_kv and self.latent:
            self.kv_down = nn.Linear(config.d_model, config.kv_latent_dim, bias=config.bias)
            self.kv_norm = RMSNorm(config.kv_latent_dim)
            self.kv_up = nn.Linear(
                config.kv_latent_dim, 2 * self.n_kv_heads * self.head_dim, bias=config.bias
            )
            self.k_rope_proj = nn.Linear(config.d_model, self.rope_dim, bias=config.bias)
        elif self.produces_kv:
            self.kv_proj = nn.Linear(
                config.d_model, 2 * self.n_kv_heads * self.head_dim, bias=config.bias
            )
        self.out_proj = nn.Linear(self.n_heads * self.head_dim, config.d_model, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def compute_kv(
        self,
        x: torch.Tensor,
        rope_k: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None,
    ) -> KV:
        """Project x to K/V, extend them with the cache, and rotate keys at their positions."""
        B, T, _ = x.shape
        if self.latent:
            c_kv = self.kv_norm(self.kv_down(x))  # (B, T, r)
            k_rope = self.k_rope_proj(x)  # (B, T, dr), stored before rotation
            if cache is not None:
                c_kv, k_rope = cache.append(self.kv_slot, c_kv, k_rope)  # (B, S, r), (B, S, dr)
            S = c_kv.shape[1]
            kv = self.kv_up(c_kv).view(B, S, self.n_kv_heads, 2 * self.head_dim)
            k_nope, v = kv.transpose(1, 2).split(self.head_dim, dim=-1)  # (B, n_kv, S, hs) each
            k_rope = apply_rotary(k_rope[:, None], *rope_k)  # (B, 1, S, dr)
            k_rope = k_rope.expand(B, self.n_kv_heads, S, self.rope_dim)  # (B, n_kv, S, dr)
            k = torch.cat([k_nope, k_rope], dim=-1)  # (B, n_kv, S, hs + dr)
            return k, v
        kv = self.kv_proj(x).view(B, T, 2, self.n_kv_heads, self.head_dim)
        k, v = kv.unbind(dim=2)  # (B, T, n_kv, hs) each, keys stored before rotation
        if cache is not None:
            k, v = cache.append(self.kv_slot, k, v)  # (B, S, n_kv, hs) each
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, n_kv, S, hs)
        return apply_rotary(k, *rope_k), v

    def queries(self, x: torch.Tensor, rope_q: tuple[torch.Tensor, torch.Tensor]
                ) -> torch.Tensor:
        """Project x (B, T, d_model) to rotated queries (B, nh, T, hs + dr)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim + self.rope_dim)
        q = q.transpose(1, 2)  # (B, nh, T, hs + dr)
        if self.latent:
            q_nope, q_rope = q.split([self.head_dim, self.rope_dim], dim=-1)
            return torch.cat([q_nope, apply_rotary(q_rope, *rope_q)], dim=-1)
        return apply_rotary(q, *rope_q)

    def forward(
        self,
        x: torch.Tensor,
        rope_q: tuple[torch.Tensor, torch.Tensor],
        rope_k: tuple[torch.Tensor, torch.Tensor],
        kv: KV | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KV]:
        """Attend causally; producers compute K/V, consumers use the `kv` passed in."""
        B, T, _ = x.shape
        if self.produces_kv:
            kv = self.compute_kv(x, rope_k, cache)
        elif kv is None:
            raise ValueError("a KV-sharing layer needs the K/V of the layer that produces them")
        k, v = kv
        q = self.queries(x, rope_q)  # (B, nh, T, hs + dr)
        # without a mask the plain causal one applies (it aligns queries to the first slot, which
        # is right when nothing is cached); `mask` aligns the new queries after cached slots
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and T > 1,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, nh * hs)
        return self.resid_dropout(self.out_proj(y)), kv


class MLP(nn.Module):
    """Position-wise feed-forward: SwiGLU or GELU."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.hidden_dim
        self.swiglu = config.mlp == "swiglu"
        if self.swiglu:
            self.gate_proj = nn.Linear(config.d_model, hidden, bias=config.bias)
        self.up_proj = nn.Linear(config.d_model, hidden, bias=config.bias)
        self.down_proj = nn.Linear(hidden, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the feed-forward to (B, T, d_model)."""
        if self.swiglu:
            h = F.silu(self.gate_proj(x)) * self.up_proj(x)
        else:
            h = F.gelu(self.up_proj(x))
        return self.dropout(self.down_proj(h))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp_norm = RMSNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        rope_q: tuple[torch.Tensor, torch.Tensor],
        rope_k: tuple[torch.Tensor, torch.Tensor],
        kv: KV | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KV]:
        """Return the new residual stream and the K/V the next layers of the group reuse."""
        a, kv = self.attn(self.attn_norm(x), rope_q, rope_k, kv, cache, mask)
        x = x + a
        x = x + self.mlp(self.mlp_norm(x))
        return x, kv


def response_targets_mask(
    prompt_lengths: torch.Tensor, lengths: torch.Tensor, width: int
) -> torch.Tensor:
    """(B, width - 1) mask of the next-token targets ids[:, 1:] that are response tokens, for
    right-padded rows of `width` tokens: a prompt of prompt_lengths, then up to lengths."""
    target = torch.arange(1, width, device=lengths.device)  # position in ids of each target
    return (target >= prompt_lengths[:, None]) & (target < lengths[:, None])


class GPT(nn.Module):
    """Decoder-only transformer over bytes, configured entirely by a GPTConfig."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.rotary = Rotary(config.kv_rope_dim or config.head_dim, config.rope_base)
        # a plain ModuleList so each block can be wrapped (FSDP2, checkpointing) from outside
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # residual projections scaled down so the stream's variance does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith(("out_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: normal(0, 0.02) weights, zero biases."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non_embedding drops the input embedding unless it is the tied head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and not self.config.tie_embeddings:
            n -= self.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token: 6N + 12 * L * d * T, with d = n_heads * head_dim."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_heads * c.head_dim * seq_len

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV-cache bytes per token of one sequence; see GPTConfig.kv_bytes_per_token."""
        return self.config.kv_bytes_per_token(dtype_bytes)

    def new_cache(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """Empty KV cache for this model, on the model's device and dtype unless given."""
        p = self.wte.weight
        return KVCache(self.config, batch_size, device or p.device, dtype or p.dtype)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) for every position, and mean cross-entropy over the targets
        that are not -1 if targets are given.

        positions: (T,) or (B, T) RoPE position ids; default 0, 1, ... counted over real tokens,
        after the largest cached position when there is a cache. attention_mask: (B, T), true
        for real tokens and false for padding, which no token attends to (left-padded prompts).
        Right padding needs no mask: causal attention never looks ahead. With a cache the new
        tokens attend to every cached real slot plus the new tokens before them, and their K/V
        are appended to the cache.
        """
        rope_q, rope_k, mask = self._inputs(idx, positions, cache, attention_mask)
        x = self.drop(self.wte(idx))  # (B, T, d_model)
        kv = None
        for block in self.blocks:
            x, kv = block(x, rope_q, rope_k, kv, cache, mask)
        logits = self.lm_head(self.norm_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss

    @torch.no_grad()
    def stream_after(self, idx: torch.Tensor, layer: int) -> torch.Tensor:
        """The residual stream after block `layer`, (B, T, d_model), of idx (B, T), without
        running the blocks above it (nor any residual hook on them)."""
        rope_q, rope_k, mask = self._inputs(idx, None, None, None)
        x = self.drop(self.wte(idx))
        kv = None
        for block in self.blocks[: layer + 1]:
            x, kv = block(x, rope_q, rope_k, kv, None, mask)
        return x

    def _inputs(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor | None,
        cache: KVCache | None,
        attention_mask: torch.Tensor | None,
    ) -> tuple:
        """The rotations of the queries and keys and the attention mask of a forward (see
        `forward`); with a cache, the new tokens' positions are appended to it."""
        B, T = idx.shape
        past = len(cache) if cache is not None else 0
        if past + T > self.config.block_size:
            raise ValueError(
                f"{past} cached + {T} new tokens exceed block_size {self.config.block_size}"
            )
        if attention_mask is not None:
            attention_mask = attention_mask.to(device=idx.device, dtype=torch.bool)
        if positions is None:
            start = cache.next_positions(1) if cache is not None else 0  # (B, 1) or 0
            if attention_mask is None:
                positions = start + torch.arange(T, device=idx.device)
            else:  # padding takes no position: each row's first real token gets `start`
                positions = start + (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        positions = positions.to(idx.device).expand(B, T)  # (B, T)
        if cache is not None:
            key_positions = cache.append_positions(positions, attention_mask)  # (B, S)
            key_valid = cache.valid if cache.has_padding else None  # (B, S)
        else:
            key_positions, key_valid = positions, attention_mask
        rope_q = self.rotary(positions)
        rope_k = self.rotary(key_positions)  # (B, 1, S, rope/2) each
        return rope_q, rope_k, self._attention_mask(T, past, key_valid, idx.device)

    @staticmethod
    def _attention_mask(
        T: int, past: int, key_valid: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor | None:
        """Boolean mask (B or 1, 1, T, past + T) of what the new queries may attend to, or None
        when the plain causal mask (no cache) or no mask at all (one new token) will do."""
        if key_valid is None and (past == 0 or T == 1):
            return None
        S = past + T
        # query i sits at slot past + i and sees every slot up to it
        mask = torch.ones(T, S, dtype=torch.bool, device=device).tril(past)  # (T, S)
        if key_valid is None:
            return mask
        # a padding query sees at least itself, so its softmax has something to normalise
        itself = torch.arange(S, device=device) == past + torch.arange(T, device=device)[:, None]
        return (mask & key_valid[:, None, None, :]) | itself  # (B, 1, T, S)

    @contextmanager
    def residual_hook(
        self, layer: int, fn: Callable[[torch.Tensor], torch.Tensor | None]
    ) -> Iterator[None]:
        """Within the block, call fn on the residual stream after `layer`; a tensor it returns
        replaces the stream, None leaves it unchanged."""

        def hook(module: nn.Module, args: tuple, output: tuple) -> tuple | None:
            h, kv = output
            new = fn(h)
            return None if new is None else (new, kv)

        handle = self.blocks[layer].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @torch.no_grad()
    def attention_weights(self, idx: torch.Tensor) -> torch.Tensor:
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

        handles = [block.attn.register_forward_hook(record) for block in self.blocks]
        try:
            self(idx)
        finally:
            for handle in handles:
                handle.remove()
        return torch.stack(maps)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
        stop_token: int | None = None,
        return_logits: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Extend idx (B, T) by sampling max_new_tokens with the KV cache; temperature 0 is
        greedy. Prompts of different lengths come left-padded, with attention_mask (B, T) false
        on the padding. Prompt plus new tokens must fit in block_size. With `stop_token` it stops
        early once every row has produced it (rows keep whatever follows it until then). With
        `return_logits` it also returns the logits each new token was drawn from (B, n, vocab)."""
        cache = self.new_cache(idx.shape[0], device=idx.device)
        logits, _ = self(idx, cache=cache, attention_mask=attention_mask)  # prefill
        drawn_from = []
        ended = torch.zeros(idx.shape[0], 1, dtype=torch.bool, device=idx.device)
        for i in range(max_new_tokens):
            logits = logits[:, -1, :]  # (B, vocab)
            drawn_from.append(logits)
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                probs = F.softmax(logits, dim=-1)
                next_id = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, next_id], dim=1)
            if stop_token is not None:
                ended |= next_id == stop_token
                if bool(ended.all()):
                    break
            if i < max_new_tokens - 1:
                logits, _ = self(next_id, cache=cache)
        if return_logits:
            return idx, torch.stack(drawn_from, dim=1)
        return idx

    def sequence_logprobs(
        self, ids: torch.Tensor, prompt_lengths: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Summed log p(response | prompt) per row, differentiable, shape (B,).

        ids (B, T): each row a prompt followed by its response, right-padded; prompt_lengths
        (B,) and lengths (B,) count each row's prompt tokens and all its real tokens. Padding
        sits after every real token, so causal attention keeps it out of the result."""
        if bool((prompt_lengths < 1).any()) or bool((lengths > ids.shape[1]).any()):
            raise ValueError("each row needs a prompt token, and lengths must fit in the rows")
        logits, _ = self(ids[:, :-1])  # (B, T-1, vocab): position t predicts token t + 1
        logp = F.log_softmax(logits.float(), dim=-1)
        picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
        response = response_targets_mask(prompt_lengths, lengths, ids.shape[1])  # (B, T-1)
        return (picked * response).sum(dim=-1)


@torch.no_grad()
def share_initial_weights(models: list[nn.Module]) -> None:
    """Common random numbers for designs compared on one seed: each model takes, for every
    parameter whose name and shape an earlier model has, that model's initial values.

    Models are visited in order, so the first to own a (name, shape) sets it for all later ones
    (the MHA embeddings, MLPs and norms for every design; MQA's K/V for the CLA layers that
    still compute K/V).
    """
    first: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
    for model in models:
        for name, p in model.named_parameters():
            key = (name, tuple(p.shape))
            if key in first:
                p.copy_(first[key])
            else:
                first[key] = p.detach().clone()
