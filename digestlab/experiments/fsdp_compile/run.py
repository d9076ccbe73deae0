"""FSDP2 and torch.compile (IBM and Meta's PyTorch teams, 2024): what each lever does to
training throughput, MFU, memory and the loss.

Every timed configuration (eager, compiled, and compiled with every second or every block
checkpointed; on a GPU also FSDP's bf16 mixed precision) is one run of the one training loop in
processes of its own, on the same data and the same global batch. They run in rounds, one seed
per round, so the speed and memory claims rest on paired per-round ratios of runs close in
time. Whether a lever keeps the loss is asked of a small model trained 200 steps in bf16
autocast from several seeds, eager, compiled and under FSDP at each world size: what the lever
shifts in the final validation loss is judged against what a change of seed does.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from digestlab.claims import Claim, paired_ratios, summarize
from digestlab.device import device_name, pick_device
from digestlab.experiments import Report, RunContext
from digestlab.experiments.fsdp_compile import (
    CHECKPOINTING_UNDER_A_CAP,
    COMPILE_KEEPS_THE_LOSS,
    COMPILE_SPEEDS_UP,
    FSDP_WORLD_SIZE_KEEPS_THE_LOSS,
    FULL,
    SELECTIVE,
    Params,
    Setup,
    checkpoint_name,
    parity_setups,
    setups,
)
from digestlab.experiments.fsdp_compile.worker import run_plan
from digestlab.parallel import launch

# The post's numbers (and fms-fsdp's): MFU of Llama-style models trained with FSDP.
POST = [
    ["Llama 7B, FSDP + selective checkpointing", "A100 80GB", 57],
    ["Llama 7B, FSDP + selective checkpointing + torch.compile", "A100 80GB", 68],
    ["Llama 7B, fms-fsdp", "H100", 46],
]
WORKER = "digestlab.experiments.fsdp_compile.worker"


def run_job(params: Params, plan: list[Setup], device: torch.device, workdir: Path
            ) -> list[dict]:
    """Run setups one after the other in processes of their own (all of one world size) and
    return what rank 0 measured in each."""
    first = plan[0]
    kind = "memory" if first.memory else "parity" if first.parity else "speed"
    stem = f"{first.name}-{first.seed}-{kind}".replace(" ", "_").replace("+", "")
    job, out = workdir / f"{stem}.job.json", workdir / f"{stem}.out.json"
    job.write_text(json.dumps({"params": params.model_dump(mode="json"),
                               "setups": [s.__dict__ for s in plan], "device": str(device)}))
    # Memory runs: glibc maps every allocation over 64 KiB on its own and unmaps it when freed,
    # so the peak resident set follows the bytes in use.
    env = {"MALLOC_MMAP_THRESHOLD_": "65536"} if first.memory else None
    launch(["-m", WORKER, str(job), str(out)], first.world, env)
    return json.loads(out.read_text())


def speeds(runs: dict[str, list[dict]], name: str) -> list[float]:
    """Tokens/s of each round's run of a configuration."""
    return [r["tokens_per_s"] for r in runs[name]]


def common_peak(runs: dict[str, list[dict]]) -> float:
    """The matmul peak MFU is measured against: the median of every process's measurement,
    which scatter by several percent, so that MFU differs between runs exactly as speed does."""
    return statistics.median(r["peak_flops"] for rs in runs.values() for r in rs)


def parity_losses(parity: list[dict]) -> dict[str, list[float]]:
    """The final validation loss of each parity configuration, by seed."""
    out: dict[str, list[float]] = {}
    for r in sorted(parity, key=lambda r: r["setup"]["seed"]):
        out.setdefault(r["setup"]["name"], []).append(r["val_loss"])
    return out


def shifts(losses: dict[str, list[float]]) -> dict:
    """Per seed, what compile and FSDP on the most processes shift in the final loss from
    eager's, in sds over seeds of the eager final loss; with that sd and the world size. With
    no FSDP run (one GPU) the world is 1, and eager stands in: no shift."""
    spread = statistics.stdev(losses["eager"])
    worlds = [int(name.removeprefix("FSDP x")) for name in losses if name.startswith("FSDP x")]
    most = f"FSDP x{max(worlds)}" if worlds else "eager"

    def shift(name: str) -> list[float]:
        return [(x - e) / spread for x, e in zip(losses[name], losses["eager"], strict=True)]

    return {"seed_sd": spread, "compile": shift("compile"), "world": max(worlds, default=1),
            "fsdp": shift(most)}


def decide_claims(runs: dict[str, list[dict]], memory: dict[float, list[float]],
                  losses: dict[str, list[float]]) -> list[Claim]:
    """The post's claims, decided from the measured numbers: `runs` holds each timed
    configuration's runs by round, `memory` the training memory (bytes) of each checkpointed
    fraction by round, `losses` each parity configuration's final loss by seed."""
    peak = common_peak(runs)
    eager_mfu = statistics.median(r["mfu"] * r["peak_flops"] / peak for r in runs["eager"])
    compile_speeds_up = COMPILE_SPEEDS_UP.decide(
        {"speed-up": paired_ratios(speeds(runs, "compile"), speeds(runs, "eager"))},
        unit="rounds", premises={"eager-leaves-the-matmul-units-idle": eager_mfu})

    shift = shifts(losses)
    compile_keeps_the_loss = COMPILE_KEEPS_THE_LOSS.decide(
        {side: shift["compile"] for side in COMPILE_KEEPS_THE_LOSS.comparisons},
        unit="training seeds", base_models=None)
    fsdp_keeps_the_loss = FSDP_WORLD_SIZE_KEEPS_THE_LOSS.decide(
        {side: shift["fsdp"] for side in FSDP_WORLD_SIZE_KEEPS_THE_LOSS.comparisons},
        unit="training seeds", base_models=None,
        premises={"two-or-more-processes": shift["world"]})

    selective, full = checkpoint_name(SELECTIVE, True), checkpoint_name(FULL, True)
    rounds = len(memory[SELECTIVE])
    under_a_cap = CHECKPOINTING_UNDER_A_CAP.decide({
        "fits the cap": paired_ratios(memory[SELECTIVE], memory[0.0][:rounds]),
        "faster than checkpointing every block": paired_ratios(speeds(runs, selective),
                                                               speeds(runs, full)),
    }, unit="rounds")
    return [compile_speeds_up, compile_keeps_the_loss, under_a_cap, fsdp_keeps_the_loss]


def configuration_table(runs: dict[str, list[dict]], memory: dict[str, list[float]]
                        ) -> list[dict]:
    """One row per timed configuration: its levers and its mean speed, MFU (against
    `common_peak`) and training memory (None where it was not measured) over its runs."""
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


def run_parity(params: Params, device: torch.device, devices: int, workdir: Path, log,
               first: Sequence[Setup] = ()) -> list[dict]:
    """The loss-parity jobs; on the CPU side by side, since nothing in them is timed. With
    `first` (`params.one_process`, the smoke scale: every timed and memory run), the
    single-process job runs those before its parity runs, and in this process rather than one
    of its own: every code path in seconds, but timings and memory peaks that are not each
    run's own. Returns what every run measured."""
    alone, *sharded = parity_setups(params, devices)
    jobs = [[*first, *alone], *sharded]
    if first:
        log(f"{len(first)} timed and memory runs first in the single-process parity job, "
            "in this process")
    for plan in jobs:
        log(f"parity: {', '.join(dict.fromkeys(s.name for s in plan if s.parity))} on "
            f"{plan[0].world} process(es), {params.parity.seeds} seeds")

    def measure(plan: list[Setup]) -> list[dict]:
        if first and plan is jobs[0]:
            return run_plan(params, plan, device)
        return run_job(params, plan, device, workdir)

    side_by_side = len(jobs) if device.type == "cpu" else 1
    with ThreadPoolExecutor(side_by_side) as pool:
        return [r for measured in pool.map(measure, jobs) for r in measured]


def run(params: Params, ctx: RunContext) -> Report:
    """Run every configuration, decide the claims, draw the figures."""
    device = pick_device("auto")
    gpu = device.type == "cuda"
    devices = torch.cuda.device_count() if gpu else max(params.world_sizes)
    plan = setups(params, gpu)
    with tempfile.TemporaryDirectory(prefix="fsdp-compile-") as tmp:
        workdir = Path(tmp)
        measured = []
        for i, setup in enumerate([] if params.one_process else plan, 1):
            kind = "memory" if setup.memory else "timed"
            ctx.log(f"run {i}/{len(plan)}: {setup.name}, seed {setup.seed}, {kind}")
            measured += run_job(params, [setup], device, workdir)
        measured += run_parity(params, device, devices, workdir, ctx.log,
                               first=plan if params.one_process else [])
    runs: dict[str, list[dict]] = {}  # configuration -> its timed runs, by round
    memory_runs: dict[str, list[dict]] = {}  # configuration -> its memory runs (CPU), by round
    parity = [m for m in measured if m["setup"]["parity"]]
    for m in measured:
        if not m["setup"]["parity"]:
            into = memory_runs if m["setup"]["memory"] else runs
            into.setdefault(m["setup"]["name"], []).append(m)
    memory = {name: [r["training_memory_bytes"] for r in rs]
              for name, rs in (memory_runs or runs).items()}
    # each checkpointed fraction's memory: eager memory runs on a CPU, compiled timed runs on a
    # GPU (see `setups`)
    by_fraction = {f: memory[checkpoint_name(f, compiled=not memory_runs)]
                   for f in (0.0, SELECTIVE, FULL)}
    losses = parity_losses(parity)
    shift = shifts(losses)

    table = configuration_table(runs, memory)
    fractions = [0.0, SELECTIVE, FULL]
    compiled = [checkpoint_name(f, True) for f in fractions]
    no_checkpointing = summarize(by_fraction[0.0])["mean"]
    cap = CHECKPOINTING_UNDER_A_CAP.comparisons["fits the cap"].bound.value
    figures = {
        "throughput": [{k: row[k] for k in ("name", "tokens_per_s", "tokens_per_s_runs", "mfu")}
                       for row in table],
        "checkpointing": {
            "fractions": fractions,
            "memory_mb": [[by_fraction[f][i] / 1e6 for f in fractions]
                          for i in range(len(by_fraction[SELECTIVE]))],
            "cap_mb": cap * no_checkpointing / 1e6,
            "tokens_per_s": [[runs[n][i]["tokens_per_s"] for n in compiled]
                             for i in range(params.repeats)]},
        "parity": {"losses": losses, "shifts": shift},
    }
    first = runs["eager"][0]
    tokens_per_step = params.batch_size * params.seq_len
    parity_run = next(r for r in parity if r["setup"]["name"] == "eager")
    return Report(
        seeds=list(range(params.repeats)),
        device=device_name(device),
        metrics={
            "parameters": first["n_params"],
            "tokens_per_step": tokens_per_step,
            "train_tokens_per_run": params.train.steps * tokens_per_step,
            "parity": {
                "parameters": parity_run["n_params"],
                "tokens_per_step": params.parity.batch_size * params.parity.seq_len,
                "final_loss": losses,
                "shifts": shift,
                "loss_curves": {name: [r["loss_curve"] for r in parity
                                       if r["setup"]["name"] == name and r["setup"]["seed"] == 0]
                                for name in losses},
            },
        },
        claims=decide_claims(runs, by_fraction, losses),
        figures=figures,
        timing={"configurations": table,
                "peak_flops": common_peak(runs),
                "training_memory_mb": {f"{f:g}": [m / 1e6 for m in by_fraction[f]]
                                       for f in fractions},
                "memory_measured_by": "peak resident set, every allocation over 64 KiB "
                "mapped on its own" if memory_runs else "peak allocated bytes"},
        reference={"columns": ["setting", "device", "MFU (%)"], "rows": POST},
    )
