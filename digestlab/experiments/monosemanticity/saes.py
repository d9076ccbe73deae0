"""The SAEs on the program model's residual stream: trained on the tuning seeds to choose
lambda, then on the scored seeds, and judged on held-out programs.

Everything the SAE runs read of the one model is taken once, before any run, into `Readings`
(handed to every run by `map_runs`): the stream at every byte of the training sessions and of
both splits, the model's own losses with the stream ablated, the stream at the output position,
and what the model writes for the steering programs unclamped.

Each scored SAE is judged on the evaluation split by explained variance, L0, dead and dense
features, and the cross-entropy with its reconstruction spliced in against replacing the stream
by its mean (mean-ablation) or by zeros. Every feature's activation at the last byte before the
output is scored by AUROC for "any bug" and for each error type; the best feature of each is
chosen on the selection split, and its AUROC on the evaluation split is what counts. The
general feature, the best for "any bug", is also scored on each error type.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

from digestlab.claims import summarize
from digestlab.configs import SAEConfig
from digestlab.data import DOCUMENT_SEPARATOR
from digestlab.data import programs as program_data
from digestlab.data.programs import ERROR_TYPES, Program
from digestlab.experiments.monosemanticity import ANY, L0_SHARE, Params
from digestlab.experiments.monosemanticity.heldout import (
    HeldOut,
    held_out,
    read_outputs,
    rows,
    scores_by_bug,
    steering_sets,
)
from digestlab.nn import GPT
from digestlab.nn.readout import residual, scored_positions, spliced_losses, stream
from digestlab.nn.rows import pad_rows
from digestlab.nn.sae import SparseAutoencoder, evaluate_sae, objective, training_config
from digestlab.train import train


@dataclasses.dataclass
class Readings:
    """What every SAE run reads of the one model, taken once."""

    params: Params
    model: GPT
    device: torch.device
    splits: dict[str, HeldOut]  # "selection", "evaluation"
    train_acts: torch.Tensor  # (M, d) the stream at every byte of the training sessions
    val_acts: dict[str, torch.Tensor]  # per split, at every byte of its programs
    losses: dict[str, dict[str, float]]  # per split: the model's, mean- and zero-ablated
    at_output: dict[str, torch.Tensor]  # per split, (N, d) at each program's last prompt byte
    steering: tuple[list[Program], list[Program]]  # (clean, buggy) evaluation programs
    # the stream at every prompt byte ("calibration": the selection split's clean programs;
    # "up", "down": the clean and buggy steering programs) and at their output position
    prompt_acts: dict[str, torch.Tensor]
    output_acts: dict[str, torch.Tensor]
    unclamped: dict[str, dict]  # read_outputs of the clean ("up") and buggy ("down") programs


def harvest(model: GPT, items: list[Program], layer: int, with_output: bool = True,
            last_only: bool = False) -> torch.Tensor:
    """The stream after block `layer` at every byte of the programs (of their prompts alone
    without `with_output`), or at each one's last byte (`last_only`)."""
    return stream(model, rows(items, with_output), layer, DOCUMENT_SEPARATOR, last_only)


def read_model(params: Params, model: GPT, device: torch.device) -> Readings:
    """Take everything the SAE runs read of the model."""
    splits = {"selection": held_out(params, params.selection_seed),
              "evaluation": held_out(params, params.eval_seed)}
    train_programs = [program_data.program(params.activation_seed, i, params.lm.bug_percent)
                      for i in range(params.activation_programs)]
    train_acts = harvest(model, train_programs, params.layer)
    mean = train_acts.mean(0)
    losses = {name: spliced_losses(model, rows(data.all), params.layer, DOCUMENT_SEPARATOR, {
        "model": None,
        "mean-ablation": lambda h: mean.to(h).expand_as(h),
        "zero-ablation": torch.zeros_like}) for name, data in splits.items()}
    clean, buggy = steering_sets(params, splits["evaluation"])
    layer = params.layer
    return Readings(
        params=params, model=model, device=device, splits=splits, train_acts=train_acts,
        val_acts={name: harvest(model, data.all, layer) for name, data in splits.items()},
        losses=losses,
        at_output={name: harvest(model, data.all, layer, False, True)
                   for name, data in splits.items()},
        steering=(clean, buggy),
        prompt_acts={"calibration": harvest(model, splits["selection"].clean, layer, False),
                     "up": harvest(model, clean, layer, False),
                     "down": harvest(model, buggy, layer, False)},
        output_acts={"up": harvest(model, clean, layer, False, True),
                     "down": harvest(model, buggy, layer, False, True)},
        unclamped={"up": read_outputs(model, clean), "down": read_outputs(model, buggy)},
    )


# --- training ------------------------------------------------------------------------------------

def sae_config(params: Params, kind: str, l1_coeff: float) -> SAEConfig:
    return SAEConfig(d_in=params.lm.model.d_model, width=params.width, kind=kind,
                     l1_coeff=l1_coeff, k=params.k)


def train_sae(readings: Readings, kind: str, l1_coeff: float, seed: int) -> tuple[
        SparseAutoencoder, dict]:
    """One SAE trained on the training sessions' stream, and its throughput."""
    params = readings.params
    sae = SparseAutoencoder(sae_config(params, kind, l1_coeff),
                            torch.Generator().manual_seed(seed))
    sae.fit_to(readings.train_acts)
    cfg = training_config(params.sae_steps, params.sae_learning_rate, seed)
    result = train(sae, objective(sae, readings.train_acts, params.sae_batch_size), cfg,
                   readings.device, log=lambda line: None)
    return sae.eval(), {"samples_per_s": result.items_per_s, "mfu": result.mfu or 0.0}


def load_sae(params: Params, trained: dict, device: torch.device) -> SparseAutoencoder:
    """The SAE a run trained, from what it returned."""
    sae = SparseAutoencoder(sae_config(params, trained["kind"], trained["l1_coeff"]))
    sae.load_state_dict(trained["state"])
    return sae.to(device).eval()


@torch.no_grad()
def encoded(sae: SparseAutoencoder, acts: torch.Tensor, features: list[int] | None = None
            ) -> torch.Tensor:
    """The SAE's feature activations (M, width), or (M, len(features)) of some features, of
    stream vectors (M, d) taken once from the model, on the CPU."""
    out = []
    for chunk in acts.split(4096):
        f = sae.encode(chunk.to(sae.b_dec.device))
        out.append((f if features is None else f[:, features]).cpu())
    return torch.cat(out)


def reconstruction(readings: Readings, sae: SparseAutoencoder, split: str) -> dict:
    """How well an SAE stands in for the stream on a split's programs: `evaluate_sae` on their
    activations, the model's cross-entropy with the reconstruction spliced in, what that adds,
    and the share of the loss each ablation loses that the reconstruction keeps ("recovered")."""
    losses = readings.losses[split]
    spliced = spliced_losses(readings.model, rows(readings.splits[split].all),
                             readings.params.layer, DOCUMENT_SEPARATOR,
                             {"sae": lambda h: sae(h)[0]})["sae"]
    recovered = {ablation: (losses[ablation] - spliced) / (losses[ablation] - losses["model"])
                 for ablation in ("mean-ablation", "zero-ablation")}
    return evaluate_sae(sae, readings.val_acts[split]) | {
        "ce_spliced": spliced, "added_ce": spliced - losses["model"], "recovered": recovered}


def sweep_run(readings: Readings, job: tuple[float, int]) -> dict:
    """A ReLU SAE of the lambda sweep, on a tuning seed, judged on the selection split."""
    l1_coeff, seed = job
    sae, speed = train_sae(readings, "relu", l1_coeff, seed)
    quality = reconstruction(readings, sae, "selection")
    quality.pop("frequency")
    return {"l1_coeff": l1_coeff, "seed": seed, **quality, **speed}


def sweep_table(params: Params, runs: list[dict]) -> list[dict]:
    """One row per lambda of the sweep: its SAEs' numbers on the selection split, averaged over
    the tuning seeds."""
    rows_ = []
    for l1 in params.l1_coeffs:
        mine = [r for r in runs if r["l1_coeff"] == l1]
        row = {"l1_coeff": l1}
        for key in ("l0", "explained_variance", "dead_fraction", "dense_fraction"):
            row[key] = summarize([r[key] for r in mine])["mean"]
        row["recovered"] = summarize([r["recovered"]["mean-ablation"] for r in mine])["mean"]
        rows_.append(row)
    return rows_


def choose_l1(params: Params, sweep: list[dict]) -> int:
    """The index of the sweep's lambda to train on the scored seeds, from the tuning seeds'
    rows ({"l0", "recovered"} on the selection split): of the lambdas whose L0 stays below
    L0_SHARE of the width, the one that keeps the most loss against mean-ablation (the
    sparsest, when none does)."""
    sparse = [i for i, row in enumerate(sweep) if row["l0"] < L0_SHARE * params.width]
    if not sparse:
        return min(range(len(sweep)), key=lambda i: sweep[i]["l0"])
    return max(sparse, key=lambda i: sweep[i]["recovered"])


# --- a scored SAE --------------------------------------------------------------------------------

@torch.no_grad()
def bug_features(sae: SparseAutoencoder, readings: Readings) -> dict:
    """The SAE's features at the output position, scored by AUROC. For "any bug" and each error
    type the feature with the best AUROC on the selection split is chosen, and its AUROC on the
    evaluation split is what counts; the general feature (the best for "any bug") is scored on
    every type too. Returns {"best", "general", "chosen_on" (selection AUROCs), "scores"
    (evaluation AUROCs), "features" (N, width) on the evaluation split}."""
    chosen_on = scores_by_bug(encoded(sae, readings.at_output["selection"]).numpy(),
                              readings.splits["selection"])
    features = encoded(sae, readings.at_output["evaluation"])
    scores = scores_by_bug(features.numpy(), readings.splits["evaluation"])
    best = {}
    for name, s in chosen_on.items():
        j = int(s.argmax())
        best[name] = {"feature": j, "auroc": float(scores[name][j]),
                      "selection_auroc": float(s[j])}
    general = best[ANY]["feature"]
    return {"best": best, "general": {name: float(s[general]) for name, s in scores.items()},
            "chosen_on": chosen_on, "scores": scores, "features": features}


def scored_run(readings: Readings, job: tuple[str, float, int]) -> dict:
    """A scored SAE: trained, then judged on the evaluation split, its bug features chosen on
    the selection split; the first ReLU seed's also gives the feature browser."""
    kind, l1_coeff, seed = job
    params = readings.params
    sae, speed = train_sae(readings, kind, l1_coeff, seed)
    quality = reconstruction(readings, sae, "evaluation")
    bugs = bug_features(sae, readings)
    out = {
        "kind": kind, "l1_coeff": l1_coeff, "seed": seed, **speed,
        "l0": quality["l0"], "explained_variance": quality["explained_variance"],
        "dead_fraction": quality["dead_fraction"], "dense_fraction": quality["dense_fraction"],
        "ce_spliced": quality["ce_spliced"], "added_ce": quality["added_ce"],
        "recovered": quality["recovered"], "best": bugs["best"], "general": bugs["general"],
        # live features, for the controls: active at least once on the evaluation split
        "alive": (quality["frequency"] > 0).nonzero().flatten().tolist(),
        "state": {k: v.detach().cpu() for k, v in sae.state_dict().items()},
    }
    if kind == "relu" and seed == params.sae_seeds[0]:
        out["browser"] = feature_browser(readings, sae, bugs)
    return out


@torch.no_grad()
def feature_browser(readings: Readings, sae: SparseAutoencoder, bugs: dict) -> list[dict]:
    """The leading features by their AUROCs on the selection split: the best for "any bug",
    then the best for each error type, then the next best for "any bug"; each with its AUROCs on
    the evaluation split, its activations at the output position there and its top-activating
    evaluation programs, byte by byte (scaled to its largest activation)."""
    params, chosen_on, scores = readings.params, bugs["chosen_on"], bugs["scores"]
    features = bugs["features"]
    chosen: list[int] = []
    for name in (ANY, *ERROR_TYPES):
        j = int(chosen_on[name].argmax())
        if j not in chosen:
            chosen.append(j)
    for j in np.argsort(-chosen_on[ANY], kind="stable").tolist():
        if len(chosen) >= params.browser_features:
            break
        if j not in chosen:
            chosen.append(j)
    chosen = chosen[: params.browser_features]
    data = readings.splits["evaluation"]
    is_buggy = torch.from_numpy(data.labels()[ANY])
    items = data.all
    ids, lengths = pad_rows(rows(items), DOCUMENT_SEPARATOR)
    per_byte = torch.cat([
        sae.encode(residual(readings.model, ids[s : s + 256], params.layer))[..., chosen].cpu()
        for s in range(0, len(items), 256)])  # (N, T, len(chosen))
    per_byte = per_byte * scored_positions(lengths, ids.shape[1])[..., None]
    browser = []
    for column, j in enumerate(chosen):
        acts = per_byte[..., column]  # (N, T)
        peak = acts.max().item()
        top = acts.max(dim=1).values.argsort(descending=True, stable=True)[:5].tolist()
        browser.append({
            "feature": j,
            "detects": max(chosen_on, key=lambda name: chosen_on[name][j]),
            "auroc": {name: round(float(s[j]), 4) for name, s in scores.items()},
            "frequency_at_output": (features[:, j] > 0).float().mean().item(),
            "at_output": {"clean": features[~is_buggy, j].tolist(),
                          "buggy": features[is_buggy, j].tolist()},
            "peak": peak,
            "examples": [
                {"bytes": [[chr(b), round(a / peak, 2) if peak > 0 else 0.0]
                           for b, a in zip(ids[i, 1 : lengths[i]].tolist(),
                                           acts[i, 1 : lengths[i]].tolist(), strict=True)],
                 "error": items[i].error}
                for i in top],
        })
    return browser


def compare_recipes(sweep: list[dict], relu: list[dict], topk: list[dict],
                    fixed: Callable[[dict], dict]) -> dict:
    """The two recipes side by side: each one's mean over seeds (`fixed` gives an SAE's
    steering at the fixed dose), and the ReLU sweep's explained variance interpolated (in log
    L0) at TopK's L0."""
    def mean(rows_: list[dict], key: Callable[[dict], float]) -> float:
        return summarize([key(r) for r in rows_])["mean"]

    table = {}
    for name, rows_ in (("ReLU", relu), ("TopK", topk)):
        table[name] = {
            "l0": mean(rows_, lambda r: r["l0"]),
            "explained_variance": mean(rows_, lambda r: r["explained_variance"]),
            "recovered": mean(rows_, lambda r: r["recovered"]["mean-ablation"]),
            "added_ce": mean(rows_, lambda r: r["added_ce"]),
            "dead_fraction": mean(rows_, lambda r: r["dead_fraction"]),
            "dense_fraction": mean(rows_, lambda r: r["dense_fraction"]),
            "best_auroc": mean(rows_, lambda r: r["best"][ANY]["auroc"]),
            "up": mean(rows_, lambda r: fixed(r)["up"]["feature"]["rate"]),
            "down": mean(rows_, lambda r: fixed(r)["down"]["feature"]["rate"]),
        }
    points = sorted((math.log(max(r["l0"], 1e-3)), r["explained_variance"]) for r in sweep)
    target = math.log(max(table["TopK"]["l0"], 1e-3))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    # None when TopK's L0 lies outside the sweep: no extrapolation
    inside = len(points) > 1 and xs[0] <= target <= xs[-1]
    table["relu_ev_at_topk_l0"] = float(np.interp(target, xs, ys)) if inside else None
    return table
