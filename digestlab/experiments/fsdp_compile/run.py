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
import statistics
import tempfile
from pathlib import Path

import torch

from digestlab.claims import Claim, paired_ratios, summarize
from digestlab.device import device_name, pick_device
from digestlab.experiments import Report, RunContext
from digestlab.experiments.fsdp_compile import (
    COMPILE_KEEPS_THE_LOSS,
    COMPILE_SPEEDS_UP,
    FSDP_WORLD_SIZE_KEEPS_THE_LOSS,
    Params,
    Setup,
    checkpoint_name,
    checkpointing_claim,
    checkpointing_step,
    setups,
)
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


def speeds(runs: dict[str, list[dict]], name: str) -> list[float]:
    """Tokens/s of each round's run of a configuration."""
    return [r["tokens_per_s"] for r in runs[name]]


def common_peak(runs: dict[str, list[dict]]) -> float:
    """The matmul peak MFU is measured against: the median of every process's measurement,
    which scatter by several percent, so that MFU differs between runs exactly as speed does."""
    return statistics.median(r["peak_flops"] for rs in runs.values() for r in rs)


def sharded_runs(runs: dict[str, list[dict]]) -> dict[int, dict]:
    """The plain FSDP run of each world size (no compile, no bf16 parameters)."""
    return {r["world"]: r for rs in runs.values() for r in rs
            if r["setup"]["fsdp"] and not r["setup"]["compile"] and not r["setup"]["bf16_params"]}


def loss_gaps(runs: dict[str, list[dict]]) -> dict:
    """Mean |Δloss| between loss curves: between consecutive eager seeds (the scale a
    difference is judged on), compiled vs eager in each round, and each FSDP world size vs
    eager from the same seed, 0."""
    eager = [r["loss_curve"] for r in runs["eager"]]
    between = [mean_abs_gap(a, b) for a, b in zip(eager, eager[1:], strict=False)]
    return {
        "between_seeds": sum(between) / len(between),
        "compile_vs_eager": [mean_abs_gap(c["loss_curve"], e)
                             for c, e in zip(runs["compile"], eager, strict=True)],
        "fsdp_vs_eager": {world: mean_abs_gap(r["loss_curve"], eager[0])
                          for world, r in sorted(sharded_runs(runs).items())},
    }


def decide_claims(params: Params, runs: dict[str, list[dict]], memory: dict[str, list[float]]
                  ) -> list[Claim]:
    """The post's four claims, decided from the measured numbers: `runs` holds each
    configuration's runs by round, `memory` the training memory (bytes) of each checkpointed
    fraction's configuration by round."""
    peak = common_peak(runs)
    eager_mfu = statistics.median(r["mfu"] * r["peak_flops"] / peak for r in runs["eager"])
    compile_speeds_up = COMPILE_SPEEDS_UP.decide(
        {"speed-up": paired_ratios(speeds(runs, "compile"), speeds(runs, "eager"))},
        unit="rounds", premises={"eager-leaves-the-matmul-units-idle": eager_mfu})

    gaps = loss_gaps(runs)
    between = gaps["between_seeds"]
    compile_keeps_the_loss = COMPILE_KEEPS_THE_LOSS.decide(
        {"loss-gap": [g / between for g in gaps["compile_vs_eager"]]}, unit="rounds")

    # Each step up in the checkpointed fraction, over the rounds that ran both fractions.
    fractions = params.checkpoint_fractions
    names = [checkpoint_name(f) for f in fractions]
    tokens = {n: speeds(runs, n)[:params.checkpoint_rounds] for n in names}
    steps = {}
    for (low, high), (lower, higher) in zip(zip(fractions, fractions[1:], strict=False),
                                            zip(names, names[1:], strict=False), strict=True):
        for quantity, values in (("memory", memory), ("tokens/s", tokens)):
            steps[checkpointing_step(quantity, low, high)] = paired_ratios(values[higher],
                                                                           values[lower])
    checkpointing = checkpointing_claim(fractions).decide(steps, unit="rounds")

    fsdp = gaps["fsdp_vs_eager"]
    fsdp_keeps_the_loss = FSDP_WORLD_SIZE_KEEPS_THE_LOSS.decide(
        {"loss-gap": [g / between for g in fsdp.values()]}, unit="runs",
        premises={"two-or-more-processes": max(fsdp)})
    return [compile_speeds_up, compile_keeps_the_loss, checkpointing, fsdp_keeps_the_loss]


def configuration_table(runs: dict[str, list[dict]], memory: dict[str, list[float]]
                        ) -> list[dict]:
    """One row per configuration: its levers and its mean speed, MFU (against `common_peak`)
    and training memory (None where it was not measured) over its runs."""
    peak = common_peak(runs)
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
            "fsdp": {str(world): r["loss_curve"] for world, r in sharded_runs(runs).items()}},
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
            "loss_gaps": loss_gaps(runs),
        },
        claims=decide_claims(params, runs, memory),
        figures=figures,
        timing={"configurations": table,
                "peak_flops": common_peak(runs),
                "memory_measured_by": "peak resident set, every allocation over 64 KiB "
                "mapped on its own" if memory_runs else "peak allocated bytes"},
        reference={"columns": ["setting", "device", "MFU (%)"], "rows": POST},
    )
