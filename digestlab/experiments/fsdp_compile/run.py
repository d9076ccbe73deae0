"""FSDP2 and torch.compile (IBM and Meta's PyTorch teams, 2024): what each lever does to
training throughput, MFU, memory and the loss.

Every configuration (eager, compiled, a fraction of blocks with activation checkpointing, FSDP2
at each world size, FSDP2 with compile, and on a GPU FSDP's bf16 mixed precision) is one run of
the one training loop in processes of its own (under `torchrun` when there are several), on
the same data and the same global batch. The single-process configurations run in rounds, one
seed per round, so the speed and memory claims rest on paired per-round ratios of runs close in
time. Loss trajectories of one seed are compared with the gap between two seeds, the scale on
which a difference would matter.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from pathlib import Path

import torch

from digestlab.claims import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    claim,
    decide_above,
    decide_below,
    seeds_to_decide,
    summarize,
)
from digestlab.device import device_name, pick_device
from digestlab.experiments import Report, RunContext
from digestlab.experiments.fsdp_compile import Params, Setup, checkpoint_name, setups
from digestlab.parallel import launch

# The post's numbers (and fms-fsdp's): MFU of Llama-style models trained with FSDP.
POST = [
    ["Llama 7B, FSDP + selective checkpointing", "A100 80GB", 57],
    ["Llama 7B, FSDP + selective checkpointing + torch.compile", "A100 80GB", 68],
    ["Llama 7B, fms-fsdp", "H100", 46],
]
WORKER = "digestlab.experiments.fsdp_compile.worker"


def run_setup(params: Params, setup: Setup, device: torch.device, workdir: Path) -> dict:
    """Run one configuration in processes of its own and return what its rank 0 measured."""
    stem = f"{setup.name}-{setup.seed}-{'memory' if setup.memory else 'speed'}".replace(" ", "_")
    job, out = workdir / f"{stem}.job.json", workdir / f"{stem}.out.json"
    job.write_text(json.dumps({"params": params.model_dump(mode="json"),
                               "setup": setup.__dict__, "device": str(device)}))
    # Memory runs: glibc maps every allocation over 64 KiB on its own and unmaps it when freed,
    # so the peak resident set follows the bytes in use.
    env = {"MALLOC_MMAP_THRESHOLD_": "65536"} if setup.memory else None
    launch(["-m", WORKER, str(job), str(out)], setup.world, env)
    return json.loads(out.read_text())


def mean_abs_gap(a: list[float], b: list[float]) -> float:
    """Mean absolute difference of two loss curves of equal length, step by step."""
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def log_ratios(a: list[float], b: list[float]) -> list[float]:
    """log(a / b) for each round: a and b ran side by side in time."""
    return [math.log(x / y) for x, y in zip(a, b, strict=True)]


def speeds(runs: dict[str, list[dict]], name: str) -> list[float]:
    """Tokens/s of each round's run of a configuration."""
    return [r["tokens_per_s"] for r in runs[name]]


def ratio_stats(log_ratios: list[float], stats: dict) -> dict:
    """A claim's measured numbers for paired log ratios: per round, mean, sd, 95% band."""
    return {
        "per-round ratios": [math.exp(r) for r in log_ratios],
        "mean ratio": math.exp(stats["mean"]),
        "paired sd": stats["sd"],
        "95% band": None if stats["low"] is None
        else [math.exp(stats["low"]), math.exp(stats["high"])],
    }


def combine(verdicts: list[str]) -> str:
    """Reproduced when every part is, not reproduced when any part is not, else inconclusive."""
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    return REPRODUCED if all(v == REPRODUCED for v in verdicts) else INCONCLUSIVE


def decide_claims(params: Params, runs: dict[str, list[dict]], memory: dict[str, list[float]]
                  ) -> list[dict]:
    """The post's four claims, each decided from the measured numbers: `runs` holds each
    configuration's runs by round, `memory` the training memory (bytes) of each checkpointed
    fraction's configuration by round."""
    claims = []

    # 1. compile raises tokens/s by at least compile_gain: paired per-round ratios.
    logs = log_ratios(speeds(runs, "compile"), speeds(runs, "eager"))
    verdict, stats = decide_above(logs, math.log(params.compile_gain))
    measured = ratio_stats(logs, stats) | {"bound": params.compile_gain}
    if verdict == INCONCLUSIVE and stats["sd"]:
        rounds = seeds_to_decide(stats["mean"] - math.log(params.compile_gain), stats["sd"])
        if rounds is not None:  # None: the mean sits on the bound, no number of rounds would do
            measured["rounds to decide"] = rounds
    claims.append(claim(
        "compile-speeds-up",
        {"ko": f"torch.compile이 초당 학습 토큰 수를 {params.compile_gain - 1:.0%} 이상 높인다",
         "en": f"torch.compile raises training tokens/s by at least "
               f"{params.compile_gain - 1:.0%}"},
        measured, f"tok/s(compile) / tok/s(eager) > {params.compile_gain:g}", verdict,
        from_clock=True))

    # 2 and 4. Loss trajectories of one seed agree, on the scale of the gap between seeds.
    eager = [r["loss_curve"] for r in runs["eager"]]
    between = [mean_abs_gap(a, b) for a, b in zip(eager, eager[1:], strict=False)]
    between_mean = sum(between) / len(between)

    def agreement(gaps: list[float]) -> tuple[str, dict]:
        ratios = [g / between_mean for g in gaps]
        verdict = REPRODUCED if max(ratios) < params.agreement else NOT_REPRODUCED
        return verdict, {"mean |Δloss|, same seed": gaps,
                         "mean |Δloss|, between seeds": between_mean,
                         "ratio": ratios, "bound": params.agreement}

    gaps = [mean_abs_gap(c["loss_curve"], e)
            for c, e in zip(runs["compile"], eager, strict=True)]
    verdict, measured = agreement(gaps)
    claims.append(claim(
        "compile-keeps-the-loss",
        {"ko": "같은 시드에서 컴파일한 학습과 eager 학습의 손실 곡선이 일치한다",
         "en": "Compiled and eager training follow the same loss curve from the same seed"},
        measured,
        f"mean |Δloss| (same seed) < {params.agreement:g} × mean |Δloss| (between seeds)",
        verdict))

    # 3. More checkpointing: less memory, fewer tokens/s, at each step up in the fraction.
    names = [checkpoint_name(f) for f in params.checkpoint_fractions]
    tokens = {n: speeds(runs, n)[:params.checkpoint_rounds] for n in names}
    verdicts, measured = [], {
        "checkpointed fractions": params.checkpoint_fractions,
        "training memory (MB)": [summarize(memory[n])["mean"] / 1e6 for n in names],
        "tokens/s": [summarize(tokens[n])["mean"] for n in names],
    }
    memory_bands, speed_bands = [], []
    for lower, higher in zip(names, names[1:], strict=False):
        for values, bands in ((memory, memory_bands), (tokens, speed_bands)):
            verdict, stats = decide_below(log_ratios(values[higher], values[lower]), 0.0)
            verdicts.append(verdict)
            bands.append(None if stats["low"] is None
                         else [math.exp(stats["low"]), math.exp(stats["high"])])
    measured |= {"memory ratio 95% bands (each step up)": memory_bands,
                 "tokens/s ratio 95% bands (each step up)": speed_bands}
    claims.append(claim(
        "checkpointing-trades-speed-for-memory",
        {"ko": "활성화 체크포인팅을 더 많은 블록에 걸수록 최대 메모리와 처리량이 모두 줄어든다",
         "en": "Checkpointing more blocks lowers both peak memory and throughput"},
        measured, "each step up in the fraction: memory ratio < 1 and tokens/s ratio < 1",
        combine(verdicts), from_clock=True))

    # 4. FSDP at world size 2 follows world size 1 at the same global batch.
    sharded = {r["world"]: r for rs in runs.values() for r in rs
               if r["setup"]["fsdp"] and not r["setup"]["compile"]
               and not r["setup"]["bf16_params"]}
    text = {"ko": "같은 전역 배치에서 FSDP 2개 프로세스의 손실 곡선이 1개 프로세스와 일치한다",
            "en": "FSDP on two processes follows the single-process loss curve at the same "
                  "global batch"}
    expected = (f"mean |Δloss| (world 2 vs 1) < {params.agreement:g} × mean |Δloss| "
                f"(between seeds)")
    if 2 in sharded:
        verdict, measured = agreement([mean_abs_gap(sharded[2]["loss_curve"],
                                                    sharded[1]["loss_curve"])])
        measured["mean |Δloss|, FSDP x1 vs eager"] = mean_abs_gap(sharded[1]["loss_curve"],
                                                                 eager[0])
    else:  # one GPU holds one NCCL rank
        verdict, measured = INCONCLUSIVE, {"world sizes run": sorted(sharded)}
    claims.append(claim("fsdp-world-size-keeps-the-loss", text, measured, expected, verdict))
    return claims


def configuration_table(runs: dict[str, list[dict]], memory: dict[str, list[float]]
                        ) -> list[dict]:
    """One row per configuration: its levers and its mean speed, MFU and training memory
    (None where it was not measured) over its runs. Each process measures the matmul peak
    itself, and those measurements scatter by several percent; MFU here is against their median,
    so that MFU differs between configurations exactly as their speeds do."""
    peak = statistics.median(r["peak_flops"] for rs in runs.values() for r in rs)
    rows = []
    for name, rs in runs.items():
        setup = rs[0]["setup"]

        def mean(key: str, rs=rs) -> float | None:
            values = [r[key] for r in rs if r[key] is not None]
            return summarize(values)["mean"] if values else None

        mfu = [r["mfu"] * r["peak_flops"] / peak for r in rs if r["mfu"] is not None]

        rows.append({
            "name": name, "world": setup["world"], "compile": setup["compile"],
            "checkpointed_blocks": rs[0]["checkpointed_blocks"], "fsdp": setup["fsdp"],
            "bf16_params": setup["bf16_params"], "runs": len(rs),
            "tokens_per_s": mean("tokens_per_s"),
            "tokens_per_s_runs": [r["tokens_per_s"] for r in rs],
            "step_time_ms": 1e3 * mean("step_time_s"),
            "mfu": summarize(mfu)["mean"] if mfu else None,
            "mfu_spec": mean("mfu_spec"),
            "training_memory_mb": summarize(memory[name])["mean"] / 1e6 if name in memory
            else None,
            "wall_time_s": mean("wall_time_s"),
        })
    return rows


def run(params: Params, ctx: RunContext) -> Report:
    """Run every configuration, decide the claims, draw the figures."""
    device = pick_device("auto")
    gpu = device.type == "cuda"
    devices = torch.cuda.device_count() if gpu else max(params.world_sizes)
    plan = setups(params, gpu, devices)
    runs: dict[str, list[dict]] = {}  # configuration -> its timed runs, by round
    memory_runs: dict[str, list[dict]] = {}  # configuration -> its memory runs (CPU), by round
    with tempfile.TemporaryDirectory(prefix="fsdp-compile-") as workdir:
        for i, setup in enumerate(plan, 1):
            kind = "memory" if setup.memory else "timed"
            ctx.log(f"run {i}/{len(plan)}: {setup.name}, seed {setup.seed}, {kind}")
            measured = run_setup(params, setup, device, Path(workdir))
            (memory_runs if setup.memory else runs).setdefault(setup.name, []).append(measured)
    memory = {name: [r["training_memory_bytes"] for r in rs]
              for name, rs in (memory_runs or runs).items()}

    table = configuration_table(runs, memory)
    fractions = params.checkpoint_fractions
    names = [checkpoint_name(f) for f in fractions]
    figures = {
        "throughput": [{k: row[k] for k in ("name", "tokens_per_s", "tokens_per_s_runs", "mfu")}
                       for row in table],
        "checkpointing": {
            "fractions": fractions,
            "memory_mb": [[memory[n][i] / 1e6 for n in names]
                          for i in range(len(memory[names[0]]))],
            "tokens_per_s": [[runs[n][i]["tokens_per_s"] for n in names]
                             for i in range(params.checkpoint_rounds)]},
        "loss_curves": {
            "eager": [r["loss_curve"] for r in runs["eager"][:2]],
            "compile": [runs["compile"][0]["loss_curve"]],
            "fsdp": {str(r["world"]): r["loss_curve"] for rs in runs.values() for r in rs
                     if r["setup"]["fsdp"] and not r["setup"]["compile"]
                     and not r["setup"]["bf16_params"]}},
    }
    first = runs["eager"][0]
    tokens_per_step = params.batch_size * params.seq_len
    return Report(
        seeds=list(range(params.repeats)),
        device=device_name(device),
        metrics={
            "parameters": first["n_params"],
            "tokens_per_step": tokens_per_step,
            "train_tokens_per_run": params.train.steps * tokens_per_step,
            "loss_curves": {name: [r["loss_curve"] for r in rs] for name, rs in runs.items()},
        },
        claims=decide_claims(params, runs, memory),
        figures=figures,
        timing={"configurations": table,
                "peak_flops": statistics.median(r["peak_flops"] for rs in runs.values()
                                                for r in rs),
                "memory_measured_by": "peak resident set, every allocation over 64 KiB "
                "mapped on its own" if memory_runs else "peak allocated bytes"},
        reference={"columns": ["setting", "device", "MFU (%)"], "rows": POST},
    )
