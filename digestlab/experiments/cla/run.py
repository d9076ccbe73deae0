"""Cross-Layer Attention (Brandon et al. 2024, arXiv 2405.12981): KV-cache bytes against perplexity.

Attention designs (MQA with head dim d and d/2, MQA-CLA2 and MQA-CLA3, where groups of two or
three adjacent layers share one K/V, and at larger scales MHA, GQA and a DeepSeek-V2-style
latent KV) are trained from scratch with the same data, tokens, steps and learning rate. Each
seed is a block of common random numbers: every design of the seed starts from the same initial
weights wherever parameter shapes agree and sees the same batches in the same order. So designs
are compared by paired per-seed log-perplexity ratios, and the claims are decided from those.
"""

from __future__ import annotations

import dataclasses
import lzma
import math

import torch
from torch.nn import functional as F

from digestlab.claims import (
    INCONCLUSIVE,
    claim,
    decide_below,
    decide_equal,
    seeds_to_decide,
    summarize,
)
from digestlab.configs import GPTConfig
from digestlab.data import CorpusSplits, build_splits, torch_source
from digestlab.device import device_name, pick_device, seed_everything
from digestlab.experiments import ExperimentError, Report, RunContext
from digestlab.experiments.cla import VARIANTS, Params
from digestlab.nn import GPT, share_initial_weights
from digestlab.objectives import language_model
from digestlab.train import Objective, TrainResult, map_runs, train

# The paper's 1B-parameter results (its Table of validation perplexities, bf16 KV bytes/token).
PAPER_1B = [
    ["H128-MQA", 13.54, 10240],
    ["H128-MQA-CLA2", 13.60, 5120],
    ["H64-MQA", 13.81, 5120],
]

# The paired claims: (id, design a, design b, bound on ppl(a) / ppl(b), text, expected).
PAIRED_CLAIMS = (
    ("cla2-matches-mqa", "MQA-CLA2", "MQA", 1.02,
     {"ko": "MQA-CLA2의 perplexity는 같은 head_dim의 MQA보다 2% 넘게 나쁘지 않다",
      "en": "MQA-CLA2's perplexity is no more than 2% above MQA's at the same head_dim"},
     "ppl(MQA-CLA2) / ppl(MQA) < 1.02"),
    ("cla2-beats-smaller-heads", "MQA-CLA2", "MQA d/2", 1.0,
     {"ko": "같은 KV 바이트에서 MQA-CLA2(d)가 MQA(d/2)보다 perplexity가 낮다",
      "en": "At equal KV bytes per token, MQA-CLA2 (d) has lower perplexity than MQA (d/2)"},
     "ppl(MQA-CLA2) / ppl(MQA d/2) < 1"),
    ("cla2-beats-cla3", "MQA-CLA2", "MQA-CLA3", 1.0,
     {"ko": "MQA-CLA2가 MQA-CLA3보다 perplexity가 낮다",
      "en": "MQA-CLA2 has lower perplexity than MQA-CLA3"},
     "ppl(MQA-CLA2) / ppl(MQA-CLA3) < 1"),
)


def variant_config(name: str, params: Params) -> GPTConfig:
    """The model config of one design at the given scale."""
    base = params.model
    named = {"half": base.head_dim // 2, "latent": params.latent, "rope": params.rope}
    changes = {k: named.get(v, v) if isinstance(v, str) else v for k, v in VARIANTS[name].items()}
    return dataclasses.replace(base, **changes)


def initial_states(params: Params, seed: int) -> list[dict[str, torch.Tensor]]:
    """Each design's initial weights for one seed, in params.designs order; with common_init,
    a parameter whose name and shape an earlier design has starts from that design's values."""
    models = []
    for name in params.designs:
        seed_everything(seed)
        models.append(GPT(variant_config(name, params)))
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


def _curve(points: list[tuple[int, float]], every: int, tokens_per_step: int) -> list[list]:
    """[tokens seen, mean loss] over each block of `every` steps of a per-step curve."""
    out = []
    for start in range(0, len(points), every):
        block = points[start:start + every]
        out.append([(block[-1][0] + 1) * tokens_per_step, sum(v for _, v in block) / len(block)])
    return out


def train_design(name: str, seed: int, params: Params, state: dict[str, torch.Tensor],
                 splits: CorpusSplits) -> tuple[GPT, TrainResult, Objective]:
    """Train one design of one seed from the given initial weights, as the experiment does;
    returns the trained model, what the loop measured and the objective (its validation
    batches)."""
    device = pick_device()
    model = GPT(variant_config(name, params))
    model.load_state_dict(state)
    objective = language_model(model, splits.train, params.batch_size, params.seq_len,
                               splits.val, params.eval_batches)
    cfg = dataclasses.replace(params.train, seed=seed)
    result = train(model, objective, cfg, device,
                   log=lambda line: print(f"[{name} seed {seed}] {line}", flush=True))
    if not math.isfinite(result.val_loss):
        raise ExperimentError(f"{name} seed {seed} diverged: validation loss {result.val_loss}")
    return model, result, objective


def _train_one(job: tuple[str, int, Params, dict, CorpusSplits]) -> dict:
    name, seed, params, _, _ = job
    model, result, objective = train_design(*job)
    tokens_per_step = params.batch_size * params.seq_len
    return {
        "variant": name, "seed": seed, "val_ppl": result.val_perplexity,
        "train_loss": result.final_train_loss, "tokens_per_s": result.items_per_s,
        "mfu": result.mfu, "mfu_spec": result.mfu_spec,
        "params": model.num_params(), "kv_bytes": model.kv_bytes_per_token(),
        "train_curve": _curve(result.loss_curve, params.curve_every, tokens_per_step),
        "val_curve": [[step * tokens_per_step, loss] for step, loss in result.val_curve],
        "window_losses": window_losses(model, objective.val_batches),
    }


def run(params: Params, ctx: RunContext) -> Report:
    """Train every design for every seed and decide the paper's four claims."""
    device = pick_device()
    splits = corpus_splits(params)
    ctx.log(f"corpus {params.corpus} {splits.sha256[:12]}: {len(splits.train):,} train / "
            f"{len(splits.val):,} validation tokens from {splits.n_train_documents}+"
            f"{splits.n_val_documents} documents")
    jobs = [(name, seed, params, state, splits)
            for seed in params.seeds
            for name, state in zip(params.designs, initial_states(params, seed), strict=True)]
    workers = max(1, ctx.threads) if device.type == "cpu" else 1
    runs = map_runs(_train_one, jobs, workers, device)

    by_variant = {name: [r for r in runs if r["variant"] == name] for name in params.designs}
    variants = {}
    for name, rs in by_variant.items():
        ppl = [r["val_ppl"] for r in rs]
        stats = summarize(ppl)
        variants[name] = {
            "config": {k: v for k, v in dataclasses.asdict(variant_config(name, params)).items()
                       if k in ("n_heads", "n_kv_heads", "head_dim", "kv_share",
                                "kv_latent_dim", "kv_rope_dim")},
            "params": rs[0]["params"],
            "kv_bytes_per_token": rs[0]["kv_bytes"],
            "val_ppl": ppl,
            "val_ppl_mean": stats["mean"],
            "val_ppl_sd": stats["sd"],
            "bits_per_byte_mean": summarize([math.log2(x) for x in ppl])["mean"],
            "train_loss": [r["train_loss"] for r in rs],
            "curves": [{"seed": r["seed"], "train": r["train_curve"], "val": r["val_curve"]}
                       for r in rs],
        }
    windows = {(r["variant"], r["seed"]): r["window_losses"] for r in runs}
    claims = decide_claims(variants, evaluation_noise(windows, params.seeds))
    means = [v["val_ppl_mean"] for v in variants.values()]
    paired_sds = [c["measured"]["paired sd"] for c in claims if "paired sd" in c["measured"]]
    figures = {
        "ppl_vs_kv_bytes": {"designs": {name: {k: v[k] for k in ("kv_bytes_per_token",
                                                                 "val_ppl_mean", "val_ppl_sd")}
                                        for name, v in variants.items()},
                            "paper": PAPER_1B},
        "loss_curves": {name: v["curves"] for name, v in variants.items()},
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
            "variants": variants,
        },
        claims=claims,
        figures=figures,
        timing={name: _mean_throughput(rs) for name, rs in by_variant.items()}
        | {"workers": workers},
        reference={"columns": ["variant", "val ppl", "KV bytes/token"], "rows": PAPER_1B},
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
    for _, a, b, *_ in PAIRED_CLAIMS:
        se2 = [(windows[a, s] - windows[b, s]).var().item() / len(windows[a, s]) for s in seeds]
        noise[a, b] = math.sqrt(sum(se2) / len(se2))
    return noise


def decide_claims(variants: dict, eval_noise: dict[tuple[str, str], float] | None = None
                  ) -> list[dict]:
    """The paper's four claims, each decided from the measured numbers: the paired ones from
    the per-seed log-perplexity ratios, against the log of the bound."""
    kv = {name: v["kv_bytes_per_token"] for name, v in variants.items()}
    claims = [claim(
        "cla2-halves-kv",
        {"ko": "MQA-CLA2는 MQA의 토큰당 KV 캐시 바이트를 절반으로 줄인다",
         "en": "MQA-CLA2 halves MQA's KV-cache bytes per token"},
        {"MQA-CLA2 bytes": kv["MQA-CLA2"], "MQA bytes": kv["MQA"],
         "ratio": kv["MQA-CLA2"] / kv["MQA"]},
        "ratio = 0.5",
        decide_equal(kv["MQA-CLA2"] / kv["MQA"], 0.5),
    )]
    for claim_id, a, b, bound, text, expected in PAIRED_CLAIMS:
        ratios = [x / y for x, y in zip(variants[a]["val_ppl"], variants[b]["val_ppl"],
                                        strict=True)]
        verdict, stats = decide_below([math.log(r) for r in ratios], math.log(bound))
        measured = {
            "per-seed ratios": ratios,
            "mean ratio": math.exp(stats["mean"]),
            "paired sd": stats["sd"],  # of log(ppl_a / ppl_b), about a relative spread
            "95% band": None if stats["low"] is None
            else [math.exp(stats["low"]), math.exp(stats["high"])],
            "bound": bound,
        }
        if eval_noise is not None:
            measured["evaluation noise"] = eval_noise[a, b]
        if verdict == INCONCLUSIVE and stats["sd"]:
            measured["seeds to decide"] = seeds_to_decide(stats["mean"] - math.log(bound),
                                                          stats["sd"])
        claims.append(claim(claim_id, text, measured, expected, verdict))
    return claims
