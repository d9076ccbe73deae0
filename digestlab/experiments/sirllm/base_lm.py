"""The dialogue model SirLLM's policies stream through: the one GPT, trained by the one loop on
generated dialogues, each training row opening with <bos> (see `DialogueCorpus.rows`), then
fine-tuned mostly on the bot's turns. Pretraining alone left a model that answered the grocery
question at chance even with the request in view: the answer is under 1% of the tokens, too
little of the loss for the model to learn to look it up, and 800 more steps on every token did
not change that. With the loss on the bot's turns it learns it within the cpu budget. The
user's turns keep a small weight: with none, the model forgot how to predict them (their mean
surprisal rose from 0.84 to 2.66 nats), and SirLLM, which ranks tokens by that surprisal,
lost the item among them."""

from __future__ import annotations

import torch

from digestlab.data.dialogue import VOCAB_SIZE, DialogueCorpus, Mixture, training_corpora
from digestlab.device import pick_device, seed_everything
from digestlab.experiments import ExperimentError, RunContext, TrainedBase
from digestlab.experiments.sirllm import LanguageModel
from digestlab.nn import GPT
from digestlab.objectives import next_token_loss, weighted_next_token_loss
from digestlab.train import Batch, Objective
from digestlab.train import train as train_loop


def train(params: LanguageModel, ctx: RunContext) -> TrainedBase:
    if params.model.vocab_size < VOCAB_SIZE:
        raise ExperimentError(f"lm.model.vocab_size {params.model.vocab_size} is below the "
                              f"{VOCAB_SIZE} words of the dialogues")
    mix = Mixture(mention_percent=params.mention_percent)
    corpus, val = training_corpora(params.n_dialogues, mix)
    ctx.log(f"{params.n_dialogues} training dialogues, {len(corpus.tokens):,} tokens")
    seed_everything(params.train.seed)
    model = GPT(params.model)
    device = pick_device()

    def objective(batch_size: int, chat: bool) -> Objective:
        def rows(c: DialogueCorpus, starts: torch.Tensor) -> Batch:
            return (c.chat_rows(starts, params.seq_len, params.chat_user_weight) if chat
                    else c.rows(starts, params.seq_len))

        n_val = min(len(val.starts), batch_size * params.eval_batches)  # rows that start a dialogue
        return Objective(
            next_batch=lambda g: rows(corpus, corpus.sample_starts(batch_size, g)),
            loss=weighted_next_token_loss if chat else next_token_loss,
            items_per_batch=batch_size * params.seq_len,
            flops_per_item=model.flops_per_token(params.seq_len),
            val_batches=[rows(val, val.starts[i : min(i + batch_size, n_val)])
                         for i in range(0, n_val, batch_size)],
        )

    result = train_loop(model, objective(params.batch_size, False), params.train, device,
                        log=ctx.log)
    if params.chat is None:
        return TrainedBase(model, result, corpus.sha256)
    ctx.log("fine-tuning mostly on the bot's turns")
    chat = train_loop(model, objective(params.chat_batch_size, True), params.chat, device,
                      log=ctx.log)
    return TrainedBase(model, chat, corpus.sha256, stages={"pretrain": result})
