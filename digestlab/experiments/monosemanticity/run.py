"""Scaling Monosemanticity in miniature: SAE features of a model of Python sessions, the one
feature that detects bugs, and what clamping it does.

One program model (`base_lm.py`) reads interactive sessions (`>>> x = 7` ... `>>> print(x //
y)`) and predicts the output line of the last print: the printed value, or the name of the
error it raises. The analysis, in order:

1. Read the model once (`saes.read_model`): the stream at every byte of sessions it never
   trained on, of both held-out splits (`heldout.py`) and of the steering programs, and what it
   writes for them.
2. Sweep the ReLU recipe's lambda on the tuning seeds, judged on the selection split; train the
   chosen lambda, and TopK, on the scored seeds and judge them on the evaluation split, their
   bug features chosen on the selection split (`saes.py`).
3. Clamp each scored SAE's general bug feature at the fixed dose, and the first ReLU SAE's at
   every dose in both placements, beside matched random controls (`steering.py`).
4. Decide the claims (`verdicts.py`).

The runs of each step go one per core on the CPU (`map_runs`), all reading the one `Readings`.
"""

from __future__ import annotations

import time

from digestlab.claims import summarize
from digestlab.device import device_name, pick_device
from digestlab.experiments import Report, RunContext
from digestlab.experiments.monosemanticity import ANY, L0_SHARE, Params
from digestlab.experiments.monosemanticity.base_lm import corpus
from digestlab.experiments.monosemanticity.heldout import model_quality
from digestlab.experiments.monosemanticity.saes import (
    choose_l1,
    compare_recipes,
    read_model,
    scored_run,
    sweep_run,
    sweep_table,
)
from digestlab.experiments.monosemanticity.steering import (
    at_fixed_dose,
    effects,
    steer_run,
    steering_jobs,
    unclamped,
)
from digestlab.experiments.monosemanticity.verdicts import decide_claims
from digestlab.modelfile import load_model
from digestlab.train import map_runs, worker_count


def run(params: Params, ctx: RunContext) -> Report:
    """Train the SAEs on the program model's residual stream, score the features, steer."""
    device = pick_device()
    splits = corpus(params.lm)
    model, saved = load_model(ctx.bases["lm"], splits.sha256, device)
    readings = read_model(params, model, device)
    evaluation = readings.splits["evaluation"]
    quality = model_quality(model, evaluation)
    ctx.log(f"{len(evaluation.buggy)} buggy programs and their clean twins in each split; "
            f"the model's own P(error) has AUROC {quality['auroc'][ANY]:.3f}; "
            f"{len(readings.train_acts):,} activations to train on")

    def each(fn, jobs):
        start = time.perf_counter()
        out = map_runs(fn, jobs, ctx.threads, device, shared=readings)
        ctx.log(f"{len(jobs)} runs of {fn.__name__} in {time.perf_counter() - start:.0f} s")
        return out

    # lambda is chosen on the tuning seeds, judged on the selection split; they never vote
    sweep = each(sweep_run, [(l1, seed) for l1 in params.l1_coeffs
                             for seed in params.sae_tuning_seeds])
    sweep_rows = sweep_table(params, sweep)
    l1 = params.l1_coeffs[choose_l1(params, sweep_rows)]
    ctx.log(f"lambda sweep L0 {[round(r['l0'], 1) for r in sweep_rows]}: lambda {l1} is "
            f"trained on seeds {params.sae_seeds}")
    scored = each(scored_run, [(kind, l1 if kind == "relu" else 0.0, seed)
                               for kind in ("relu", "topk") for seed in params.sae_seeds])
    runs = each(steer_run, steering_jobs(readings, scored))
    # throughput is timing, which differs from run to run: it stays out of the metrics
    speeds = [{key: a.pop(key) for key in ("samples_per_s", "mfu")} for a in scored] + sweep
    for a in scored:
        a.pop("state")
        a["steering"] = [r for r in runs if (r["kind"], r["seed"]) == (a["kind"], a["seed"])]
    relu = [a for a in scored if a["kind"] == "relu"]
    topk = [a for a in scored if a["kind"] == "topk"]
    base = unclamped(readings)
    for a in scored:
        fixed = at_fixed_dose(params, a)
        ctx.log(f"{a['kind']} seed {a['seed']}: EV {a['explained_variance']:.3f} L0 "
                f"{a['l0']:.1f} dead {a['dead_fraction']:.3f} recovered "
                f"{a['recovered']['mean-ablation']:.3f} general feature AUROC "
                f"{a['general'][ANY]:.3f} up {fixed['up']['feature']['rate']:.2f} down "
                f"{fixed['down']['feature']['rate']:.2f}")

    browser = next(a.pop("browser") for a in relu if "browser" in a)
    metrics = {
        "lm": {"params": model.num_params(), "val_loss": saved["train"]["val_loss"],
               "train_tokens": saved["train"]["items_seen"],
               "train_programs": splits.n_train_documents},
        "model": quality,
        "held_out": {"pairs_per_type": params.eval_pairs, "programs": len(evaluation.all),
                     "selection_programs": len(readings.splits["selection"].all),
                     "steering_programs": len(readings.steering[0])},
        "activations": {"train": len(readings.train_acts),
                        "val": len(readings.val_acts["evaluation"])},
        "losses": readings.losses["evaluation"],
        "sweep": sweep_rows,
        "l1_coeff": l1,
        "l0_bound": L0_SHARE * params.width,  # "far below the width"; the sweep's choice too
        "relu": relu, "topk": topk,
        "recipes": compare_recipes(sweep_rows, relu, topk, lambda a: at_fixed_dose(params, a)),
        "unclamped": base,
        "steering": effects(params, relu, base),
        "curve_seed": relu[0]["seed"],
        "browser": browser,
    }
    figures = {
        "sae_sweep": {"width": params.width, "layer": params.layer,
                      "tuning_seeds": list(params.sae_tuning_seeds), "sweep": sweep_rows,
                      "relu": relu, "topk": topk},
        "feature_activations": browser,
        "dose_response": {"seed": relu[0]["seed"], "fixed": params.clamp_multiple,
                          "unclamped": base, "curve": relu[0]["steering"]},
    }
    return Report(
        seeds=list(params.sae_seeds),
        device=device_name(device),
        metrics=metrics,
        claims=decide_claims(params, metrics),
        figures=figures,
        timing={"workers": worker_count(ctx.threads, device, len(sweep)),
                "lm_tokens_per_s": saved["train"]["items_per_s"],
                # SAE training throughput and MFU, one single-threaded SAE per worker
                "sae_samples_per_s": summarize([t["samples_per_s"] for t in speeds])["mean"],
                "sae_mfu": summarize([t["mfu"] for t in speeds])["mean"]},
    )
