"""What the one training loop minimises: the objectives experiments share.

- `language_model`: next-token prediction on random windows of a token stream (pretraining).
- `supervised`: next-token prediction on prompt/response pairs, the loss on response tokens
  only (supervised fine-tuning).
- `dpo`: the DPO preference loss of a policy against a frozen reference model.
Each returns a `train.Objective`; a new kind of model (a sparse autoencoder, say) builds its own
Objective beside its module and trains with the same loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from digestlab.data import get_batch, validation_windows
from digestlab.nn import GPT
from digestlab.nn.model import response_targets_mask
from digestlab.train import Batch, Objective

PAD = 0  # token id written after each row's real tokens; it is never attended to or scored


def next_token_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the model's next-token predictions over targets that are not -1."""
    x, y = batch
    _, loss = model(x, y)
    return loss


def language_model(
    model: GPT,
    train_tokens: torch.Tensor,
    batch_size: int,
    seq_len: int,
    val_tokens: torch.Tensor | None = None,
    eval_batches: int = 8,
) -> Objective:
    """Next-token prediction on random windows of `train_tokens`; validation on
    `eval_batches` fixed batches of windows spread evenly over `val_tokens`."""
    val: list[Batch] = []
    if val_tokens is not None:
        x, y = validation_windows(val_tokens, batch_size * eval_batches, seq_len)
        val = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return Objective(
        next_batch=lambda generator: get_batch(train_tokens, batch_size, seq_len, generator),
        loss=next_token_loss,
        items_per_batch=batch_size * seq_len,
        flops_per_item=model.flops_per_token(seq_len),
        unit="tok",
        val_batches=val,
    )


def pack_rows(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad: int = PAD
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt + response per row, right-padded: (ids (B, T), prompt_lengths (B,), lengths (B,))."""
    rows = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], dtype=torch.long)
    prompt_lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    return ids, prompt_lengths, lengths


def response_targets(ids: torch.Tensor, prompt_lengths: torch.Tensor, lengths: torch.Tensor
                     ) -> Batch:
    """(x, y) for next-token training on the responses alone: y is -1 (not scored) where the
    next token belongs to the prompt or is padding."""
    x, y = ids[:, :-1], ids[:, 1:].clone()
    y[~response_targets_mask(prompt_lengths, lengths, ids.shape[1])] = -1
    return x, y


def supervised(
    model: GPT,
    examples: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int,
    val_examples: Sequence[tuple[Sequence[int], Sequence[int]]] = (),
) -> Objective:
    """Supervised fine-tuning on (prompt, response) token lists, drawn with replacement."""

    def batch_of(rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> Batch:
        ids, prompt_lengths, lengths = pack_rows([p for p, _ in rows], [r for _, r in rows])
        return response_targets(ids, prompt_lengths, lengths)

    def next_batch(generator: torch.Generator) -> Batch:
        picks = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        return batch_of([examples[i] for i in picks])

    mean_length = sum(len(p) + len(r) for p, r in examples) / len(examples)
    val = [batch_of(val_examples[i : i + batch_size])
           for i in range(0, len(val_examples), batch_size)]
    return Objective(
        next_batch=next_batch,
        loss=next_token_loss,
        items_per_batch=round(batch_size * mean_length),
        flops_per_item=model.flops_per_token(round(mean_length)),
        unit="tok",
        val_batches=val,
    )


def dpo_loss(policy: nn.Module, reference: GPT, batch: Batch, beta: float) -> torch.Tensor:
    """Mean DPO loss, -log sigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l))), where pi and ref
    are the summed response log-probabilities of the chosen (w) and rejected (l) rows."""
    chosen, rejected = batch[:3], batch[3:]
    if reference.wte.weight.device != batch[0].device:  # the loop moves only the policy
        reference.to(batch[0].device)
    with torch.no_grad():
        ref_margin = reference.sequence_logprobs(*chosen) - reference.sequence_logprobs(*rejected)
    margin = policy.sequence_logprobs(*chosen) - policy.sequence_logprobs(*rejected)
    return -F.logsigmoid(beta * (margin - ref_margin)).mean()


def dpo(
    policy: GPT,
    reference: GPT,
    pairs: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]],
    batch_size: int,
    beta: float = 0.1,
) -> Objective:
    """DPO on (prompt, chosen, rejected) token lists, drawn with replacement; the reference is
    frozen (put in eval mode, no gradients) and follows the batches to their device. A batch is
    the chosen rows' (ids, prompt_lengths, lengths) then the rejected rows', so splitting its rows
    across ranks keeps pairs together. The loss calls sequence_logprobs, not forward, so
    TrainConfig.compile does not reach it."""
    reference.eval().requires_grad_(False)

    def next_batch(generator: torch.Generator) -> Batch:
        picks = [pairs[i] for i in torch.randint(len(pairs), (batch_size,), generator=generator)]
        prompts = [p for p, _, _ in picks]
        return (*pack_rows(prompts, [w for _, w, _ in picks]),
                *pack_rows(prompts, [r for _, _, r in picks]))

    mean_length = sum(2 * len(p) + len(w) + len(r) for p, w, r in pairs) / len(pairs)
    n = policy.num_params()
    return Objective(
        next_batch=next_batch,
        loss=lambda model, batch: dpo_loss(model, reference, batch, beta),
        items_per_batch=batch_size,
        # per pair: forward and backward through the policy (6N a token), forward through the
        # reference (2N a token), over both rows
        flops_per_item=8 * n * mean_length,
        unit="pair",
    )
