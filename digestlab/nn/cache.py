"""KV cache for incremental decoding, and the place its eviction policies live.

Keys are stored before RoPE, next to the position id of each slot; the model rotates them at
the slots' current positions when it attends. So a policy may drop slots and re-assign the
positions of the rest (StreamingLLM, SirLLM) without recomputing anything.
"""

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from digestlab.nn.model import GPTConfig


class KVCache:
    """Per KV-producing layer, the cached K/V (or MLA latent + RoPE key) of a batch of sequences.

    Entry i belongs to layers i*kv_share .. (i+1)*kv_share - 1 and holds two tensors with the
    slot axis at dim 1: standard attention k, v (B, S, n_kv, hs), k before RoPE; latent KV
    c_kv (B, S, kv_latent_dim) and k_rope (B, S, kv_rope_dim), k_rope before RoPE.
    `positions` (B, S) is the RoPE position id of every slot.
    """

    def __init__(
        self,
        config: "GPTConfig",
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.config = config
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype or torch.get_default_dtype()
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * config.n_kv_layers
        self.positions = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)

    def __len__(self) -> int:
        """Number of cached slots per sequence."""
        return self.positions.shape[1]

    def next_positions(self, num_tokens: int) -> torch.Tensor:
        """Default positions (B, num_tokens) for new tokens: after each row's largest position."""
        start = self.positions.max(dim=1, keepdim=True).values + 1 if len(self) else 0
        return start + torch.arange(num_tokens, device=self.device)  # (B, T)

    def append_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Add the position ids (B, T) of new tokens; return those of all slots (B, S).

        The model calls this once per forward, before its layers append their K/V."""
        positions = positions.to(device=self.device, dtype=torch.long)
        positions = positions.expand(self.batch_size, positions.shape[-1])  # (B, T)
        self.positions = torch.cat([self.positions, positions], dim=1)  # (B, S)
        return self.positions

    def append(
        self, layer: int, first: torch.Tensor, second: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new (k, v) or (c_kv, k_rope), slot axis 1, for KV layer `layer`; return all."""
        first, second = first.to(self.dtype), second.to(self.dtype)
        if self.layers[layer] is not None:
            old_first, old_second = self.layers[layer]
            first = torch.cat([old_first, first], dim=1)  # (B, S, ...)
            second = torch.cat([old_second, second], dim=1)  # (B, S, ...)
        if first.shape[1] != len(self):
            raise RuntimeError(
                f"KV layer {layer} would hold {first.shape[1]} slots but {len(self)} positions "
                "are recorded; call append_positions once per forward first"
            )
        self.layers[layer] = (first, second)
        return first, second

    def keep(self, indices: torch.Tensor, positions: torch.Tensor | None = None) -> None:
        """Keep only the slots `indices` ((K,) or (B, K), in the order given) and drop the rest;
        optionally re-assign the kept slots' position ids to `positions` ((K,) or (B, K))."""
        indices = indices.to(device=self.device, dtype=torch.long)
        indices = indices.expand(self.batch_size, indices.shape[-1])  # (B, K)
        B, K = indices.shape
        for i, entry in enumerate(self.layers):
            if entry is None:
                continue
            kept = []
            for t in entry:
                index = indices.view(B, K, *[1] * (t.dim() - 2)).expand(B, K, *t.shape[2:])
                kept.append(t.gather(1, index))  # (B, K, ...)
            self.layers[i] = (kept[0], kept[1])
        if positions is None:
            self.positions = self.positions.gather(1, indices)  # (B, K)
        else:
            positions = positions.to(device=self.device, dtype=torch.long)
            self.positions = positions.expand(B, K).clone()  # (B, K)

    def bytes_per_token(self) -> int:
        """Cache bytes one token of one sequence costs at this cache's dtype."""
        dtype_bytes = torch.empty((), dtype=self.dtype).element_size()
        return self.config.kv_bytes_per_token(dtype_bytes)

    def nbytes(self) -> int:
        """Bytes held by the cached K/V (or latent) tensors; position ids are not counted."""
        return sum(t.numel() * t.element_size() for entry in self.layers if entry for t in entry)
