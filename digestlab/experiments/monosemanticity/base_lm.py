"""The model of Python sessions the SAEs read: the one GPT, trained by the one loop on
generated programs and their true outputs, byte by byte."""

from __future__ import annotations

from digestlab.data import programs, splits_from_documents
from digestlab.device import pick_device, seed_everything
from digestlab.experiments import RunContext, TrainedBase
from digestlab.experiments.monosemanticity import LM_PROGRAM_SEED, ProgramModel
from digestlab.nn import GPT
from digestlab.objectives import language_model
from digestlab.train import train as train_loop


def corpus(params: ProgramModel):
    """The training and validation programs, split by program."""
    docs = programs.training_documents(params.n_programs, LM_PROGRAM_SEED, params.bug_percent)
    return splits_from_documents(docs, val_fraction=0.1)


def train(params: ProgramModel, ctx: RunContext) -> TrainedBase:
    splits = corpus(params)
    ctx.log(f"{splits.n_train_documents:,} training programs, {len(splits.train):,} bytes")
    seed_everything(params.train.seed)
    model = GPT(params.model)
    objective = language_model(model, splits.train, params.batch_size, params.seq_len,
                               splits.val)
    result = train_loop(model, objective, params.train, pick_device(), log=ctx.log)
    return TrainedBase(model, result, splits.sha256)
