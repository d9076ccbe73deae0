"""Token rows of different lengths as one tensor."""

from collections.abc import Sequence

import torch


def pad_rows(rows: Sequence[Sequence[int]], pad: int, left: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N, T) padded with `pad` to the longest row, after each row's tokens or, with
    `left`, before them; lengths (N,)). Right padding needs no mask, as causal attention never
    looks ahead; left padding (prompts decoded together) needs `left_mask`."""
    width = max(len(r) for r in rows)
    fill = [[pad] * (width - len(r)) for r in rows]
    ids = [[*f, *r] if left else [*r, *f] for r, f in zip(rows, fill, strict=True)]
    return torch.tensor(ids, dtype=torch.long), torch.tensor([len(r) for r in rows])


def left_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(N, width) attention mask of left-padded rows: true on each row's real tokens."""
    return torch.arange(width) >= width - lengths[:, None]
