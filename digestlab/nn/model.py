"""The one decoder-only transformer every experiment uses.

Reads top to bottom like nanoGPT's model.py: block, then model. Its layers are in layers.py
(norm, rotary, MLP) and attention.py (MHA/GQA/MQA, cross-layer sharing, latent KV, chosen by
config); its config, GPTConfig, lives in digestlab/configs.py, which the workflow imports
without torch. What reads a model rather than runs it is in inspect.py (hooks on the residual
stream, attention maps) and readout.py (batches of rows).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from digestlab.configs import GPTConfig
from digestlab.nn.attention import KV, Rope, attention
from digestlab.nn.cache import KVCache
from digestlab.nn.layers import MLP, RMSNorm, Rotary


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model)
        self.attn = attention(config, layer_idx)
        self.mlp_norm = RMSNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        rope_q: Rope,
        rope_k: Rope,
        kv: KV | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KV]:
        """Return the new residual stream and the K/V the next layers of the group reuse."""
        a, kv = self.attn(self.attn_norm(x), rope_q, rope_k, kv, cache, mask)
        x = x + a
        x = x + self.mlp(self.mlp_norm(x))
        return x, kv


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
        rope_q, rope_k, mask = self.prepare(idx, positions, cache, attention_mask)
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

    def prepare(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[Rope, Rope, torch.Tensor | None]:
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
