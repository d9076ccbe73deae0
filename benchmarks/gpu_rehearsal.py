"""Rehearse every experiment's gpu scale on the CPU: data at full size (timed), models counted on
the meta device, training FLOPs as H200 minutes, and one real step of each kind of model.

    python benchmarks/gpu_rehearsal.py                   # every experiment
    python benchmarks/gpu_rehearsal.py cla spo           # some of them
    python benchmarks/gpu_rehearsal.py --skip-step       # data and counts only
    python benchmarks/gpu_rehearsal.py --skip-data --batch 1 --seq 128

Minutes: the training FLOPs of every model an experiment trains (base models and the models its
analysis trains) at --peak x --mfu, beside BUDGET_S["gpu"]; what each leaves out is in its note.
Data: each distinct build timed once, times the jobs that rebuild it; a build a 1% probe
predicts over --data-limit s runs on a share and is extrapolated. Step: in a fresh process, the
experiment's own training code on the gpu widths, batch and sequence cut (layers too where
memory demands, said in the note), with the scale's compile flag and the autocast a GPU would
resolve (bf16 for "auto"); --steps steps, those past compilation timed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import SimpleNamespace

import torch

from digestlab.configs import GPTConfig, SAEConfig, TrainConfig
from digestlab.experiments import RunContext, load_spec
from digestlab.nn import GPT
from digestlab.nn.sae import SparseAutoencoder
from digestlab.train import autocast_dtype, train

EXPERIMENTS = ("cla", "fsdp_compile", "monosemanticity", "sirllm", "spo")
CPU = torch.device("cpu")


@dataclasses.dataclass
class Trained:
    """`runs` runs of one kind of model, `steps` steps each of `items` tokens (samples for an
    SAE) in rows of `seq`, each step's FLOPs times `factor` (recomputation, a second batch),
    plus `extra` FLOPs a run outside its steps (a frozen reference's forwards)."""

    kind: str
    config: GPTConfig | SAEConfig
    runs: int
    steps: int
    items: float
    seq: int = 0
    factor: float = 1.0
    extra: float = 0.0


def meta_counts(config: GPTConfig | SAEConfig, seq: int = 0) -> tuple[int, float]:
    """(parameters, training FLOPs a token or sample) of the model built on the meta device."""
    with torch.device("meta"):
        model = SparseAutoencoder(config) if isinstance(config, SAEConfig) else GPT(config)
    flops = model.flops_per_sample() if isinstance(config, SAEConfig) else \
        model.flops_per_token(seq)
    return sum(p.numel() for p in model.parameters()), flops


def cut(cfg: TrainConfig, opts: SimpleNamespace) -> TrainConfig:
    """opts.steps steps (the loop times those past compilation) in the autocast a GPU
    resolves, each (already cut) batch in one piece."""
    amp = "bf16" if autocast_dtype(cfg.autocast, torch.device("cuda")) else "none"
    return dataclasses.replace(cfg, steps=opts.steps, warmup_steps=1, log_every=1, eval_every=0,
                               autocast=amp, accumulate=1)


def timed(build, n: int, limit_s: float) -> tuple[float, str]:
    """Seconds `build(n)` takes: in full unless a 1% probe predicts over `limit_s`, else on the
    share that takes about a third of it, extrapolated linearly."""
    def seconds(k: int) -> float:
        start = time.perf_counter()
        build(k)
        return time.perf_counter() - start

    probe = min(n, max(2, n // 100))
    predicted = seconds(probe) * n / probe if n > 1 else 0.0
    if predicted <= limit_s:
        return seconds(n), "full size"
    part = max(probe, int(n * limit_s / 3 / predicted))
    return seconds(part) * n / part, f"extrapolated from {part / n:.1%}"


# Per experiment (its gpu params p): plan_<name>(p) -> (models trained, data builds as
# (label, build(n), full n, jobs that build it), note), and step_<name>(p, opts) -> ([(model,
# s/step, wall s)], note), which runs in a process of its own.

def plan_cla(p):
    from digestlab.experiments.cla import design_config
    from digestlab.experiments.cla.run import corpus_splits
    return ([Trained(d, design_config(d, p), len(p.seeds), p.train.steps,
                     p.batch_size * p.seq_len, p.seq_len) for d in p.designs],
            [(f"corpus {p.corpus}", lambda n: corpus_splits(p), 1, 1)],
            "every design x seed; leaves out validation, KV-cache decoding, window losses")


def step_cla(p, opts):
    from digestlab.experiments.cla import design_config
    from digestlab.experiments.cla.run import corpus_splits, train_design
    design = max(p.designs, key=lambda d: meta_counts(design_config(d, p), p.seq_len)[1])
    p = p.model_copy(update={"train": cut(p.train, opts), "batch_size": opts.batch,
                             "seq_len": min(opts.seq, p.seq_len), "eval_batches": 1})
    state = GPT(design_config(design, p)).state_dict()
    _, r, _ = train_design(design, 0, p, state, corpus_splits(p))
    return [(design, r.step_time_s, r.wall_time_s)], "the design of most FLOPs"


def plan_fsdp_compile(p):
    from digestlab.data import build_splits
    from digestlab.experiments.fsdp_compile import parity_setups, setups
    runs, parity = setups(p, gpu=True), parity_setups(p, devices=1)[0]
    recompute = statistics.fmean(1 + s.checkpoint / 3 for s in runs)  # checkpointed forwards
    return ([Trained("timed", p.model, len(runs), p.train.steps, p.batch_size * p.seq_len,
                     p.seq_len, recompute),
             Trained("parity", p.parity.model, len(parity), p.parity.steps,
                     p.parity.batch_size * p.parity.seq_len, p.parity.seq_len)],
            [("generated corpus (each run)", lambda n: build_splits(n, seed=0), p.n_documents,
              len(runs) + len(parity))],
            f"recomputation counted (x{recompute:.3f}); leaves out a process start, a peak "
            "measurement and block compilation per run, parity validation")


def step_fsdp_compile(p, opts):
    from digestlab.experiments.fsdp_compile import SELECTIVE, Setup, checkpoint_name
    from digestlab.experiments.fsdp_compile.worker import run_plan
    full, layers = p.model.n_layer, fitting_layers(p.model, opts.mem_fraction)
    p = p.model_copy(update={"model": dataclasses.replace(p.model, n_layer=layers),
                             "train": cut(p.train, opts), "batch_size": opts.batch,
                             "seq_len": min(opts.seq, p.seq_len),
                             "threads": torch.get_num_threads()})
    runs = run_plan(p, [Setup(checkpoint_name(SELECTIVE, True), compile=True,
                              checkpoint=SELECTIVE),
                        Setup("FSDP x1 + bf16 params", fsdp=True, bf16_params=True)], CPU)
    return [(r["setup"]["name"], r["step_time_s"], r["wall_time_s"]) for r in runs], (
        f"layers cut to {layers} of {full} to fit memory" if layers < full else "")


def plan_monosemanticity(p):
    from digestlab.data import programs
    from digestlab.experiments.monosemanticity import base_lm, heldout
    from digestlab.experiments.monosemanticity.saes import sae_config
    lm, bugs = p.lm, p.lm.bug_percent
    saes = len(p.l1_coeffs) * len(p.sae_tuning_seeds) + 2 * len(p.sae_seeds)
    return ([Trained("lm", lm.model, 1, lm.train.steps, lm.batch_size * lm.seq_len, lm.seq_len),
             Trained("sae", sae_config(p, "relu", 1.0), saes, p.sae_steps, p.sae_batch_size)],
            [("programs (lm, run)", lambda n: base_lm.corpus(
                lm.model_copy(update={"n_programs": n})), lm.n_programs, 2),
             ("activation programs", lambda n: [programs.program(p.activation_seed, i, bugs)
                                                for i in range(n)], p.activation_programs, 1),
             ("held-out pairs", lambda n: [heldout.held_out(p.model_copy(
                 update={"eval_pairs": n}), s) for s in (p.selection_seed, p.eval_seed)],
              p.eval_pairs, 1)],
            f"SAE 12 d_in width a sample; leaves out reading {p.activation_programs:,} programs "
            "and the held-out splits, splicing, steering")


def step_monosemanticity(p, opts):
    from digestlab.data import programs
    from digestlab.experiments.monosemanticity import base_lm, saes
    from digestlab.nn.sae import objective, training_config
    lm = p.lm.model_copy(update={"train": cut(p.lm.train, opts), "batch_size": opts.batch,
                                 "seq_len": min(opts.seq, p.lm.seq_len), "n_programs": 2000})
    trained = base_lm.train(lm, RunContext("gpu", torch.get_num_threads(), log=print))
    out = [("lm", trained.result.step_time_s, trained.result.wall_time_s)]
    acts = saes.harvest(trained.model, [programs.program(p.activation_seed, i, lm.bug_percent)
                                        for i in range(64)], p.layer)
    for kind in ("relu", "topk"):  # train_sae's pieces, to give its config a GPU's autocast
        sae = SparseAutoencoder(saes.sae_config(p, kind, p.l1_coeffs[0]))
        sae.fit_to(acts)
        r = train(sae, objective(sae, acts, p.sae_batch_size),
                  cut(training_config(opts.steps, p.sae_learning_rate), opts), CPU, log=print)
        out.append((f"sae {kind}", r.step_time_s, r.wall_time_s))
    return out, "SAEs through train_sae's pieces, on 64 programs' stream"


def plan_sirllm(p):
    from digestlab.data.dialogue import Mixture, training_corpora
    from digestlab.experiments.sirllm.run import MODELS, jobs_of
    lm, rb = p.lm, p.robust
    row = round(1 + sum(rb.keep_range) / 2 + rb.tail)  # as base_robust counts its tokens
    mix = Mixture(mention_percent=lm.mention_percent)
    return ([Trained("pretrain", lm.model, 1, lm.train.steps, lm.batch_size * lm.seq_len,
                     lm.seq_len),
             Trained("chat", lm.model, 1, lm.chat.steps, lm.chat_batch_size * lm.seq_len,
                     lm.seq_len),
             Trained("robust", lm.model, 1, rb.train.steps, rb.batch_size * row, row)],
            [("dialogues (lm, robust, run)", lambda n: training_corpora(n, mix),
              lm.n_dialogues, 3)],
            f"leaves out validation, probes and the analysis: "
            f"{sum(len(jobs_of(p, m)) for m in MODELS):,} streams decoded token by token")


def step_sirllm(p, opts):
    from digestlab.experiments.sirllm import base_lm, base_robust
    from digestlab.modelfile import save_model
    lm = p.lm.model_copy(update={
        "train": cut(p.lm.train, opts), "chat": cut(p.lm.chat, opts), "batch_size": opts.batch,
        "chat_batch_size": opts.batch, "seq_len": min(opts.seq, p.lm.seq_len),
        "n_dialogues": 2000, "eval_batches": 1})
    ctx = RunContext("gpu", torch.get_num_threads(), log=print)
    trained = base_lm.train(lm, ctx)
    with tempfile.TemporaryDirectory() as tmp:  # the fine-tune reads its parent's file
        path = Path(tmp) / "lm.pt"
        save_model(path, trained.model, trained.result, trained.data_sha256,
                   {"params": lm.model_dump(mode="json")}, trained.stages)
        robust = p.robust.model_copy(update={"train": cut(p.robust.train, opts),
                                             "batch_size": opts.batch, "eval_batches": 1})
        tuned = base_robust.train(robust, dataclasses.replace(ctx, bases={"lm": path}))
    stages = {"pretrain": trained.stages["pretrain"], "chat": trained.result,
              "robust": tuned.result}
    return [(name, r.step_time_s, r.wall_time_s) for name, r in stages.items()], (
        "robust rows vary in length: its timed steps may recompile (try --steps 6)")


def plan_spo(p):
    from digestlab.data import preferences
    from digestlab.experiments.spo.base_sft import examples
    from digestlab.experiments.spo.run import REPLY_TOKENS
    mean = statistics.fmean(len(a) + len(b) for a, b in examples(
        p.sft.model_copy(update={"n_examples": 2000}))[0])
    # DPO rows are padded to the widest of the batch: the longest prompt and reply
    row = REPLY_TOKENS + max(len(preferences.encode(r.prompt()))
                             for r in preferences.draw_requests(2000, 0, False))
    r2 = p.round2.steps
    dpo_steps = p.round1.steps + (len(p.alphas) + 1 + len(p.mix_shares) + 1) * r2 \
        + sum(p.curve_steps)
    # a frozen reference reads both rows of every pair once per objective (mixed and
    # Lagrangian objectives read both rounds' pairs)
    pair_sets = 1 + len(p.alphas) + 1 + len(p.curve_steps) + 1 + 2 * len(p.mix_shares) \
        + 2 * len(p.slacks)
    reference = pair_sets * p.pair_prompts * 2 * row * meta_counts(p.sft.model, row)[1] / 3
    pairs = p.batch_size * 2 * row
    return ([Trained("sft", p.sft.model, len(p.seeds), p.sft.train.steps,
                     p.sft.batch_size * mean, round(mean)),
             Trained("dpo", p.sft.model, len(p.seeds), dpo_steps, pairs, row, extra=reference),
             Trained("lagrangian", p.sft.model, len(p.seeds), len(p.slacks) * r2, pairs, row,
                     factor=2)],
            [("sft examples (replicas, run)", lambda n: examples(
                p.sft.model_copy(update={"n_examples": n})), p.sft.n_examples,
              len(p.seeds) + 1)],
            f"DPO: policy fwd+bwd on both rows ({row} tokens), reference fwd on <= "
            f"{p.pair_prompts:,} pairs an objective; leaves out sampling and scoring")


def step_spo(p, opts):
    from digestlab.data import preferences
    from digestlab.experiments.spo import base_sft
    from digestlab.experiments.spo.run import align, sample_replies
    from digestlab.objectives import dpo, lagrangian_dpo
    sft = p.sft.model_copy(update={"train": cut(p.sft.train, opts), "n_examples": 2000})
    first = base_sft.train(sft, RunContext("gpu", torch.get_num_threads(), log=print))
    ref, asked = first.model.eval(), preferences.draw_requests(256, 0, False)
    replies = [sample_replies(ref, asked, torch.Generator().manual_seed(i)) for i in range(2)]
    pairs = [(preferences.encode(q.prompt()), a, b)
             for q, a, b in zip(asked, *replies, strict=True)]
    _, r_dpo = align(ref, lambda m: dpo(m, ref, pairs, p.batch_size, p.beta), cut(p.round1, opts))
    _, r_lag = align(ref, lambda m: lagrangian_dpo(m, ref, pairs, ref, pairs, 1.0, p.batch_size,
                                                   p.beta, p.multiplier_lr), cut(p.round2, opts))
    runs = {"sft": first.result, "dpo": r_dpo, "lagrangian": r_lag}
    return [(k, r.step_time_s, r.wall_time_s) for k, r in runs.items()], (
        "pairs of sampled replies, unscored: the code path, not the labels")


def fitting_layers(config: GPTConfig, fraction: float) -> int:
    """The most blocks whose weights, gradients, AdamW moments (fp32) and bf16 copies, 20 bytes
    a parameter, fit in `fraction` of the memory available now."""
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if "MemAvailable" in line)
    one = meta_counts(dataclasses.replace(config, n_layer=1))[0]
    block = meta_counts(dataclasses.replace(config, n_layer=2))[0] - one
    return max(1, min(config.n_layer, int((fraction * available / 20 - (one - block)) / block)))


def one_step(name: str, opts: SimpleNamespace) -> dict:
    """A step of each kind of model of `name` (run in a fresh process) and the peak resident
    set; the loops' log lines are swallowed, a failure is reported, not raised. Compilation
    starts from an empty cache, as on a fresh machine."""
    with (tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as cache,
          contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            steps, note = globals()[f"step_{name}"](load_spec(name).SCALES["gpu"], opts)
        except Exception as exc:  # a code path that breaks at gpu widths is a finding
            steps, note = [], f"STEP FAILED: {type(exc).__name__}: {str(exc)[:300]}"
    return {"steps": steps, "note": note,
            "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    """Print the table of models, then a row per experiment, then the notes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", help=f"default: {' '.join(EXPERIMENTS)}")
    parser.add_argument("--skip-data", action="store_true")
    parser.add_argument("--skip-step", action="store_true")
    parser.add_argument("--batch", type=int, default=2, help="rows of the CPU step")
    parser.add_argument("--seq", type=int, default=256, help="most tokens a row of the step")
    parser.add_argument("--steps", type=int, default=3, help="steps of the CPU step (>= 2)")
    parser.add_argument("--peak", type=float, default=780e12, help="H200 bf16 FLOP/s, measured")
    parser.add_argument("--mfu", type=float, default=0.45)
    parser.add_argument("--data-limit", type=float, default=180.0)
    parser.add_argument("--mem-fraction", type=float, default=0.5,
                        help="of the available memory the step may plan for")
    args = parser.parse_args()
    if set(args.experiments) - set(EXPERIMENTS):
        parser.error(f"unknown experiments: {set(args.experiments) - set(EXPERIMENTS)}")
    rate, rows, notes = args.peak * args.mfu, [], []
    print(f"{'experiment':<16}{'model':<15}{'params':>9}{'runs':>5}{'steps':>6}{'items/step':>11}"
          f"{'GFLOP/step':>11}{'PFLOP':>8}{'min':>6}")
    for name in args.experiments or EXPERIMENTS:
        spec = load_spec(name)
        trained, builds, note = globals()[f"plan_{name}"](spec.SCALES["gpu"])
        total = steps = 0
        for t in trained:
            n_params, per_item = meta_counts(t.config, t.seq)
            flops = t.runs * (t.steps * t.items * per_item * t.factor + t.extra)
            total, steps = total + flops, steps + t.runs * t.steps
            print(f"{name:<16}{t.kind[:14]:<15}{n_params / 1e6:>8.2f}M{t.runs:>5}{t.steps:>6}"
                  f"{t.items:>11,.0f}{t.items * per_item * t.factor / 1e9:>11,.1f}"
                  f"{flops / 1e15:>8.2f}{flops / rate / 60:>6.2f}")
        notes.append(f"{name}: {note}")
        data_s = 0.0
        for label, build, n, jobs in [] if args.skip_data else builds:
            seconds, how = timed(build, n, args.data_limit)
            data_s += seconds * jobs
            notes.append(f"  data {label}: {seconds:.1f} s ({how}) x {jobs} build(s)")
        step = {"steps": [], "note": "", "rss_gb": float("nan")}
        if not args.skip_step:
            opts = SimpleNamespace(batch=args.batch, seq=args.seq, steps=args.steps,
                                   mem_fraction=args.mem_fraction)
            try:  # a fresh process, so that its peak resident set is the step's own
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as p:
                    step = p.submit(one_step, name, opts).result()
            except BrokenProcessPool:
                step["note"] = "STEP FAILED: its process died (out of memory?)"
        notes += [f"  step {m}: {s:.2f} s/step, {w:.1f} s wall (compile and eval included)"
                  for m, s, w in step["steps"]] + [f"  {step['note']}"] * bool(step["note"])
        minutes, budget = total / rate / 60, spec.BUDGET_S["gpu"] / 60
        rows.append((name, data_s, minutes, budget, minutes + data_s / 60 <= budget, steps,
                     step["rss_gb"]))
    print(f"\n{'experiment':<16}{'data s':>7}{'est. min':>9}{'budget':>7}{'within':>7}"
          f"{'data share':>11}{'opt steps':>10}{'ms/step':>8}{'step GB':>8}")
    for name, data_s, minutes, budget, within, steps, rss in rows:
        print(f"{name:<16}{data_s:>7.1f}{minutes:>9.2f}{budget:>7.0f}{('NO', 'yes')[within]:>7}"
              f"{data_s / 60 / budget:>11.0%}{steps:>10,}{6e4 * budget / steps:>8.1f}{rss:>8.2f}")
    print(f"\nest. min: training FLOPs at {args.peak / 1e12:.0f} TFLOP/s x {args.mfu:.0%} MFU; "
          "within: est. min + data <= budget; ms/step: the budget over all optimizer steps, the "
          "most a step may take where steps, not FLOPs, bound the time; step GB: peak RSS")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
