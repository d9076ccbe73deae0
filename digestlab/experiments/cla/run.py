"""Cross-Layer Attention (Brandon et al. 2024, arXiv 2405.12981): KV-cache bytes against perplexity.

Seven attention designs are trained from scratch with the same data, tokens, steps and learning
rate: MHA, GQA, MQA with head dim d and d/2, MQA-CLA2 and MQA-CLA3 (K/V shared by groups of two
or three adjacent layers), and a DeepSeek-V2-style latent KV. Each seed trains every design on the
same batches, so designs are compared by paired per-seed perplexity ratios.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from digestlab.claims import claim, decide_below, decide_equal, summarize
from digestlab.configs import GPTConfig
from digestlab.data import build_splits
from digestlab.device import device_name, pick_device, seed_everything
from digestlab.experiments import ExperimentError, Report, RunContext
from digestlab.experiments.cla import Params
from digestlab.figures import log_x, new_figure, save_svg
from digestlab.nn import GPT
from digestlab.objectives import language_model
from digestlab.train import map_runs, train

# The designs, as changes to the base config (MHA). "d" is the base head_dim.
VARIANTS: dict[str, dict] = {
    "MHA": {},
    "GQA-4": {"n_kv_heads": 4},
    "MQA": {"n_kv_heads": 1},
    "MQA d/2": {"n_kv_heads": 1, "head_dim": "half"},
    "MQA-CLA2": {"n_kv_heads": 1, "kv_share": 2},
    "MQA-CLA3": {"n_kv_heads": 1, "kv_share": 3},
    "MLA": {"kv_latent_dim": "latent", "kv_rope_dim": "rope"},
}

# The paper's 1B-parameter results (its Table of validation perplexities, bf16 KV bytes/token).
PAPER_1B = [
    ["H128-MQA", 13.54, 10240],
    ["H128-MQA-CLA2", 13.60, 5120],
    ["H64-MQA", 13.81, 5120],
]

def variant_config(name: str, params: Params) -> GPTConfig:
    """The model config of one design at the given scale."""
    base = params.model
    named = {"half": base.head_dim // 2, "latent": params.latent, "rope": params.rope}
    changes = {k: named.get(v, v) if isinstance(v, str) else v for k, v in VARIANTS[name].items()}
    return dataclasses.replace(base, **changes)


def _train_one(job: tuple[str, int, Params, torch.Tensor, torch.Tensor]) -> dict:
    name, seed, params, train_tokens, val_tokens = job
    device = pick_device()
    seed_everything(seed)
    model = GPT(variant_config(name, params))
    objective = language_model(model, train_tokens, params.batch_size, params.seq_len,
                               val_tokens, params.eval_batches)
    cfg = dataclasses.replace(params.train, seed=seed)
    result = train(model, objective, cfg, device,
                   log=lambda line: print(f"[{name} seed {seed}] {line}", flush=True))
    if not math.isfinite(result.val_loss):
        raise ExperimentError(f"{name} seed {seed} diverged: validation loss {result.val_loss}")
    return {
        "variant": name, "seed": seed, "val_ppl": result.val_perplexity,
        "train_loss": result.final_train_loss, "tokens_per_s": result.items_per_s,
        "mfu": result.mfu, "mfu_spec": result.mfu_spec,
        "params": model.num_params(), "kv_bytes": model.kv_bytes_per_token(),
    }


def run(params: Params, ctx: RunContext) -> Report:
    """Train every design for every seed and decide the paper's four claims."""
    device = pick_device()
    splits = build_splits(params.n_documents, seed=0)
    ctx.log(f"corpus {splits.sha256[:12]}: {len(splits.train):,} train / {len(splits.val):,} "
            f"validation tokens from {splits.n_train_documents}+{splits.n_val_documents} documents")
    jobs = [(name, seed, params, splits.train, splits.val)
            for seed in params.seeds for name in VARIANTS]
    workers = max(1, ctx.threads) if device.type == "cpu" else 1
    runs = map_runs(_train_one, jobs, workers, device)

    by_variant = {name: [r for r in runs if r["variant"] == name] for name in VARIANTS}
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
            "train_loss": [r["train_loss"] for r in rs],
        }
    claims = decide_claims(variants)
    figure = plot_front(variants, ctx.figures_dir / "ppl_vs_kv_bytes.svg")
    return Report(
        seeds=list(params.seeds),
        device=device_name(device),
        metrics={"corpus_sha256": splits.sha256, "train_tokens_per_run":
                 params.train.steps * params.batch_size * params.seq_len,
                 "variants": variants},
        claims=claims,
        figures=[figure],
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


def _ratios(variants: dict, a: str, b: str) -> list[float]:
    """Per-seed perplexity ratios a / b (same seed, same batches)."""
    return [x / y for x, y in zip(variants[a]["val_ppl"], variants[b]["val_ppl"], strict=True)]


def decide_claims(variants: dict) -> list[dict]:
    """The paper's four claims, each decided from the measured numbers."""
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
    for claim_id, a, b, bound, text, expected in (
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
    ):
        ratios = _ratios(variants, a, b)
        verdict, stats = decide_below(ratios, bound)
        measured = {"mean ratio": stats["mean"], "sd": stats["sd"],
                    "95% lower": stats["low"], "95% upper": stats["high"]}
        claims.append(claim(claim_id, text, measured, expected, verdict))
    return claims


def plot_front(variants: dict, path) -> str:
    """Validation perplexity against KV bytes per token (log x), ours beside the paper's."""
    fig, (ours, paper) = new_figure(ncols=2, width=5.2, height=3.8)
    # Designs with equal KV bytes (MQA d/2 and MQA-CLA2) share an x: stack their labels.
    by_kv = sorted(variants, key=lambda n: (variants[n]["kv_bytes_per_token"],
                                            -variants[n]["val_ppl_mean"]))
    for name in by_kv:
        v = variants[name]
        same_x = [n for n in by_kv if variants[n]["kv_bytes_per_token"] == v["kv_bytes_per_token"]]
        ours.errorbar(v["kv_bytes_per_token"], v["val_ppl_mean"], yerr=v["val_ppl_sd"] or 0.0,
                      fmt="o", capsize=3)
        ours.annotate(name, (v["kv_bytes_per_token"], v["val_ppl_mean"]),
                      textcoords="offset points", xytext=(5, 4 - 11 * same_x.index(name)),
                      fontsize=8)
    log_x(ours, ticks=[v["kv_bytes_per_token"] for v in variants.values()])
    ours.set(xlabel="KV-cache bytes per token (bf16)", ylabel="validation perplexity",
             title="this reproduction (mean ± sd over seeds)")
    for name, ppl, kv in PAPER_1B:
        paper.plot(kv, ppl, "s", color="tab:gray")
        paper.annotate(name, (kv, ppl), textcoords="offset points", xytext=(5, 4), fontsize=8)
    log_x(paper, ticks=[kv for _, _, kv in PAPER_1B])
    paper.set(xlabel="KV-cache bytes per token (bf16)", ylabel="validation perplexity",
              title="the paper, 1B parameters")
    return save_svg(fig, path)
