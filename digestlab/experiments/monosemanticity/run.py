"""Scaling Monosemanticity in miniature: SAE features of a model of Python sessions, the
feature that detects bugs, and what clamping it does.

One program model (`base_lm.py`) reads interactive sessions (`>>> x = 7` ... `>>> print(x //
y)`) and predicts the output line of the last print: the printed value, or the name of the
error it raises. "The model predicts an error" means that, reading greedily, it writes an
error's name as that line. P(error), which the AUROCs use, is the probability it gives an
uppercase first byte (every error name starts with one, no clean output does).

Two splits of held-out program pairs (a buggy program and its clean twin, one line apart) keep
what is chosen apart from what is scored: the selection split (`selection_seed`) chooses, the
evaluation split (`eval_seed`) scores and steers.

1. Sparse autoencoders (`digestlab/nn/sae.py`) train on the residual stream after block
   `layer`, at every byte of sessions the model never trained on. The ReLU recipe is swept
   over lambda on the tuning seeds alone: of the lambdas with L0 below L0_SHARE of the width
   on the selection split, the one that keeps the most loss is trained on every scored seed,
   and so is the TopK recipe (k fixed, nothing chosen).
2. Each scored SAE is judged on the evaluation split by explained variance, L0, dead and dense
   features, and by the cross-entropy of the model with the SAE's reconstruction spliced in,
   against replacing the stream by its mean (mean-ablation) or by zeros.
3. Every feature's activation at the last byte before the output is scored by AUROC for "any
   bug" and for each error type: the best feature of each is chosen on the selection split and
   its AUROC taken on the evaluation split, beside the model's own P(error).
4. Steering: the chosen "any bug" feature is clamped at every position of evaluation programs,
   to +m times its largest activation on the selection split's clean programs (on clean
   programs) and to -m times that (on buggy ones), with the SAE's error term kept, so that
   only that feature changes: h' = h + (c - f_i(h)) d_i. Random live features clamped to change
   the stream by the same mean norm are the controls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats
import torch
from torch.nn import functional as F

from digestlab.checkpoint import load_checkpoint
from digestlab.claims import Claim, binomial_interval, paired_ratios, summarize
from digestlab.configs import SAEConfig
from digestlab.data import DOCUMENT_SEPARATOR
from digestlab.data import programs as program_data
from digestlab.data.programs import ERROR_FIRST_BYTES, ERROR_TYPES, Program
from digestlab.device import device_name, pick_device
from digestlab.experiments import Report, RunContext
from digestlab.experiments.monosemanticity import CLAIMS, CONTROL_SHARE, L0_SHARE, Params
from digestlab.experiments.monosemanticity.base_lm import corpus
from digestlab.nn import GPT
from digestlab.nn.sae import SparseAutoencoder, evaluate_sae
from digestlab.nn.sae import objective as sae_objective
from digestlab.train import map_runs
from digestlab.train import train as train_loop

ANY = "any bug"
MAX_OUTPUT = 18  # bytes read back per output line: the longest error name and its newline
NEWLINE = ord("\n")
CHUNK = 256  # programs per forward pass

# What the forked workers read; set by `run` before map_runs (a fork shares them for free).
_SHARED: dict[str, object] = {}


# --- programs as tensors -------------------------------------------------------------------------

def _bytes(program: Program, with_output: bool) -> list[int]:
    # Every program reads as the start of a document: after the separator, as in training.
    text = program.text() if with_output else program.prompt()
    return [DOCUMENT_SEPARATOR, *text.encode("utf-8")]


def right_padded(items: Sequence[Program], with_output: bool
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N, T) right-padded with the separator, lengths (N,)) of the programs' bytes."""
    rows = [_bytes(p, with_output) for p in items]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [DOCUMENT_SEPARATOR] * (width - len(r)) for r in rows])
    return ids, torch.tensor([len(r) for r in rows])


@torch.no_grad()
def residual(model: GPT, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """The residual stream after block `layer`, (N, T, d), of right-padded ids."""
    seen: list[torch.Tensor] = []
    with model.residual_hook(layer, lambda h: seen.append(h.float())):
        model(ids.to(model.wte.weight.device))
    return seen[0]


def program_positions(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(N, width) mask of each row's program bytes (the leading separator and padding off)."""
    at = torch.arange(width)
    return (at >= 1) & (at < lengths[:, None])


@torch.no_grad()
def activations(model: GPT, items: Sequence[Program], layer: int, with_output: bool = True
                ) -> torch.Tensor:
    """Residual-stream vectors (M, d) at every byte of the programs (of their prompts alone
    without `with_output`)."""
    out = []
    for start in range(0, len(items), CHUNK):
        ids, lengths = right_padded(items[start : start + CHUNK], with_output)
        h = residual(model, ids, layer)
        out.append(h[program_positions(lengths, ids.shape[1]).to(h.device)].cpu())
    return torch.cat(out)


@torch.no_grad()
def output_residuals(model: GPT, items: Sequence[Program], layer: int) -> torch.Tensor:
    """The residual stream (N, d) at each program's last byte before its output."""
    out = []
    for start in range(0, len(items), CHUNK):
        ids, lengths = right_padded(items[start : start + CHUNK], with_output=False)
        h = residual(model, ids, layer)
        out.append(h[torch.arange(len(ids)), lengths - 1].cpu())
    return torch.cat(out)


# --- reading the output line ---------------------------------------------------------------------

def clamp_hook(sae: SparseAutoencoder, feature: int, value: float
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Set feature `feature` to `value` at every position and keep the SAE's error term:
    h' = h + (value - f(h)) d, d the feature's decoder row in the stream's units."""
    direction = sae.decoder()[feature].detach() / sae.input_scale

    def hook(h: torch.Tensor) -> torch.Tensor:
        f = sae.encode(h)[..., feature]  # (B, T)
        return h + (value - f)[..., None] * direction.to(h.dtype)

    return hook


@torch.no_grad()
def read_outputs(model: GPT, items: Sequence[Program], layer: int = 0,
                 hook: Callable | None = None) -> dict:
    """For each program: the model's P(error) at the output's first byte, its greedy output
    line (at most MAX_OUTPUT bytes) and whether that line is an error's name. Prompts are
    left-padded and read with the KV cache, with `hook` on block `layer`."""
    device = model.wte.weight.device
    error_ids = torch.tensor(ERROR_FIRST_BYTES, device=device)
    p_error, lines = [], []
    steering = model.residual_hook(layer, hook) if hook else contextlib.nullcontext()
    with steering:
        for start in range(0, len(items), CHUNK):
            rows = [_bytes(p, with_output=False) for p in items[start : start + CHUNK]]
            width = max(len(r) for r in rows)
            ids = torch.tensor([[DOCUMENT_SEPARATOR] * (width - len(r)) + r for r in rows])
            mask = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rows])
            cache = model.new_cache(len(rows))
            logits, _ = model(ids.to(device), cache=cache, attention_mask=mask.to(device))
            probs = logits[:, -1].float().softmax(-1)
            p_error.append(probs[:, error_ids].sum(-1).cpu())
            read = [logits[:, -1].argmax(-1, keepdim=True)]
            ended = read[-1] == NEWLINE
            for _ in range(MAX_OUTPUT - 1):
                if bool(ended.all()):
                    break
                logits, _ = model(read[-1], cache=cache)
                read.append(logits[:, -1].argmax(-1, keepdim=True))
                ended |= read[-1] == NEWLINE
            for row in torch.cat(read, dim=1).tolist():
                text = bytes(row).decode("utf-8", errors="replace")
                lines.append(text.split("\n", 1)[0])
    # An error predicted is an error's name written: text that merely starts with a capital
    # (what a model pushed off its distribution writes) is no error message.
    named = torch.tensor([line in ERROR_TYPES for line in lines])
    return {"p_error": torch.cat(p_error), "predicts_error": named, "lines": lines}


# --- statistics ----------------------------------------------------------------------------------

def auroc(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of each column of scores (N, F) for the boolean labels (N,):
    the chance that a positive outscores a negative, ties counting one half."""
    ranks = torch.from_numpy(scipy.stats.rankdata(scores.double().numpy(), axis=0))
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positives and negatives")
    return (ranks[positive].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def rate(flags: torch.Tensor) -> dict:
    """A rate with its sample size and 95% binomial interval over programs."""
    k, n = int(flags.sum()), len(flags)
    return {"rate": k / n, "n": n, "interval": list(binomial_interval(k, n))}


def feature_aurocs(features: torch.Tensor, data: HeldOut) -> dict[str, torch.Tensor]:
    """Each feature's AUROC (width,) at the output position, features (N, width) over
    `data.all`: for "any bug" against every clean twin, and for each error type against them."""
    scores = {}
    for name, label in data.labels().items():
        rows = data.of_type(None if name == ANY else name)
        scores[name] = auroc(features[rows], label[rows])
    return scores


# --- the data of one run -------------------------------------------------------------------------

@dataclasses.dataclass
class HeldOut:
    """A split of held-out programs: per error type, buggy programs and their clean twins."""

    buggy: list[Program]
    clean: list[Program]  # clean[i] is buggy[i]'s twin

    @property
    def all(self) -> list[Program]:
        return self.clean + self.buggy

    def labels(self) -> dict[str, torch.Tensor]:
        """Boolean labels over `all` for "any bug" and for each error type against clean."""
        n = len(self.clean)
        kinds = [None] * n + [p.error for p in self.buggy]
        out = {ANY: torch.tensor([k is not None for k in kinds])}
        for error in ERROR_TYPES:
            out[error] = torch.tensor([k == error for k in kinds])
        return out

    def of_type(self, error: str | None) -> torch.Tensor:
        """Rows of `all` to score for one error type: its buggy programs and every clean one."""
        n = len(self.clean)
        keep = [True] * n + [error is None or p.error == error for p in self.buggy]
        return torch.tensor(keep)


def held_out(params: Params, seed: int) -> HeldOut:
    """`eval_pairs` pairs of each error type from the pair stream of `seed`: the selection split
    (`selection_seed`) or the evaluation split (`eval_seed`)."""
    buggy, clean = [], []
    for t, error in enumerate(ERROR_TYPES):
        for i in range(params.eval_pairs):
            twin, bug = program_data.pair(seed, t * 1_000_000 + i, error)
            clean.append(twin)
            buggy.append(bug)
    return HeldOut(buggy, clean)


def steering_sets(params: Params, data: HeldOut) -> tuple[list[Program], list[Program]]:
    """(clean, buggy) programs the steering runs read: the first of each type, interleaved."""
    n = len(ERROR_TYPES)
    per_type = max(1, params.steer_programs // n)
    picks = [t * params.eval_pairs + i for i in range(per_type) for t in range(n)]
    return [data.clean[i] for i in picks], [data.buggy[i] for i in picks]


def model_quality(model: GPT, data: HeldOut) -> dict:
    """How well the model itself predicts outputs and errors on the evaluation programs."""
    read = read_outputs(model, data.all)
    labels = data.labels()
    truth = [p.output for p in data.all]
    exact = torch.tensor([a == b for a, b in zip(read["lines"], truth, strict=True)])
    is_buggy = labels[ANY]
    predicted = read["predicts_error"]
    out = {
        "output_accuracy": {"clean": exact[~is_buggy].float().mean().item(),
                            "buggy": exact[is_buggy].float().mean().item()},
        "error_accuracy": (predicted == is_buggy).float().mean().item(),
        "always_clean_accuracy": (~is_buggy).float().mean().item(),
        "clean_predicted_error": predicted[~is_buggy].float().mean().item(),
        "per_type": {},
    }
    out["auroc"] = {name: s[0].item()
                    for name, s in feature_aurocs(read["p_error"][:, None], data).items()}
    for error in ERROR_TYPES:
        mine = labels[error]
        out["per_type"][error] = {
            "predicted_error": predicted[mine].float().mean().item(),
            "exact": exact[mine].float().mean().item(),
            "programs": int(mine.sum()),
        }
    return out


# --- SAEs ----------------------------------------------------------------------------------------

def sae_config(params: Params, kind: str, l1_coeff: float) -> SAEConfig:
    return SAEConfig(d_in=params.lm.model.d_model, width=params.width, kind=kind,
                     l1_coeff=l1_coeff, k=params.k)


def _train_sae(job: tuple[Params, str, float, int]) -> dict:
    """Train one SAE on the shared activations; return its weights and training numbers."""
    params, kind, l1_coeff, seed = job
    acts = _SHARED["train_acts"]
    sae = SparseAutoencoder(sae_config(params, kind, l1_coeff),
                            torch.Generator().manual_seed(seed))
    sae.fit_to(acts)
    cfg = dataclasses.replace(params.sae_train, seed=seed)
    result = train_loop(sae, sae_objective(sae, acts, params.sae_batch_size), cfg,
                        _SHARED["device"], log=lambda line: None)
    return {"kind": kind, "l1_coeff": l1_coeff, "seed": seed,
            "state": {k: v.detach().cpu() for k, v in sae.state_dict().items()},
            "samples_per_s": result.items_per_s, "mfu": result.mfu,
            "final_loss": result.final_train_loss}


def reconstruction(params: Params, sae: SparseAutoencoder, split: str) -> dict:
    """How well an SAE stands in for the stream on a split's programs: `evaluate_sae` on their
    activations, the model's cross-entropy with the reconstruction spliced in, what that adds,
    and the share of the loss each ablation loses that the reconstruction keeps ("recovered")."""
    losses = _SHARED["losses"][split]
    spliced = spliced_losses(_SHARED["model"], _SHARED["splits"][split].all, params.layer,
                             {"sae": lambda h: sae(h)[0]})["sae"]
    recovered = {ablation: (losses[ablation] - spliced) / (losses[ablation] - losses["model"])
                 for ablation in ("mean-ablation", "zero-ablation")}
    return evaluate_sae(sae, _SHARED["val_acts"][split]) | {
        "ce_spliced": spliced, "added_ce": spliced - losses["model"], "recovered": recovered}


def choose_l1(params: Params, sweep: list[dict]) -> int:
    """The index of the sweep's lambda to train on the scored seeds, from the tuning seeds'
    rows ({"l0", "recovered"} on the selection split): of the lambdas whose L0 stays below
    L0_SHARE of the width, the one that keeps the most loss against mean-ablation (the
    sparsest, when none does)."""
    sparse = [i for i, row in enumerate(sweep) if row["l0"] < L0_SHARE * params.width]
    if not sparse:
        return min(range(len(sweep)), key=lambda i: sweep[i]["l0"])
    return max(sparse, key=lambda i: sweep[i]["recovered"])


def load_sae(params: Params, trained: dict) -> SparseAutoencoder:
    sae = SparseAutoencoder(sae_config(params, trained["kind"], trained["l1_coeff"]))
    sae.load_state_dict(trained["state"])
    return sae.to(_SHARED["device"]).eval()


@torch.no_grad()
def spliced_losses(model: GPT, items: Sequence[Program], layer: int,
                   replacements: dict[str, Callable | None]) -> dict[str, float]:
    """Mean next-byte cross-entropy over the programs' bytes with the residual stream after
    `layer` replaced by each function (None: the model as it is)."""
    totals = dict.fromkeys(replacements, 0.0)
    count = 0
    for start in range(0, len(items), CHUNK):
        ids, lengths = right_padded(items[start : start + CHUNK], with_output=True)
        targets = ids[:, 1:].clone()
        targets[~program_positions(lengths, ids.shape[1])[:, 1:]] = -1
        count += int((targets >= 0).sum())
        ids, targets = ids.to(model.wte.weight.device), targets.to(model.wte.weight.device)
        for name, fn in replacements.items():
            steering = model.residual_hook(layer, fn) if fn else contextlib.nullcontext()
            with steering:
                logits, _ = model(ids[:, :-1])
            totals[name] += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                            ignore_index=-1, reduction="sum").item()
    return {name: total / count for name, total in totals.items()}


@torch.no_grad()
def encoded(sae: SparseAutoencoder, acts: torch.Tensor, features: list[int] | None = None
            ) -> torch.Tensor:
    """The SAE's feature activations (M, width), or (M, len(features)) of some features, of
    stream vectors (M, d) taken once from the model (the model is the same for every SAE)."""
    out = []
    for chunk in acts.split(4096):
        f = sae.encode(chunk.to(sae.b_dec.device))
        out.append((f if features is None else f[:, features]).cpu())
    return torch.cat(out)


def matched_clamp(values: torch.Tensor, target: float, positive: bool) -> float:
    """The clamp c on the positive (or negative) side for which the mean of |c - values| is
    `target`: what moves the stream by the same mean norm as the feature under test."""
    # mean |c - values| is convex in c, least at the median and growing away from it: bisect
    # on the distance from the median towards the chosen side
    sign = 1.0 if positive else -1.0
    start = values.median().item()
    lo, hi = 0.0, target + values.abs().max().item() + 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (start + sign * mid - values).abs().mean().item() < target:
            lo = mid
        else:
            hi = mid
    return start + sign * (lo + hi) / 2


def steer(model: GPT, sae: SparseAutoencoder, params: Params, feature: int,
          alive: torch.Tensor, n_controls: int, seed: int) -> dict:
    """Clamp `feature` up on the clean steering programs and down on the buggy ones, and do
    the same with `n_controls` random live features matched by the mean change they make to
    the stream. The clamp is a multiple of the feature's largest activation on the selection
    split's clean programs; what the model reads unclamped comes from `_SHARED["unclamped"]`."""
    clean, buggy = _SHARED["steering_sets"]
    prompts = _SHARED["prompt_acts"]  # the stream at every prompt byte, taken once
    layer = params.layer
    reference = encoded(sae, prompts["calibration"], [feature]).max().item()
    if reference <= 0:  # never active on clean programs: take its largest activation anywhere
        buggy_acts = activations(model, _SHARED["splits"]["selection"].buggy, layer, False)
        reference = encoded(sae, buggy_acts, [feature]).max().item()
    reference = max(reference, 1e-6)
    on_clean = encoded(sae, prompts["up"], [feature])[:, 0]
    on_buggy = encoded(sae, prompts["down"], [feature])[:, 0]
    norms = (sae.decoder() / sae.input_scale).norm(dim=1).detach().cpu()  # stream units
    candidates = [int(j) for j in alive.nonzero().flatten() if int(j) != feature]
    g = torch.Generator().manual_seed(seed)
    controls = [candidates[int(i)] for i in torch.randperm(len(candidates), generator=g)
                [:n_controls]]

    out = {"feature": feature, "reference_activation": reference, "controls": controls}
    for direction, items in (("up", clean), ("down", buggy)):
        sign = 1.0 if direction == "up" else -1.0
        value = sign * params.clamp_multiple * reference
        own = on_clean if direction == "up" else on_buggy
        change = ((value - own).abs().mean() * norms[feature]).item()  # mean |h' - h|
        base = _SHARED["unclamped"][direction]
        clamped = read_outputs(model, items, layer, clamp_hook(sae, feature, value))
        values = encoded(sae, prompts[direction], controls)
        control_rates, control_values = [], []
        for column, j in enumerate(controls):
            c = matched_clamp(values[:, column], change / norms[j].item(), sign > 0)
            read = read_outputs(model, items, layer, clamp_hook(sae, j, c))
            control_rates.append(read["predicts_error"].float().mean().item())
            control_values.append(c)
        result = {
            "clamp": value, "mean_change_norm": change,
            "base": rate(base["predicts_error"]), "clamped": rate(clamped["predicts_error"]),
            "base_p_error": base["p_error"].mean().item(),
            "clamped_p_error": clamped["p_error"].mean().item(),
            "control_rates": control_rates, "control_clamps": control_values,
            "examples": [{"prompt": p.prompt(), "base": b, "clamped": c}
                         for p, b, c in list(zip(items, base["lines"], clamped["lines"],
                                                 strict=True))[:4]],
        }
        if direction == "up":
            # what the clamped model wrote where its line starts with a capital: an error's
            # name, or other text (which counts as no error predicted)
            names = [line if line in ERROR_TYPES else "other" for line in clamped["lines"]
                     if line[:1].isupper()]
            result["error_names"] = {name: names.count(name) for name in sorted(set(names))}
        else:
            fixed = [line == p.fixed_output for line, p in
                     zip(clamped["lines"], items, strict=True)]
            result["fixed_output"] = rate(torch.tensor(fixed))
            result["fixed_output_base"] = rate(torch.tensor(
                [line == p.fixed_output for line, p in zip(base["lines"], items, strict=True)]))
        out[direction] = result
    return out


@torch.no_grad()
def _analyse(job: tuple[Params, dict]) -> dict:
    """Everything measured on one scored SAE: reconstruction and splicing on the evaluation
    split, its bug features chosen on the selection split and scored on the evaluation split,
    and steering."""
    params, trained = job
    model: GPT = _SHARED["model"]
    sae = load_sae(params, trained)
    quality = reconstruction(params, sae, "evaluation")
    bugs = bug_features(sae, _SHARED["at_output"], _SHARED["splits"])
    best = bugs["best"]
    alive = quality["frequency"] > 0  # active at least once on the evaluation activations
    # controls are what claim 6 is decided on, from the ReLU SAEs; TopK's steering is compared
    # without them
    controls = params.controls if trained["kind"] == "relu" else 0
    steering = steer(model, sae, params, best[ANY]["feature"], alive, controls, trained["seed"])
    out = {
        "kind": trained["kind"], "l1_coeff": trained["l1_coeff"], "seed": trained["seed"],
        "l0": quality["l0"], "explained_variance": quality["explained_variance"],
        "dead_fraction": quality["dead_fraction"], "dense_fraction": quality["dense_fraction"],
        "ce_spliced": quality["ce_spliced"], "added_ce": quality["added_ce"],
        "recovered": quality["recovered"], "best": best, "steering": steering,
    }
    if trained["kind"] == "relu" and trained["seed"] == params.sae_seeds[0]:
        out["browser"] = feature_browser(model, sae, params, _SHARED["splits"]["evaluation"],
                                         bugs["features"], bugs["scores"], bugs["chosen_on"])
    return out


def bug_features(sae: SparseAutoencoder, at_output: dict[str, torch.Tensor],
                 splits: dict[str, HeldOut]) -> dict:
    """The SAE's features at the output position of each split (`at_output`: the stream there,
    (N, d) per split), scored by AUROC; for "any bug" and each error type the feature with the
    best AUROC on the selection split is chosen, and its AUROC on the evaluation split is what
    counts. Returns {"best", "chosen_on" (selection AUROCs), "scores" (evaluation AUROCs),
    "features" (N, width) on the evaluation split}."""
    chosen_on = feature_aurocs(encoded(sae, at_output["selection"]), splits["selection"])
    features = encoded(sae, at_output["evaluation"])
    scores = feature_aurocs(features, splits["evaluation"])
    best = {}
    for name, s in chosen_on.items():
        j = int(s.argmax())
        best[name] = {"feature": j, "auroc": scores[name][j].item(),
                      "selection_auroc": s[j].item()}
    return {"best": best, "chosen_on": chosen_on, "scores": scores, "features": features}


def feature_browser(model: GPT, sae: SparseAutoencoder, params: Params, data: HeldOut,
                    features: torch.Tensor, scores: dict[str, torch.Tensor],
                    chosen_on: dict[str, torch.Tensor]) -> list[dict]:
    """The leading features by their AUROCs on the selection split (`chosen_on`): the best for
    "any bug", then the best for each error type, then the next best for "any bug"; each with
    its AUROCs on the evaluation split `data` (`scores`, `features` (N, width) at the output
    position), its activations there and its top-activating evaluation programs, byte by byte
    (scaled to its largest activation)."""
    chosen: list[int] = []
    for name in (ANY, *ERROR_TYPES):
        j = int(chosen_on[name].argmax())
        if j not in chosen:
            chosen.append(j)
    for j in chosen_on[ANY].argsort(descending=True).tolist():
        if len(chosen) >= params.browser_features:
            break
        if j not in chosen:
            chosen.append(j)
    chosen = chosen[: params.browser_features]
    labels = data.labels()
    items = data.all
    ids, lengths = right_padded(items, with_output=True)
    per_byte = torch.cat([
        sae.encode(residual(model, ids[s : s + CHUNK], params.layer))[..., chosen].cpu()
        for s in range(0, len(items), CHUNK)])  # (N, T, len(chosen))
    per_byte = per_byte * program_positions(lengths, ids.shape[1])[..., None]
    browser = []
    for column, j in enumerate(chosen):
        acts = per_byte[..., column]  # (N, T)
        peak = acts.max().item()
        top = acts.max(dim=1).values.argsort(descending=True)[:5].tolist()
        detects = max(chosen_on, key=lambda name: chosen_on[name][j].item())
        is_buggy = labels[ANY]
        browser.append({
            "feature": j,
            "detects": detects,
            "auroc": {name: round(s[j].item(), 4) for name, s in scores.items()},
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


# --- the run -------------------------------------------------------------------------------------

def run(params: Params, ctx: RunContext) -> Report:
    """Train the SAEs on the program model's residual stream, score the features, steer."""
    device = pick_device()
    splits = corpus(params.lm)
    model, saved = load_checkpoint(ctx.bases["lm"], splits.sha256, device)
    held = {"selection": held_out(params, params.selection_seed),
            "evaluation": held_out(params, params.eval_seed)}
    evaluation = held["evaluation"]
    ctx.log(f"{len(evaluation.buggy)} buggy programs and their clean twins in each split")
    quality = model_quality(model, evaluation)
    ctx.log(f"model: error-prediction accuracy {quality['error_accuracy']:.3f}, "
            f"AUROC of its own P(error) {quality['auroc'][ANY]:.3f}")

    train_programs = [program_data.program(params.activation_seed, i, params.lm.bug_percent)
                      for i in range(params.activation_programs)]
    train_acts = activations(model, train_programs, params.layer)
    mean = train_acts.mean(0)
    val_acts = {name: activations(model, data.all, params.layer) for name, data in held.items()}
    losses = {name: spliced_losses(model, data.all, params.layer, {
        "model": None,
        "mean-ablation": lambda h: mean.to(h).expand_as(h),
        "zero-ablation": torch.zeros_like}) for name, data in held.items()}
    ctx.log(f"{len(train_acts):,} activations to train on; cross-entropy {losses['evaluation']}")
    clean, buggy = steering_sets(params, evaluation)
    # What every SAE reads of the one model, taken once: the stream at the output position of
    # each split, and at every prompt byte of the clean programs the clamp is calibrated on
    # (the selection split's) and of the steering programs (the evaluation split's).
    at_output = {name: output_residuals(model, data.all, params.layer)
                 for name, data in held.items()}
    prompt_acts = {"calibration": activations(model, held["selection"].clean, params.layer,
                                              with_output=False),
                   "up": activations(model, clean, params.layer, with_output=False),
                   "down": activations(model, buggy, params.layer, with_output=False)}
    _SHARED.update(model=model, splits=held, train_acts=train_acts, val_acts=val_acts,
                   losses=losses, device=device, steering_sets=(clean, buggy),
                   at_output=at_output, prompt_acts=prompt_acts,
                   unclamped={"up": read_outputs(model, clean), "down": read_outputs(model, buggy)})
    # On the CPU one single-threaded SAE per core; on a GPU one after another.
    workers = max(1, ctx.threads) if device.type == "cpu" else 1

    # lambda is chosen on the tuning seeds, judged on the selection split; they never vote
    sweep = map_runs(_train_sae, [(params, "relu", l1, seed) for l1 in params.l1_coeffs
                                  for seed in params.sae_tuning_seeds], workers, device)
    sweep_rows = sweep_table(params, [reconstruction(params, load_sae(params, t), "selection")
                                      for t in sweep])
    l1 = params.l1_coeffs[choose_l1(params, sweep_rows)]
    ctx.log(f"lambda sweep L0 {[round(r['l0'], 1) for r in sweep_rows]}: lambda {l1} is "
            f"trained on seeds {params.sae_seeds}")
    trained = map_runs(_train_sae, [(params, kind, l1 if kind == "relu" else 0.0, seed)
                                    for kind in ("relu", "topk") for seed in params.sae_seeds],
                       workers, device)
    analyses = map_runs(_analyse, [(params, t) for t in trained], workers, device)
    _SHARED.clear()
    relu = [a for a in analyses if a["kind"] == "relu"]
    topk = [a for a in analyses if a["kind"] == "topk"]
    for a in analyses:
        ctx.log(f"{a['kind']} seed {a['seed']}: EV {a['explained_variance']:.3f} L0 "
                f"{a['l0']:.1f} recovered {a['recovered']['mean-ablation']:.3f} best AUROC "
                f"{a['best'][ANY]['auroc']:.3f} up {a['steering']['up']['clamped']['rate']:.2f}"
                f" down {a['steering']['down']['clamped']['rate']:.2f}")

    browser = next(a.pop("browser") for a in relu if "browser" in a)
    metrics = {
        "lm": {"params": model.num_params(), "val_loss": saved["train"]["val_loss"],
               "train_tokens": saved["train"]["items_seen"],
               "train_programs": splits.n_train_documents},
        "model": quality,
        "held_out": {"pairs_per_type": params.eval_pairs, "programs": len(evaluation.all),
                     "selection_programs": len(held["selection"].all),
                     "steering_programs": len(clean)},
        "activations": {"train": len(train_acts), "val": len(val_acts["evaluation"])},
        "losses": losses["evaluation"],
        "sweep": sweep_rows,
        "l1_coeff": l1,
        "l0_bound": L0_SHARE * params.width,  # "far below the width"; the sweep's choice too
        "relu": relu, "topk": topk,
        "recipes": compare_recipes(params, sweep_rows, relu, topk),
        "steering": steering_effects(relu),
        "browser": browser,
    }
    figures = {
        "sae_sweep": {"width": params.width, "layer": params.layer,
                      "tuning_seeds": list(params.sae_tuning_seeds), "sweep": sweep_rows,
                      "relu": relu, "topk": topk},
        "feature_activations": browser,
        "steering": [r["steering"] for r in relu],
    }
    return Report(
        seeds=list(params.sae_seeds),
        device=device_name(device),
        metrics=metrics,
        claims=decide_claims(params, metrics),
        figures=figures,
        timing={"workers": workers, "lm_tokens_per_s": saved["train"]["items_per_s"],
                # SAE training throughput and MFU, one single-threaded SAE per worker
                "sae_samples_per_s": summarize(
                    [t["samples_per_s"] for t in [*sweep, *trained]])["mean"],
                "sae_mfu": summarize([t["mfu"] or 0.0 for t in [*sweep, *trained]])["mean"]},
    )


def sweep_table(params: Params, quality: list[dict]) -> list[dict]:
    """One row per lambda of the sweep: its SAEs' numbers on the selection split, averaged over
    the tuning seeds (`quality` in the sweep's order, lambda-major)."""
    per_l1 = len(params.sae_tuning_seeds)
    rows = []
    for i, l1 in enumerate(params.l1_coeffs):
        mine = quality[i * per_l1 : (i + 1) * per_l1]
        row = {"l1_coeff": l1}
        for key in ("l0", "explained_variance", "dead_fraction", "dense_fraction"):
            row[key] = summarize([q[key] for q in mine])["mean"]
        row["recovered"] = summarize([q["recovered"]["mean-ablation"] for q in mine])["mean"]
        rows.append(row)
    return rows


def steering_effects(relu: list[dict]) -> dict:
    """Per direction ("up": clean programs clamped high, "down": buggy clamped negative), over
    the ReLU SAEs: each seed's rate of error predictions unclamped and clamped, how far the
    feature moves it, and how far its controls do on average."""
    out = {}
    for direction in ("up", "down"):
        rows = [r["steering"][direction] for r in relu]
        base = [st["base"]["rate"] for st in rows]
        clamped = [st["clamped"]["rate"] for st in rows]
        out[direction] = {
            "base": base, "clamped": clamped,
            "feature_effect": [abs(c - b) for b, c in zip(base, clamped, strict=True)],
            "control_effect": [summarize([abs(c - b) for c in st["control_rates"]])["mean"]
                               for b, st in zip(base, rows, strict=True)],
        }
    return out


def compare_recipes(params: Params, sweep: list[dict], relu: list[dict], topk: list[dict]
                    ) -> dict:
    """The two recipes side by side: each one's mean over seeds, and the ReLU sweep's
    explained variance interpolated (in log L0) at TopK's L0."""
    def mean(rows: list[dict], key: Callable[[dict], float]) -> float:
        return summarize([key(r) for r in rows])["mean"]

    table = {}
    for name, rows in (("ReLU", relu), ("TopK", topk)):
        table[name] = {
            "l0": mean(rows, lambda r: r["l0"]),
            "explained_variance": mean(rows, lambda r: r["explained_variance"]),
            "recovered": mean(rows, lambda r: r["recovered"]["mean-ablation"]),
            "added_ce": mean(rows, lambda r: r["added_ce"]),
            "dead_fraction": mean(rows, lambda r: r["dead_fraction"]),
            "dense_fraction": mean(rows, lambda r: r["dense_fraction"]),
            "best_auroc": mean(rows, lambda r: r["best"][ANY]["auroc"]),
            "up": mean(rows, lambda r: r["steering"]["up"]["clamped"]["rate"]),
            "down": mean(rows, lambda r: r["steering"]["down"]["clamped"]["rate"]),
        }
    points = sorted((math.log(max(r["l0"], 1e-3)), r["explained_variance"]) for r in sweep)
    target = math.log(max(table["TopK"]["l0"], 1e-3))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    # None when TopK's L0 lies outside the sweep: no extrapolation
    inside = len(points) > 1 and xs[0] <= target <= xs[-1]
    table["relu_ev_at_topk_l0"] = float(np.interp(target, xs, ys)) if inside else None
    return table


# --- claims --------------------------------------------------------------------------------------

def decide_claims(params: Params, metrics: dict) -> list[Claim]:
    """The six claims, from the scored ReLU SAEs' per-seed numbers (spec: CLAIMS)."""
    relu = metrics["relu"]
    steering = metrics["steering"]
    over = {"unit": "SAE seeds", "base_models": 1}  # one program model, several SAEs of it

    def mean(values: list[float]) -> float:
        return summarize(values)["mean"]

    up, down = steering["up"], steering["down"]
    n = relu[0]["steering"]["down"]["base"]["n"]
    # a model that never predicts the errors of the buggy programs would divide by zero; the
    # premise below keeps such a model from being judged at all
    halved = paired_ratios(down["clamped"], [max(b, 1 / n) for b in down["base"]])
    margins = {name: [c - CONTROL_SHARE * f for c, f in zip(
        steering[d]["control_effect"], steering[d]["feature_effect"], strict=True)]
        for name, d in (("clamped high", "up"), ("clamped negative", "down"))}
    return [
        CLAIMS["sae-explains-variance"].decide({
            "explained variance": [r["explained_variance"] for r in relu],
            "L0 / width": [r["l0"] / params.width for r in relu]}, **over),
        CLAIMS["splicing-costs-little"].decide({
            "loss recovered": [r["recovered"]["mean-ablation"] for r in relu]}, **over),
        CLAIMS["features-detect-bugs"].decide({
            "weakest type": [min(r["best"][e]["auroc"] for e in ERROR_TYPES) for r in relu]},
            **over),
        CLAIMS["clamp-high-invents-errors"].decide({
            "before": up["base"], "clamped": up["clamped"]}, **over),
        CLAIMS["clamp-negative-hides-bugs"].decide(
            {"after / before": halved},
            premises={"buggy programs predicted": mean(down["base"])}, **over),
        CLAIMS["controls-move-less"].decide(
            margins,
            premises={"the feature moves": min(mean(up["feature_effect"]),
                                               mean(down["feature_effect"]))}, **over),
    ]
