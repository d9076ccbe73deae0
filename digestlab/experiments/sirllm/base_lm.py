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

import statistics
from collections.abc import Callable

import torch

from digestlab.data.dialogue import VOCAB_SIZE, DialogueCorpus, Mixture, training_corpora
from digestlab.device import pick_device, seed_everything
from digestlab.experiments import ExperimentError, RunContext, TrainedBase
from digestlab.experiments.sirllm import LanguageModel
from digestlab.nn import GPT
from digestlab.nn.inspect import attention_weights
from digestlab.objectives import next_token_loss, weighted_next_token_loss
from digestlab.train import Batch, Objective
from digestlab.train import train as train_loop

# The stages a dialogue model goes through, in order; a model file records those before its last.
STAGES = ("pretrain", "chat", "sparse")


def training_stages(saved: dict) -> dict[str, dict]:
    """A model file's training results by stage, in order: "pretrain", then "chat" when the
    model was fine-tuned on the bot's turns, then "sparse" for the cache-robust model (the
    model file's own result is its last stage's)."""
    stages = dict(saved.get("stages", {}))
    return stages | {STAGES[len(stages)]: saved["train"]}


def first_token_attention(model: GPT, idx: torch.Tensor, from_query: int = 16) -> dict:
    """How much attention each layer pays to the first token of the rows idx (B, T), against
    the 1/(t+1) a uniform head would pay: per head, the mean over rows and over queries
    t >= from_query; then the mean head and the most attentive head of each layer."""
    weights = attention_weights(model, idx.to(model.wte.weight.device)).cpu()  # (L, B, H, T, T)
    T = idx.shape[1]
    per_head = weights[..., from_query:, 0].mean(dim=(1, 3))  # (L, H)
    uniform = (1.0 / torch.arange(from_query + 1, T + 1, dtype=torch.float64)).mean().item()
    return {"per_layer": per_head.mean(dim=1).tolist(),
            "top_head_per_layer": per_head.max(dim=1).values.tolist(),
            "uniform": uniform, "from_query": from_query, "context": T}


def sink_probe(rows: torch.Tensor) -> Callable[[GPT], dict[str, float]]:
    """A probe for the training loop: attention on the first token (<bos>) of the rows, of the
    most attentive head and of the mean head over the model, as multiples of a uniform head's.
    Attention sinks, if the model grows them, show up here as they form."""
    def probe(model: GPT) -> dict[str, float]:
        a = first_token_attention(model, rows)
        return {"top_head": max(a["top_head_per_layer"]) / a["uniform"],
                "mean_head": statistics.fmean(a["per_layer"]) / a["uniform"]}

    return probe


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

    # the opening windows of validation dialogues, as the perplexity streams open
    probe = sink_probe(val.rows(val.starts[: params.batch_size], params.seq_len)[0])
    result = train_loop(model, objective(params.batch_size, False), params.train, device,
                        log=ctx.log, probe=probe)
    if params.chat is None:
        return TrainedBase(model, result, corpus.sha256)
    ctx.log("fine-tuning mostly on the bot's turns")
    chat = train_loop(model, objective(params.chat_batch_size, True), params.chat, device,
                      log=ctx.log, probe=probe)
    return TrainedBase(model, chat, corpus.sha256, stages={"pretrain": result})
