"""The tiny_lm test experiment's analysis: validation loss of the base model, by window group."""

import torch

from digestlab.data import build_splits, validation_windows
from digestlab.experiments import Report, RunContext
from digestlab.modelfile import load_model
from experiments_for_tests.tiny_lm import CLAIMS, Params


def run(params: Params, ctx: RunContext) -> Report:
    splits = build_splits(params.lm.n_documents, seed=0)
    model, saved = load_model(ctx.bases["lm"], splits.sha256)
    x, y = validation_windows(splits.val, params.eval_groups * params.windows_per_group,
                              params.lm.seq_len)
    with torch.no_grad():
        losses = [model(xs, ys)[1].item() for xs, ys in zip(
            x.split(params.windows_per_group), y.split(params.windows_per_group), strict=True)]
    return Report(
        seeds=[params.lm.train.seed],
        device="cpu",
        metrics={"val_loss_by_group": losses, "base_final_train_loss":
                 saved["train"]["final_train_loss"]},
        claims=[CLAIMS["beats-uniform"].decide({"loss": losses}, unit="runs", base_models=1)],
    )
