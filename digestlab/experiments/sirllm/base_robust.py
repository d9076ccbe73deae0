"""The cache-robust dialogue model: the dialogue model (`base_lm.py`) fine-tuned to read from a
sparse cache. Trained only on whole contexts, the dialogue model could not read an item torn
from its context among renumbered positions: with a 96-token cache SirLLM kept the requested
item in 69% of the grocery streams and answered 19% of those right, while a cache that kept the
request's whole turn was answered every time. Here every row is read as a cache would hold it
after random drops (`DialogueCorpus.sparse_rows`), so a kept token can be read whichever policy
kept it; no policy's choices are used, so none is trained for.
"""

from __future__ import annotations

import torch

from digestlab.data.dialogue import DialogueCorpus, Mixture, training_corpora
from digestlab.device import pick_device, seed_everything
from digestlab.experiments import ExperimentError, RunContext, TrainedBase
from digestlab.experiments.sirllm import LanguageModel, Robust
from digestlab.experiments.sirllm.base_lm import sink_probe, training_stages
from digestlab.modelfile import load_model
from digestlab.objectives import weighted_next_token_loss
from digestlab.train import Batch, Objective, TrainResult
from digestlab.train import train as train_loop


def train(params: Robust, ctx: RunContext) -> TrainedBase:
    device = pick_device()
    model, saved = load_model(ctx.bases["lm"], None, device)
    lm = LanguageModel.model_validate(saved["provenance"]["params"])  # rebuild its data
    corpus, val = training_corpora(lm.n_dialogues, Mixture(mention_percent=lm.mention_percent))
    if corpus.sha256 != saved["data_sha256"]:
        raise ExperimentError(f"{ctx.bases['lm']}: its training data cannot be rebuilt from "
                              "the params it records; retrain it")
    low, high = params.keep_range

    def rows(c: DialogueCorpus, starts: torch.Tensor, keep: int, g: torch.Generator) -> Batch:
        return c.sparse_rows(starts, params.span, params.tail, keep, params.user_weight, g)

    def next_batch(g: torch.Generator) -> Batch:
        keep = int(torch.randint(low, high + 1, (1,), generator=g))  # one count per batch
        return rows(corpus, corpus.sample_starts(params.batch_size, g), keep, g)

    # fixed validation batches from dialogue starts, their counts spread over the range
    g = torch.Generator().manual_seed(1)
    counts = torch.linspace(low, high, params.eval_batches).round().long().tolist()
    val_batches = [rows(val, val.starts[i * params.batch_size : (i + 1) * params.batch_size],
                        keep, g) for i, keep in enumerate(counts)]
    # rows vary in length with the count kept: the loop counts the expected tokens per batch
    mean_row = 1 + (low + high) / 2 + params.tail
    objective = Objective(
        next_batch=next_batch, loss=weighted_next_token_loss,
        items_per_batch=round(params.batch_size * mean_row),
        flops_per_item=model.flops_per_token(round(mean_row)), val_batches=val_batches)
    seed_everything(params.train.seed)
    model.train()
    probe = sink_probe(val.rows(val.starts[: params.batch_size], lm.seq_len)[0])
    ctx.log(f"fine-tuning on sparse contexts: {params.span} tokens cut to {low}-{high} and "
            f"the last {params.tail}")
    result = train_loop(model, objective, params.train, device, log=ctx.log, probe=probe)
    return TrainedBase(model, result, corpus.sha256, stages={
        name: TrainResult(**r) for name, r in training_stages(saved).items()})
