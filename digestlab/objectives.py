"""What the one training loop minimises: the objectives experiments share.

- `language_model`: next-token prediction on random windows of a token stream (pretraining);
  `weighted_next_token_loss` weighs each target (a chat model fine-tuned mostly on its replies).
- `supervised`: next-token prediction on prompt/response pairs, the loss on response tokens
  only (supervised fine-tuning).
- `dpo`: the DPO preference loss of a policy against a frozen reference model, whose share of
  each pair's margin is computed once; `spo` is DPO with SPO's per-pair term, and
  `lagrangian_dpo` a Safe-RLHF-style constrained one.
Each returns a `train.Objective`; a new kind of model (a sparse autoencoder, say) builds its own
Objective beside its module and trains with the same loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from digestlab.data import get_batch, validation_windows
from digestlab.nn import GPT
from digestlab.nn.rows import pad_rows
from digestlab.train import Batch, Objective

PAD = 0  # token id written after each row's real tokens; it is never attended to or scored


def next_token_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the model's next-token predictions over targets that are not -1."""
    x, y = batch
    _, loss = model(x, y)
    return loss


def weighted_next_token_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Cross-entropy of the next-token predictions, each target weighted: batch is (x, y, w)
    with w of y's shape; the loss is sum(w * ce) / sum(w)."""
    x, y, w = batch
    logits, _ = model(x)
    ce = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none")
    return (ce * w.flatten()).sum() / w.sum()


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
    ids, lengths = pad_rows([[*p, *r] for p, r in zip(prompts, responses, strict=True)], pad)
    return ids, torch.tensor([len(p) for p in prompts], dtype=torch.long), lengths


def response_targets_mask(
    prompt_lengths: torch.Tensor, lengths: torch.Tensor, width: int
) -> torch.Tensor:
    """(B, width - 1) mask of the next-token targets ids[:, 1:] that are response tokens, for
    right-padded rows of `width` tokens: a prompt of prompt_lengths, then up to lengths."""
    target = torch.arange(1, width, device=lengths.device)  # position in ids of each target
    return (target >= prompt_lengths[:, None]) & (target < lengths[:, None])


def sequence_logprobs(
    model: nn.Module, ids: torch.Tensor, prompt_lengths: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Summed log p(response | prompt) per row, differentiable, shape (B,).

    ids (B, T): each row a prompt followed by its response, right-padded (`pack_rows`);
    prompt_lengths (B,) and lengths (B,) count each row's prompt tokens and all its real
    tokens. Padding sits after every real token, so causal attention keeps it out."""
    if bool((prompt_lengths < 1).any()) or bool((lengths > ids.shape[1]).any()):
        raise ValueError("each row needs a prompt token, and lengths must fit in the rows")
    logits, _ = model(ids[:, :-1])  # (B, T-1, vocab): position t predicts token t + 1
    logp = F.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    response = response_targets_mask(prompt_lengths, lengths, ids.shape[1])  # (B, T-1)
    return (picked * response).sum(dim=-1)


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


def dpo_loss(policy: nn.Module, batch: Batch, beta: float) -> torch.Tensor:
    """Mean DPO loss of a `pair_batch`, -log sigmoid(beta * (pi_w - pi_l) - shift): pi_w and
    pi_l the summed response log-probabilities of each pair's chosen and rejected rows, read in
    one forward pass, and shift the pair's constant (see `dpo`)."""
    ids, prompt_lengths, lengths, shift = batch
    chosen, rejected = sequence_logprobs(policy, ids, prompt_lengths, lengths).split(len(shift))
    return -F.logsigmoid(beta * (chosen - rejected) - shift).mean()


Pair = tuple[Sequence[int], Sequence[int], Sequence[int]]  # (prompt, chosen, rejected) tokens


def _pack_pairs(pairs: Sequence[Pair]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # the chosen rows, then the rejected rows, in one right-padded block
    prompts = [p for p, _, _ in pairs]
    return pack_rows(prompts * 2, [w for _, w, _ in pairs] + [r for _, _, r in pairs])


def pair_batch(pairs: Sequence[Pair], picks: Sequence[int], shifts: torch.Tensor) -> Batch:
    """The picked pairs as one batch: (ids (2B, T), prompt_lengths (2B,), lengths (2B,)) with
    the chosen rows first and the rejected rows after them, then each pair's shift (B,)."""
    return (*_pack_pairs([pairs[i] for i in picks]), shifts[list(picks)])


@torch.no_grad()
def reference_margins(reference: GPT, pairs: Sequence[Pair], batch_size: int = 512
                      ) -> torch.Tensor:
    """log reference(y_w|x) - log reference(y_l|x) of every pair, (N,) on the CPU. The reference
    is frozen, so its part of each pair's DPO margin is a constant: computed once for a set of
    pairs, not at every step (TRL's precompute_ref_log_probs)."""
    reference.eval()
    device = reference.wte.weight.device
    out = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        rows = [t.to(device) for t in _pack_pairs(chunk)]
        chosen, rejected = sequence_logprobs(reference, *rows).split(len(chunk))
        out.append(chosen - rejected)
    return torch.cat(out).float().cpu()


def dpo(
    policy: GPT,
    reference: GPT,
    pairs: Sequence[Pair],
    batch_size: int,
    beta: float = 0.1,
    offsets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> Objective:
    """DPO (Rafailov et al. 2023) on (prompt, chosen, rejected) token lists against a frozen
    reference:

        L = -log sigmoid( beta * [log pi(y_w|x)/ref(y_w|x) - log pi(y_l|x)/ref(y_l|x)] - o )

    with o = 0, or each pair's entry of `offsets` (SPO's term, see `spo`). Everything but the
    policy's two log-probabilities is a constant of the pair, its shift beta * [log ref(y_w|x)
    - log ref(y_l|x)] + o, computed here once (`reference_margins`). Pairs are drawn with
    replacement, uniformly or in proportion to `weights`. The loss calls sequence_logprobs,
    not forward, so TrainConfig.compile does not reach it."""
    if not pairs:
        raise ValueError("DPO needs at least one preference pair")
    for name, per_pair in (("offsets", offsets), ("weights", weights)):
        if per_pair is not None and len(per_pair) != len(pairs):
            raise ValueError(f"{len(per_pair)} {name} for {len(pairs)} pairs")
    shifts = beta * reference_margins(reference, pairs)
    if offsets is not None:
        shifts = shifts + offsets.float()
    return Objective(
        next_batch=_pair_sampler(pairs, shifts, batch_size, weights),
        loss=lambda model, batch: dpo_loss(model, batch, beta),
        items_per_batch=batch_size,
        flops_per_item=_preference_flops(policy, pairs),
        unit="pair",
    )


def _pair_sampler(pairs: Sequence[Pair], shifts: torch.Tensor, batch_size: int,
                  weights: torch.Tensor | None = None) -> Callable[[torch.Generator], Batch]:
    # batches of pairs drawn with replacement, uniformly or in proportion to `weights`
    def next_batch(generator: torch.Generator) -> Batch:
        if weights is None:
            picks = torch.randint(len(pairs), (batch_size,), generator=generator)
        else:
            picks = torch.multinomial(weights.double(), batch_size, replacement=True,
                                      generator=generator)
        return pair_batch(pairs, picks.tolist(), shifts)

    return next_batch


def _preference_flops(policy: GPT, pairs: Sequence[Pair]) -> float:
    # per pair: forward and backward through the policy (6N a token) over both rows; the
    # reference's forward is paid once per pair set, not per step
    mean_length = sum(2 * len(p) + len(w) + len(r) for p, w, r in pairs) / len(pairs)
    return 6 * policy.num_params() * mean_length


@torch.no_grad()
def implicit_rewards(policy: GPT, reference: GPT, prompts: Sequence[Sequence[int]],
                     responses: Sequence[Sequence[int]], beta: float, batch_size: int = 512
                     ) -> torch.Tensor:
    """DPO's implicit reward of each response, beta * log(policy(y|x) / reference(y|x)), (N,)."""
    out = []
    for i in range(0, len(prompts), batch_size):
        rows = pack_rows(prompts[i : i + batch_size], responses[i : i + batch_size])
        rows = tuple(t.to(policy.wte.weight.device) for t in rows)
        out.append(beta * (sequence_logprobs(policy, *rows)
                           - sequence_logprobs(reference.to(rows[0].device), *rows)))
    return torch.cat(out).float().cpu()


def spo(
    policy: GPT,
    previous: GPT,
    pairs: Sequence[Pair],
    previous_margins: torch.Tensor,
    alpha: float,
    batch_size: int,
    beta: float = 0.1,
) -> Objective:
    """SPO's loss (Lou et al. 2024) for round n on the pairs of dimension n:

        L = -log sigmoid( beta_n * [log pi(y_w|x)/pi_{n-1}(y_w|x) - log pi(y_l|x)/pi_{n-1}(y_l|x)]
                          - alpha * [r_{n-1}(x, y_w) - r_{n-1}(x, y_l)] )
        r_{n-1}(x, y) = beta_{n-1} log pi_{n-1}(y|x)/pi_{n-2}(y|x)

    derived here from the problem the paper's abstract and introduction state (the paper's own
    numbered equation could not be read from any stored copy; its text should be checked against
    this): round n maximises the new dimension's reward R_n plus alpha times the previous one's,
    with a KL penalty beta_n towards the previous round's policy pi_{n-1}. The optimum is
    pi_n ~ pi_{n-1} exp((R_n + alpha R_{n-1}) / beta_n), so R_n = beta_n log pi_n/pi_{n-1}
    - alpha R_{n-1} + (a term of x alone), and Bradley-Terry on dimension n's pairs gives L.
    R_{n-1} is not a reward model: it is the previous round's implicit reward r_{n-1}, with the
    previous round's own beta_{n-1} (`implicit_rewards`), and `previous_margins` holds its
    chosen-minus-rejected difference for each pair; `beta` here is beta_n. Where the chosen
    reply was worse on the earlier dimension (a negative margin), the pair pushes less; where it
    was better, it pushes more. alpha = 0 is DPO against pi_{n-1}, which is sequential DPO."""
    return dpo(policy, previous, pairs, batch_size, beta, offsets=alpha * previous_margins)


def lagrangian_dpo(
    policy: GPT,
    reference: GPT,
    pairs: Sequence[Pair],
    constraint_reference: GPT,
    constraint_pairs: Sequence[Pair],
    threshold: float,
    batch_size: int,
    beta: float = 0.1,
    multiplier_lr: float = 0.5,
    history: list[float] | None = None,
) -> Objective:
    """Safe RLHF's Lagrangian (Dai et al. 2023) in DPO form: minimise the DPO loss on `pairs`
    (the new dimension, against `reference`) subject to the DPO loss on `constraint_pairs` (the
    earlier dimension, against `constraint_reference`) staying at most `threshold`:

        L = (L_new + lam * L_old) / (1 + lam)
        lam <- max(0, lam + multiplier_lr * (L_old - threshold))

    lam rises by projected dual ascent while the constraint is broken and falls back once it
    holds; it is updated after every training step's loss, from that step's batch, and each
    value is appended to `history` when one is given. Safe RLHF itself trains reward and cost
    models and optimises with PPO; here both dimensions enter through DPO losses, so the
    difference from SPO is the adaptive multiplier and the constraint, not the reward model."""
    if not pairs or not constraint_pairs:
        raise ValueError("the Lagrangian needs pairs on both dimensions")
    new = _pair_sampler(pairs, beta * reference_margins(reference, pairs), batch_size)
    old = _pair_sampler(constraint_pairs,
                        beta * reference_margins(constraint_reference, constraint_pairs),
                        batch_size)
    multiplier = [0.0]

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        loss_new, loss_old = dpo_loss(model, batch[:4], beta), dpo_loss(model, batch[4:], beta)
        lam = multiplier[0]
        if model.training:
            multiplier[0] = max(0.0, lam + multiplier_lr * (loss_old.item() - threshold))
            if history is not None:
                history.append(multiplier[0])
        return (loss_new + lam * loss_old) / (1.0 + lam)

    return Objective(
        next_batch=lambda generator: (*new(generator), *old(generator)),
        loss=loss,
        items_per_batch=batch_size,
        flops_per_item=_preference_flops(policy, pairs) + _preference_flops(policy,
                                                                            constraint_pairs),
        unit="pair",
    )
