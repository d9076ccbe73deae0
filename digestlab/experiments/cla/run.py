"""Cross-Layer Attention (Brandon et al. 2024, arXiv 2405.12981): KV-cache bytes against perplexity.

Attention designs (MQA with head dim d and with d/2 at twice the heads, MQA-CLA2, where pairs of
adjacent layers share one K/V, and MQA-CLA3, where threes do, with heads 3/2 as wide to hold
CLA2's KV bytes; at larger scales also MHA, GQA, CLA3 at head dim d and a DeepSeek-V2-style
latent KV) are trained from scratch with the same data, tokens and steps, each at its own
learning rate chosen on a tuning seed (`LearningRates`). Each seed is a block of common random
numbers: every design of the seed starts from the same initial weights wherever parameter shapes
agree and sees the same batches in the same order. So designs are compared seed by seed, by
perplexity ratios and, for CLA2's share of the small-head gap, by loss gaps, and the claims are
decided from those. KV bytes per token are measured: every trained model decodes a few tokens
through its KV cache, in bf16 like the paper's 16-bit numbers, and the filled cache's bytes are
read back.
"""

from __future__ import annotations

import copy
import dataclasses
import lzma
import math

import torch
from torch import nn
from torch.nn import functional as F

from digestlab.claims import Claim, paired_differences, paired_ratios, summarize, t95
from digestlab.data import CorpusSplits, build_splits, torch_source
from digestlab.device import device_name, pick_device, seed_everything
from digestlab.experiments import ExperimentError, Report, RunContext
from digestlab.experiments.cla import CLAIMS, Params, design_config
from digestlab.nn import GPT
from digestlab.objectives import language_model
from digestlab.train import Objective, TrainResult, map_runs, train, worker_count

# The paper's 1B-parameter results (Table 1: validation perplexity, bf16 KV bytes per token).
PAPER_1B = [
    ["H128-MQA", 13.54, 10240],
    ["H128-MQA-CLA2", 13.60, 5120],
    ["H64-MQA", 13.81, 5120],
    ["H90-MQA-CLA2", 13.73, 3600],
    ["H128-MQA-CLA3", 13.77, 3584],
]

# The paired claims: (id, design a, design b), each decided on the per-seed ppl(a) / ppl(b).
PAIRED_CLAIMS = (
    ("cla2-matches-mqa", "MQA-CLA2", "MQA"),
    ("cla2-beats-smaller-heads", "MQA-CLA2", "MQA d/2"),
    ("cla2-beats-cla3", "MQA-CLA2", "MQA-CLA3 3d/2"),
)
# Tokens of the KV-cache measurement: a prompt of each of two validation windows, then greedy
# decoding one token at a time.
PROMPT_TOKENS, DECODED_TOKENS = 4, 4


@torch.no_grad()
def share_initial_weights(models: list[nn.Module]) -> None:
    """Common random numbers for designs compared on one seed: each model takes, for every
    parameter whose name and shape an earlier model has, that model's initial values.

    Models are visited in order, so the first to own a (name, shape) sets it for all later ones
    (the MHA embeddings, MLPs and norms for every design; MQA's K/V for the CLA layers that
    still compute K/V).
    """
    first: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
    for model in models:
        for name, p in model.named_parameters():
            key = (name, tuple(p.shape))
            if key in first:
                p.copy_(first[key])
            else:
                first[key] = p.detach().clone()


def initial_states(params: Params, seed: int) -> list[dict[str, torch.Tensor]]:
    """Each design's initial weights for one seed, in params.designs order; with common_init,
    a parameter whose name and shape an earlier design has starts from that design's values."""
    models = []
    for name in params.designs:
        seed_everything(seed)
        models.append(GPT(design_config(name, params)))
    if params.common_init:
        share_initial_weights(models)
    return [model.state_dict() for model in models]


def corpus_splits(params: Params) -> CorpusSplits:
    """The chosen corpus, split by document into train and validation tokens."""
    if params.corpus == "torch-source":
        try:
            return torch_source.build_splits()
        except torch_source.CorpusUnavailable as e:
            raise ExperimentError(str(e)) from None
    return build_splits(params.n_documents, seed=0)


def compression_bits_per_byte(tokens: torch.Tensor) -> float:
    """xz's bits per byte on the tokens: an upper bound on the text's entropy rate, as a
    yardstick for the models' bits per byte (log2 of the byte-level perplexity)."""
    data = tokens.numpy().tobytes()
    return 8 * len(lzma.compress(data, preset=6)) / len(data)


@torch.no_grad()
def window_losses(model: GPT, batches) -> torch.Tensor:
    """Mean next-token loss of every validation window, (n_windows,) in float64."""
    model.eval()
    device = model.wte.weight.device
    out = []
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits, _ = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
        out.append(loss.view(y.shape).double().mean(dim=1))
    return torch.cat(out).cpu()


@torch.no_grad()
def measured_kv_bytes_per_token(model: GPT, prompt: torch.Tensor) -> float:
    """Bytes the KV cache holds per token of one sequence, read from a filled cache: a bf16
    copy of the model (16-bit, as the paper counts) prefills `prompt` (B, T) and decodes
    DECODED_TOKENS more."""
    model = copy.deepcopy(model).to(torch.bfloat16).eval()
    cache = model.new_cache(prompt.shape[0])
    logits, _ = model(prompt.to(model.wte.weight.device), cache=cache)
    for _ in range(DECODED_TOKENS):
        logits, _ = model(logits[:, -1:].argmax(dim=-1), cache=cache)  # (B, 1) greedy
    return cache.nbytes() / (cache.batch_size * len(cache))


def _curve(points: list[tuple[int, float]], every: int, tokens_per_step: int) -> list[list]:
    """[tokens seen, mean loss] over each block of `every` steps of a per-step curve."""
    out = []
    for start in range(0, len(points), every):
        block = points[start:start + every]
        out.append([(block[-1][0] + 1) * tokens_per_step, sum(v for _, v in block) / len(block)])
    return out


def train_design(name: str, seed: int, params: Params, state: dict[str, torch.Tensor],
                 splits: CorpusSplits) -> tuple[GPT, TrainResult, Objective]:
    """Train one design of one seed from the given initial weights at the design's learning
    rate (the floor of the schedule scaled with it), as the experiment does; returns the trained
    model, what the loop measured and the objective (its validation batches)."""
    device = pick_device()
    model = GPT(design_config(name, params))
    model.load_state_dict(state)
    objective = language_model(model, splits.train, params.batch_size, params.seq_len,
                               splits.val, params.eval_batches)
    lr = params.learning_rate(name)
    cfg = dataclasses.replace(params.train, seed=seed, learning_rate=lr,
                              min_lr=params.train.min_lr * lr / params.train.learning_rate)
    result = train(model, objective, cfg, device,
                   log=lambda line: print(f"[{name} seed {seed}] {line}", flush=True))
    if not math.isfinite(result.val_loss):
        raise ExperimentError(f"{name} seed {seed} diverged: validation loss {result.val_loss}")
    return model, result, objective


def _train_one(job: tuple[str, int, Params, dict, CorpusSplits]) -> dict:
    name, seed, params, _, _ = job
    model, result, objective = train_design(*job)
    tokens_per_step = params.batch_size * params.seq_len
    prompt = objective.val_batches[0][0][:2, :PROMPT_TOKENS]  # (2, PROMPT_TOKENS)
    return {
        "design": name, "seed": seed, "val_ppl": result.val_perplexity,
        "train_loss": result.final_train_loss, "tokens_per_s": result.items_per_s,
        "mfu": result.mfu, "mfu_spec": result.mfu_spec,
        "params": model.num_params(), "kv_bytes": measured_kv_bytes_per_token(model, prompt),
        "train_curve": _curve(result.loss_curve, params.curve_every, tokens_per_step),
        "val_curve": [[step * tokens_per_step, loss] for step, loss in result.val_curve],
        "window_losses": window_losses(model, objective.val_batches),
    }


def run(params: Params, ctx: RunContext) -> Report:
    """Train every design for every seed and decide the paper's claims."""
    device = pick_device()
    splits = corpus_splits(params)
    ctx.log(f"corpus {params.corpus} {splits.sha256[:12]}: {len(splits.train):,} train / "
            f"{len(splits.val):,} validation tokens from {splits.n_train_documents}+"
            f"{splits.n_val_documents} documents")
    jobs = [(name, seed, params, state, splits)
            for seed in params.seeds
            for name, state in zip(params.designs, initial_states(params, seed), strict=True)]
    workers = worker_count(ctx.threads, device, len(jobs))
    runs = map_runs(_train_one, jobs, ctx.threads, device)

    by_design = {name: [r for r in runs if r["design"] == name] for name in params.designs}
    measured = {}
    for name, rs in by_design.items():
        kv_bytes = {r["kv_bytes"] for r in rs}
        if len(kv_bytes) != 1:
            raise ExperimentError(f"{name}'s KV cache held {sorted(kv_bytes)} bytes per token "
                                  "in different seeds; its size depends on the config alone")
        ppl = [r["val_ppl"] for r in rs]
        stats = summarize(ppl)
        measured[name] = {
            "config": {k: v for k, v in dataclasses.asdict(design_config(name, params)).items()
                       if k in ("n_heads", "n_kv_heads", "head_dim", "kv_share",
                                "kv_latent_dim", "kv_rope_dim")},
            "params": rs[0]["params"],
            "learning_rate": params.learning_rate(name),
            "kv_bytes_per_token": kv_bytes.pop(),  # measured in the filled bf16 cache
            # the same count from the config's shapes, as a cross-check of the measurement
            "kv_bytes_per_token_from_config": design_config(name, params).kv_bytes_per_token(),
            "val_ppl": ppl,
            "val_ppl_mean": stats["mean"],
            "val_ppl_sd": stats["sd"],
            "bits_per_byte_mean": summarize([math.log2(x) for x in ppl])["mean"],
            "train_loss": [r["train_loss"] for r in rs],
            "curves": [{"seed": r["seed"], "train": r["train_curve"], "val": r["val_curve"]}
                       for r in rs],
        }
    windows = {(r["design"], r["seed"]): r["window_losses"] for r in runs}
    claims = decide_claims(measured)
    noise = evaluation_noise(windows, params.seeds)
    by_id = {c.id: c for c in claims}
    pairs = {claim_id: {"designs": [a, b], "paired_sd": by_id[claim_id].comparisons[0].sd,
                        "evaluation_noise": noise[a, b]}
             for claim_id, a, b in PAIRED_CLAIMS}
    paired_sds = [p["paired_sd"] for p in pairs.values()]
    means = [v["val_ppl_mean"] for v in measured.values()]
    figures = {
        "ppl_vs_kv_bytes": {"designs": {name: {k: v[k] for k in ("kv_bytes_per_token",
                                                                 "val_ppl_mean", "val_ppl_sd")}
                                        for name, v in measured.items()},
                            "paper": PAPER_1B},
        "loss_curves": {name: v["curves"] for name, v in measured.items()},
    }
    tokens_per_step = params.batch_size * params.seq_len
    return Report(
        seeds=list(params.seeds),
        device=device_name(device),
        metrics={
            "corpus": {"name": params.corpus, "sha256": splits.sha256,
                       "train_tokens": len(splits.train), "val_tokens": len(splits.val),
                       "xz_bits_per_byte": compression_bits_per_byte(splits.val)},
            "train_tokens_per_run": params.train.steps * tokens_per_step,
            "eval_tokens": params.eval_batches * tokens_per_step,
            # how far apart the designs' mean perplexities lie, beside the paired spread
            "design_spread": max(means) / min(means) - 1,
            "paired_sd_range": None if None in paired_sds else [min(paired_sds), max(paired_sds)],
            # per paired claim: the sd over seeds of the log ratio, and the standard error of
            # that log ratio which the finite validation set alone causes
            "pairs": pairs,
            "designs": measured,
        },
        claims=claims,
        figures=figures,
        timing={name: _mean_throughput(rs) for name, rs in by_design.items()}
        | {"workers": workers},
        reference={"columns": ["design", "val ppl", "KV bytes/token"], "rows": PAPER_1B},
    )


def _mean_throughput(runs: list[dict]) -> dict:
    """Mean tokens/s and MFU of a design's runs (MFU against the spec sheet too, on a GPU)."""
    out = {key: summarize([r[key] for r in runs])["mean"] for key in ("tokens_per_s", "mfu")}
    if runs[0]["mfu_spec"] is not None:
        out["mfu_spec"] = summarize([r["mfu_spec"] for r in runs])["mean"]
    return out


def evaluation_noise(windows: dict[tuple[str, int], torch.Tensor], seeds: list[int]
                     ) -> dict[tuple[str, str], float]:
    """Standard error of each claimed pair's log-perplexity ratio from the finite validation
    set: the sd of the per-window loss differences over sqrt(windows), root-mean-square over
    seeds. It should sit well below the paired spread across seeds."""
    noise = {}
    for _, a, b in PAIRED_CLAIMS:
        se2 = [(windows[a, s] - windows[b, s]).var().item() / len(windows[a, s]) for s in seeds]
        noise[a, b] = math.sqrt(sum(se2) / len(se2))
    return noise


def decide_claims(measured: dict) -> list[Claim]:
    """The paper's claims, decided from the measured numbers: the halved cache from the bytes
    the filled caches held, the others from the per-seed perplexities of paired designs."""
    kv = {name: v["kv_bytes_per_token"] for name, v in measured.items()}
    loss = {name: [math.log(p) for p in v["val_ppl"]] for name, v in measured.items()}
    paired = {claim_id: CLAIMS[claim_id].decide(
                  {"ratio": paired_ratios(measured[a]["val_ppl"], measured[b]["val_ppl"])},
                  unit="training seeds", base_models=None)
              for claim_id, a, b in PAIRED_CLAIMS}
    # CLA2's loss gap to MQA as a share of the small-head design's, from the two gaps per seed
    cla2_gap = paired_differences(loss["MQA-CLA2"], loss["MQA"])
    small_gap = paired_differences(loss["MQA d/2"], loss["MQA"])
    stats = summarize(small_gap)
    share = CLAIMS["cla2-keeps-most-of-mqa"].decide(
        {"share": list(zip(cla2_gap, small_gap, strict=True))}, unit="training seeds",
        premises={"smaller-heads-cost-loss":
                  stats["mean"] - t95(stats["n"] - 1) * stats["sd"] / math.sqrt(stats["n"])},
        base_models=None)
    return [CLAIMS["cla2-halves-kv"].decide({"ratio": kv["MQA-CLA2"] / kv["MQA"]}, unit="runs"),
            paired["cla2-matches-mqa"], share, paired["cla2-beats-smaller-heads"],
            paired["cla2-beats-cla3"]]
