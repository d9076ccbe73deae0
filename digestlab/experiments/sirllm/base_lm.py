"""The dialogue model SirLLM's policies stream through: the one GPT, trained by the one loop on
generated dialogues, each training row opening with <bos> (see `DialogueCorpus.rows`)."""

from __future__ import annotations

from digestlab.data.dialogue import VOCAB_SIZE, Mixture, training_corpora
from digestlab.device import pick_device, seed_everything
from digestlab.experiments import ExperimentError, RunContext, TrainedBase
from digestlab.experiments.sirllm import LanguageModel
from digestlab.nn import GPT
from digestlab.objectives import next_token_loss
from digestlab.train import Objective
from digestlab.train import train as train_loop


def train(params: LanguageModel, ctx: RunContext) -> TrainedBase:
    if params.model.vocab_size < VOCAB_SIZE:
        raise ExperimentError(f"lm.model.vocab_size {params.model.vocab_size} is below the "
                              f"{VOCAB_SIZE} words of the dialogues")
    mix = Mixture(mention_percent=params.mention_percent)
    corpus, val = training_corpora(params.n_dialogues, mix)
    ctx.log(f"{params.n_dialogues} training dialogues, {len(corpus.tokens):,} tokens")
    val_batches = [val.rows(val.starts[i : i + params.batch_size], params.seq_len)
                   for i in range(0, params.batch_size * params.eval_batches, params.batch_size)]
    seed_everything(params.train.seed)
    model = GPT(params.model)
    objective = Objective(
        next_batch=lambda g: corpus.rows(corpus.sample_starts(params.batch_size, g),
                                         params.seq_len),
        loss=next_token_loss,
        items_per_batch=params.batch_size * params.seq_len,
        flops_per_item=model.flops_per_token(params.seq_len),
        val_batches=val_batches,
    )
    result = train_loop(model, objective, params.train, pick_device(), log=ctx.log)
    return TrainedBase(model, result, corpus.sha256)
