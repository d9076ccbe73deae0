"""The policy every alignment method starts from: the one GPT, fine-tuned by the one loop on
the persona's replies (`digestlab/data/preferences.py`), the loss on reply tokens only."""

from __future__ import annotations

import hashlib

from digestlab.data import preferences
from digestlab.device import pick_device, seed_everything
from digestlab.experiments import RunContext, TrainedBase
from digestlab.experiments.spo import SupervisedPolicy
from digestlab.nn import GPT
from digestlab.objectives import supervised
from digestlab.train import train as train_loop

TRAIN_SEED = 0  # the fine-tuning data's seed; alignment draws requests with other seeds


def examples(params: SupervisedPolicy) -> tuple[list[tuple[list[int], list[int]]], str]:
    """The (prompt, reply) token lists the policy is fine-tuned on, and their sha256."""
    texts = preferences.supervised_examples(params.n_examples, TRAIN_SEED, params.correct_percent,
                                         params.curt_if_correct, params.curt_if_wrong)
    digest = hashlib.sha256("".join(p + r for p, r in texts).encode("utf-8")).hexdigest()
    return [(preferences.encode(p), preferences.encode(r)) for p, r in texts], digest


def train(params: SupervisedPolicy, ctx: RunContext) -> TrainedBase:
    pairs, digest = examples(params)
    ctx.log(f"{len(pairs):,} supervised replies")
    seed_everything(params.train.seed)
    model = GPT(params.model)
    objective = supervised(model, pairs, params.batch_size)
    result = train_loop(model, objective, params.train, pick_device(), log=ctx.log)
    return TrainedBase(model, result, digest)
