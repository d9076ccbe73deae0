"""Time a DPO training step as `digestlab.objectives.dpo` takes it against the textbook step,
on the spo experiment's policy at the chosen scale.

    python benchmarks/dpo.py                 # cpu scale, one thread (as each spo worker runs)
    python benchmarks/dpo.py --scale gpu --steps 50

The textbook step reads the frozen reference on the chosen and on the rejected rows and then the
policy on each, four forward passes a step. `dpo` computes the reference's margin of every pair
once, before training (TRL's `precompute_ref_log_probs`), and reads the chosen and rejected rows
of the policy in one pass. Both minimise the same loss: the script prints the two on one batch
once the policy has moved away from the reference.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.nn import functional as F

from digestlab.device import seed_everything
from digestlab.experiments.spo import SCALES
from digestlab.nn import GPT
from digestlab.objectives import dpo, pack_rows, sequence_logprobs


def textbook_loss(policy: GPT, reference: GPT, pairs: list, beta: float) -> torch.Tensor:
    """The DPO loss of `pairs` as the formula reads: four separate passes."""
    prompts = [p for p, _, _ in pairs]
    chosen = pack_rows(prompts, [w for _, w, _ in pairs])
    rejected = pack_rows(prompts, [r for _, _, r in pairs])
    with torch.no_grad():
        ref = sequence_logprobs(reference, *chosen) - sequence_logprobs(reference, *rejected)
    margin = sequence_logprobs(policy, *chosen) - sequence_logprobs(policy, *rejected)
    return -F.logsigmoid(beta * (margin - ref)).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu", choices=sorted(SCALES))
    parser.add_argument("--pairs", type=int, default=4096, help="pairs in the set")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = SCALES[args.scale]
    seed_everything(0)
    reference = GPT(params.sft.model).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)

    def reply() -> list[int]:  # the requests' replies: three letters, a word, the end
        return torch.randint(1, params.sft.model.vocab_size, (6,), generator=g).tolist()

    pairs = [(torch.randint(1, params.sft.model.vocab_size, (5,), generator=g).tolist(), reply(),
              reply()) for _ in range(args.pairs)]
    size, beta = params.batch_size, params.beta

    policy = copy.deepcopy(reference).requires_grad_(True)
    start = time.perf_counter()
    objective = dpo(policy, reference, pairs, size, beta)
    setup = time.perf_counter() - start
    print(f"{args.pairs:,} pairs, {size} a step, policy of {policy.num_params():,} parameters")

    def timed(step) -> float:
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)
        gen = torch.Generator().manual_seed(2)
        for i in range(args.steps + 5):
            if i == 5:  # a few steps to warm the allocator and kernels first
                start = time.perf_counter()
            loss = step(gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / args.steps

    def precomputed(gen: torch.Generator) -> torch.Tensor:
        return objective.loss(policy, objective.next_batch(gen))

    def textbook(gen: torch.Generator) -> torch.Tensor:
        picks = torch.randint(len(pairs), (size,), generator=gen).tolist()
        return textbook_loss(policy, reference, [pairs[i] for i in picks], beta)

    # interleaved, so that the machine's drift falls on both alike
    times = {"textbook": [], "precomputed": []}
    for _ in range(3):
        times["textbook"].append(timed(textbook))
        times["precomputed"].append(timed(precomputed))
    # the policy has moved away from the reference by now: both losses of one batch
    batch = objective.next_batch(torch.Generator().manual_seed(1))
    picks = torch.randint(len(pairs), (size,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = objective.loss(policy, batch).item()
        theirs = textbook_loss(policy, reference, [pairs[i] for i in picks], beta).item()
    print(f"the two losses of one batch after training: {ours:.6f} and {theirs:.6f}")
    best = {name: min(t) for name, t in times.items()}
    print(f"textbook (4 passes a step): {1e3 * best['textbook']:.2f} ms a step")
    print(f"precomputed reference, one pass: {1e3 * best['precomputed']:.2f} ms a step "
          f"(+ {setup:.2f} s once for the reference's margins)")
    print(f"speed-up {best['textbook'] / best['precomputed']:.2f}x (best of 3 interleaved "
          f"repeats of {args.steps} steps)")


if __name__ == "__main__":
    main()
