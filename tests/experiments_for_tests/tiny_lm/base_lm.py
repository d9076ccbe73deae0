"""The tiny_lm test experiment's base model: a small GPT trained on the generated corpus."""

from digestlab.data import build_splits
from digestlab.device import pick_device, seed_everything
from digestlab.experiments import RunContext, TrainedBase
from digestlab.nn import GPT
from digestlab.objectives import language_model
from digestlab.train import train as train_loop
from experiments_for_tests.tiny_lm import LanguageModel


def train(params: LanguageModel, ctx: RunContext) -> TrainedBase:
    splits = build_splits(params.n_documents, seed=0)
    seed_everything(params.train.seed)
    model = GPT(params.model)
    objective = language_model(model, splits.train, params.batch_size, params.seq_len)
    result = train_loop(model, objective, params.train, pick_device(), log=ctx.log)
    return TrainedBase(model, result, splits.sha256)
