"""KV cache for incremental decoding, its eviction policies, and a reader that streams text
through a model under them.

Keys are stored before RoPE, next to the position id of each slot; the model rotates them at
the slots' current positions when it attends. So a policy may drop slots and re-assign the
positions of the rest (StreamingLLM, SirLLM) without recomputing anything. Each slot also
holds a score a policy may rank by (SirLLM's token entropy), kept aligned through evictions.
`Streamer` reads a stream turn by turn through one cache whose rows each keep to a `Policy`.

Storage is preallocated and grows geometrically: appending a token writes into a buffer
instead of concatenating, so streaming n tokens copies O(n) bytes in all, not O(n^2). Writing in
place is why the cache is for inference only: cached forwards run under torch.no_grad().
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from digestlab.configs import GPTConfig

if TYPE_CHECKING:
    from collections.abc import Iterable

    from digestlab.nn.model import GPT

MIN_CAPACITY = 16  # slots allocated at the first append; capacity doubles from there


class KVCache:
    """Per KV-producing layer, the cached K/V (or MLA latent + RoPE key) of a batch of sequences.

    Entry i belongs to layers i*kv_share .. (i+1)*kv_share - 1 and holds two tensors with the
    slot axis at dim 1: standard attention k, v (B, S, n_kv, hs), k before RoPE; latent KV
    c_kv (B, S, kv_latent_dim) and k_rope (B, S, kv_rope_dim), k_rope before RoPE.
    `positions` (B, S) is the RoPE position id of every slot, `valid` (B, S) whether the slot
    holds a real token (False for the padding of left-padded prompts).
    """

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.config = config
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype or torch.get_default_dtype()
        # Buffers of `capacity` slots; the first `length` are in use. Layer buffers are made at
        # a layer's first append, when the shapes of its tensors are known.
        self._buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * config.n_kv_layers
        self._positions = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)
        self._valid = torch.ones(batch_size, 0, dtype=torch.bool, device=self.device)
        self._scores = torch.zeros(batch_size, 0, dtype=torch.float32, device=self.device)
        self.length = 0
        self._appending_from = 0  # first slot of the tokens of the forward in progress
        self.has_padding = False  # whether any slot in use is invalid

    def __len__(self) -> int:
        """Number of cached slots per sequence."""
        return self.length

    @property
    def capacity(self) -> int:
        """Slots allocated per sequence."""
        return self._positions.shape[1]

    @property
    def positions(self) -> torch.Tensor:
        """RoPE position ids of the slots in use, (B, S)."""
        return self._positions[:, : self.length]

    @property
    def valid(self) -> torch.Tensor:
        """Whether each slot in use holds a real token, (B, S)."""
        return self._valid[:, : self.length]

    @property
    def scores(self) -> torch.Tensor:
        """Each slot's score, (B, S) float32, 0 until set; a view that may be written."""
        return self._scores[:, : self.length]

    @property
    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Each KV layer's cached pair, (B, S, ...) views of the slots in use (None if empty)."""
        return [
            None if entry is None else (entry[0][:, : self.length], entry[1][:, : self.length])
            for entry in self._buffers
        ]

    def _reserve(self, slots: int) -> None:
        """Make room for `slots` slots, doubling the capacity as often as needed."""
        if slots <= self.capacity:
            return
        capacity = max(MIN_CAPACITY, self.capacity)
        while capacity < slots:
            capacity *= 2
        capacity = max(slots, min(capacity, self.config.block_size))  # never past the model's

        def grown(t: torch.Tensor, fill: int | bool = 0) -> torch.Tensor:
            new = torch.full((t.shape[0], capacity, *t.shape[2:]), fill, dtype=t.dtype,
                             device=t.device)
            new[:, : self.length] = t[:, : self.length]
            return new

        self._positions = grown(self._positions)
        self._valid = grown(self._valid, True)
        self._scores = grown(self._scores)
        self._buffers = [
            None if entry is None else (grown(entry[0]), grown(entry[1]))
            for entry in self._buffers
        ]

    def next_positions(self, num_tokens: int) -> torch.Tensor:
        """Default positions (B, num_tokens) for new tokens: after each row's largest position."""
        start = self.positions.max(dim=1, keepdim=True).values + 1 if len(self) else 0
        return start + torch.arange(num_tokens, device=self.device)  # (B, T)

    def append_positions(
        self, positions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Add the position ids (B, T) of new tokens, and which of them are real (default all);
        return the position ids of all slots (B, S).

        The model calls this once per forward, before its layers append their K/V."""
        positions = positions.to(device=self.device, dtype=torch.long)
        positions = positions.expand(self.batch_size, positions.shape[-1])  # (B, T)
        T = positions.shape[1]
        self._reserve(self.length + T)
        self._appending_from = self.length
        self._positions[:, self.length : self.length + T] = positions
        self._scores[:, self.length : self.length + T] = 0.0
        if valid is not None:
            valid = valid.to(device=self.device, dtype=torch.bool).expand(self.batch_size, T)
            self._valid[:, self.length : self.length + T] = valid
            self.has_padding = self.has_padding or not bool(valid.all())
        else:
            self._valid[:, self.length : self.length + T] = True
        self.length += T
        return self.positions

    def append(
        self, layer: int, first: torch.Tensor, second: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new (k, v) or (c_kv, k_rope), slot axis 1, for KV layer `layer`; return all."""
        start, T = self._appending_from, first.shape[1]
        if first.requires_grad or second.requires_grad:
            raise RuntimeError("the KV cache is for inference: run cached forwards under "
                               "torch.no_grad() (training needs no cache)")
        if start + T != self.length:
            raise RuntimeError(
                f"KV layer {layer} would hold {start + T} slots but {self.length} positions "
                "are recorded; call append_positions once per forward first"
            )
        if self._buffers[layer] is None:
            self._buffers[layer] = tuple(
                torch.zeros(self.batch_size, self.capacity, *t.shape[2:], dtype=self.dtype,
                            device=self.device)
                for t in (first, second)
            )
        buffers = self._buffers[layer]
        buffers[0][:, start : start + T] = first
        buffers[1][:, start : start + T] = second
        return buffers[0][:, : self.length], buffers[1][:, : self.length]  # (B, S, ...)

    def keep(self, indices: torch.Tensor, positions: torch.Tensor | None = None) -> None:
        """Keep only the slots `indices` ((K,) or (B, K), in the order given) and drop the rest;
        optionally re-assign the kept slots' position ids to `positions` ((K,) or (B, K))."""
        indices = indices.to(device=self.device, dtype=torch.long)
        indices = indices.expand(self.batch_size, indices.shape[-1])  # (B, K)
        B, K = indices.shape

        def gathered(t: torch.Tensor) -> torch.Tensor:
            index = indices.view(B, K, *[1] * (t.dim() - 2)).expand(B, K, *t.shape[2:])
            return t[:, : self.length].gather(1, index)  # (B, K, ...)

        for entry in self._buffers:
            if entry is not None:
                for t in entry:
                    t[:, :K] = gathered(t)
        kept_positions = gathered(self._positions) if positions is None else (
            positions.to(device=self.device, dtype=torch.long).expand(B, K))
        self._valid[:, :K] = gathered(self._valid)
        self._scores[:, :K] = gathered(self._scores)
        self._positions[:, :K] = kept_positions
        self.length = K
        self.has_padding = not bool(self.valid.all())

    def bytes_per_token(self) -> int:
        """Cache bytes one token of one sequence costs at this cache's dtype."""
        dtype_bytes = torch.empty((), dtype=self.dtype).element_size()
        return self.config.kv_bytes_per_token(dtype_bytes)

    def nbytes(self) -> int:
        """Bytes of cached K/V (or latent) in the slots in use; position ids are not counted."""
        return sum(t.numel() * t.element_size() for entry in self.layers if entry for t in entry)


# --- eviction policies -----------------------------------------------------------------------
# Each returns the slots to keep, (B, keep) in ascending order, for `evict` to hand to keep().
# `sinks` is the number of first slots always kept (StreamingLLM's attention sinks).


def recent_slots(cache: KVCache, keep: int, sinks: int = 0) -> torch.Tensor:
    """The first `sinks` slots and the latest keep - sinks: StreamingLLM, or with no sinks a
    plain window."""
    S = len(cache)
    if keep >= S:
        return torch.arange(S, device=cache.device).expand(cache.batch_size, S)
    sinks = min(sinks, keep)
    slots = torch.cat([torch.arange(sinks), torch.arange(S - (keep - sinks), S)])
    return slots.to(cache.device).expand(cache.batch_size, keep)


def top_score_slots(cache: KVCache, keep: int, sinks: int = 0,
                    scores: torch.Tensor | None = None) -> torch.Tensor:
    """The first `sinks` slots and the keep - sinks others of highest score, each row by its
    own scores (the cache's, or `scores` (B, S) given): SirLLM when the scores are token
    entropies. Ties go to the earlier slot."""
    S = len(cache)
    if keep >= S:
        return recent_slots(cache, keep, sinks)
    sinks = min(sinks, keep)
    scores = (cache.scores if scores is None else scores)[:, sinks:]  # (B, S - sinks)
    # a stable descending sort, so equal scores keep the earlier slot, on every backend
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    chosen = order[:, : keep - sinks].sort(dim=1).values + sinks  # (B, keep - sinks)
    first = torch.arange(sinks, device=cache.device).expand(cache.batch_size, sinks)
    return torch.cat([first, chosen], dim=1)


def random_slots(cache: KVCache, keep: int, sinks: int, generator: torch.Generator
                 ) -> torch.Tensor:
    """The first `sinks` slots and keep - sinks others drawn uniformly for each row: the
    control that keeps as many slots as the others, chosen by nothing."""
    S = len(cache)
    if keep >= S:
        return recent_slots(cache, keep, sinks)
    sinks = min(sinks, keep)
    draws = torch.rand(cache.batch_size, S - sinks, generator=generator)
    chosen = draws.argsort(dim=1)[:, : keep - sinks].sort(dim=1).values.to(cache.device)
    first = torch.arange(sinks, device=cache.device).expand(cache.batch_size, sinks)
    return torch.cat([first, chosen + sinks], dim=1)


def evict(cache: KVCache, slots: torch.Tensor) -> None:
    """Keep `slots` ((B, K), ascending) and number them 0..K-1, as StreamingLLM and SirLLM do:
    positions count places in the cache, not in the stream, so they never pass the longest
    context the model was trained on."""
    cache.keep(slots, positions=torch.arange(slots.shape[1], device=cache.device))


# --- streaming a text through a model under eviction policies --------------------------------


@dataclass(frozen=True)
class Policy:
    """How one row of a streaming batch cuts its cache down to its size.

    rule "recent": the first `sinks` slots and the latest (StreamingLLM; a plain window with no
    sinks). "top_score": the sinks and the slots of highest stored token entropy (SirLLM), each
    stored value multiplied by `decay` at every request (`Streamer.request`), scored as the paper
    defines it or, with `reference_scoring`, as the authors' code does. "random": the sinks and
    a uniform draw, the control. "protect": the sinks, the protected tokens (`Streamer.protect`)
    and the latest: an oracle that knows what will be asked."""

    name: str
    rule: str
    sinks: int = 0
    decay: float = 1.0
    reference_scoring: bool = False


class Streamer:
    """Rows of one batch read a stream turn by turn through one KV cache, each row under its own
    policy. Before a turn is read, every row's cache is cut down so that the turn fits in
    `cache_size` tokens (None: nothing is ever evicted) and its positions are renumbered (`evict`).
    `origin` holds the stream offset of each cached token."""

    def __init__(self, model: GPT, rows: list[Policy], cache_size: int | None,
                 generator: torch.Generator):
        self.model, self.rows, self.cache_size, self.generator = model, rows, cache_size, generator
        self.device = model.wte.weight.device
        self.cache: KVCache = model.new_cache(len(rows))
        self.decay = torch.tensor([[p.decay] for p in rows], device=self.device)  # (B, 1)
        self.reference = torch.tensor([[p.reference_scoring] for p in rows],
                                      device=self.device)  # (B, 1)
        self.origin = torch.zeros(len(rows), 0, dtype=torch.long, device=self.device)  # (B, S)
        self.protected = torch.zeros(0, dtype=torch.long, device=self.device)  # stream offsets
        self.read_tokens = 0
        self.last_logprobs: torch.Tensor | None = None  # (B, vocab) for the next token

    def request(self) -> None:
        """A new request begins: every stored score decays once, as SirLLM's authors apply the
        decay, before the request's turn is read and whether or not anything is evicted; the
        scores of the tokens read from here on come in undecayed."""
        self.cache.scores.mul_(self.decay)

    def protect(self, offsets: Iterable[int]) -> None:
        """Stream offsets that "protect" rows keep whatever else they evict."""
        more = torch.tensor(list(offsets), dtype=torch.long, device=self.device)
        self.protected = torch.cat([self.protected, more])

    def _slots(self, keep: int) -> torch.Tensor:
        """Each row's slots to keep, (B, keep), by its own policy."""
        chosen = {}
        for rule in {p.rule for p in self.rows} - {"recent"}:  # recent: per row, below
            sinks = max(p.sinks for p in self.rows if p.rule == rule)
            if rule == "top_score":
                chosen[rule] = top_score_slots(self.cache, keep, sinks)
            elif rule == "random":
                chosen[rule] = random_slots(self.cache, keep, sinks, self.generator)
            else:  # protect: the protected tokens first, then the latest
                recency = self.origin.float() / max(1, self.read_tokens)  # in [0, 1)
                kept = torch.isin(self.origin, self.protected).float()
                chosen[rule] = top_score_slots(self.cache, keep, sinks, kept + recency)
        return torch.stack([
            recent_slots(self.cache, keep, p.sinks)[i] if p.rule == "recent" else chosen[p.rule][i]
            for i, p in enumerate(self.rows)])

    @torch.no_grad()
    def read(self, tokens: torch.Tensor) -> torch.Tensor:
        """Cut the cache down so the turn fits in the cache, read the turn ((T,) for every row
        or (B, T)) and return its log-probabilities (B, T, vocab)."""
        B = len(self.rows)
        tokens = tokens.to(self.device).expand(B, tokens.shape[-1])  # (B, T)
        T = tokens.shape[1]
        if self.cache_size is not None and len(self.cache) + T > self.cache_size:
            slots = self._slots(self.cache_size - T)
            evict(self.cache, slots)
            self.origin = self.origin.gather(1, slots)
        logits, _ = self.model(tokens, cache=self.cache)
        logprobs = F.log_softmax(logits.float(), dim=-1)  # (B, T, vocab)
        self.cache.scores[:, -T:] = self._surprisal(tokens, logprobs)
        new = self.read_tokens + torch.arange(T, device=self.device).expand(B, T)
        self.origin = torch.cat([self.origin, new], dim=1)
        self.read_tokens += T
        self.last_logprobs = logprobs[:, -1]
        return logprobs

    def _surprisal(self, tokens: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
        """Token entropy of each new token, (B, T): -log p(x_i | x_<i) (the first token of a
        stream has no prediction and scores 0); reference rows get the authors' variant, which
        gives token i the surprisal of token i - 1 and a turn's first token the turn's
        largest."""
        first = (torch.zeros_like(logprobs[:, :1]) if self.last_logprobs is None
                 else self.last_logprobs[:, None])  # (B, 1, vocab)
        previous = torch.cat([first, logprobs[:, :-1]], dim=1)  # (B, T, vocab) predicting x_i
        paper = -previous.gather(-1, tokens[..., None]).squeeze(-1)  # (B, T)
        own = -logprobs.gather(-1, tokens[..., None]).squeeze(-1)  # (B, T), position i's id
        shifted = torch.cat([own.max(dim=1, keepdim=True).values, own[:, :-1]], dim=1)
        return torch.where(self.reference, shifted, paper)
