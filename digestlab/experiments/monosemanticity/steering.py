"""Steering the program model with its general bug feature, at a range of doses.

The feature (each SAE's best for "any bug", chosen on the selection split) is clamped, with
`clamp_hook` (only that feature changes: the SAE's error term is kept), to +dose times its
largest activation on the selection split's clean programs on the clean steering programs
("up"), and to -dose times that on the buggy ones ("down"). It is clamped at every position
("every"), or at the output positions alone ("output": the last prompt byte and every byte
written after it). Each control clamps a random live feature so that it moves the stream by
the same mean norm at the positions clamped; one SAE keeps the same controls at every dose
(common random numbers). The claims read the fixed dose, clamped at every position, on every
scored SAE; the first scored ReLU SAE is also clamped at every dose in both placements.
"""

from __future__ import annotations

import torch

from digestlab.claims import rate, summarize
from digestlab.data.programs import ERROR_TYPES
from digestlab.experiments.monosemanticity import ANY, Params
from digestlab.experiments.monosemanticity.heldout import read_outputs
from digestlab.experiments.monosemanticity.saes import Readings, encoded, harvest, load_sae
from digestlab.nn.sae import SparseAutoencoder, clamp_hook

PLACEMENTS = ("every", "output")
EXAMPLES = 4  # output lines kept per clamped read, for the page


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


def reference_activation(readings: Readings, sae: SparseAutoencoder, feature: int) -> float:
    """The feature's largest activation at any prompt byte of the selection split's clean
    programs (of its buggy ones, for a feature never active on clean programs)."""
    reference = encoded(sae, readings.prompt_acts["calibration"], [feature]).max().item()
    if reference <= 0:
        buggy = harvest(readings.model, readings.splits["selection"].buggy,
                        readings.params.layer, with_output=False)
        reference = encoded(sae, buggy, [feature]).max().item()
    return max(reference, 1e-6)


def steering_jobs(readings: Readings, scored: list[dict]) -> list[tuple[dict, float, str]]:
    """(SAE, dose, placement) of every steering run: the fixed dose clamped at every position on
    each scored SAE (with controls on the ReLU ones, which the claims read), and every other
    dose and placement on the first scored ReLU SAE. Each SAE's general feature, its reference
    activation and its controls are settled here, once, for all of its runs."""
    params = readings.params
    jobs = []
    for trained in scored:
        sae = {k: trained[k] for k in ("kind", "l1_coeff", "seed", "state")}
        relu = trained["kind"] == "relu"
        feature = trained["best"][ANY]["feature"]
        candidates = [j for j in trained["alive"] if j != feature]
        g = torch.Generator().manual_seed(trained["seed"])
        picks = torch.randperm(len(candidates), generator=g)[: params.controls if relu else 0]
        sae |= {"feature": feature, "controls": [candidates[int(i)] for i in picks],
                "reference": reference_activation(
                    readings, load_sae(params, trained, readings.device), feature)}
        curve = relu and trained["seed"] == params.sae_seeds[0]
        for dose in params.doses:
            for placement in PLACEMENTS:
                fixed = dose == params.clamp_multiple and placement == "every"
                if fixed or curve:
                    jobs.append((sae, dose, placement))
    return jobs


@torch.no_grad()
def steer_run(readings: Readings, job: tuple[dict, float, str]) -> dict:
    """One SAE's general feature clamped at one dose and placement, up on the clean steering
    programs and down on the buggy ones, beside its matched random controls."""
    trained, dose, placement = job
    params, model = readings.params, readings.model
    sae = load_sae(params, trained, readings.device)
    feature, reference, controls = trained["feature"], trained["reference"], trained["controls"]
    at = readings.prompt_acts if placement == "every" else readings.output_acts
    last_only = placement == "output"
    norms = (sae.decoder() / sae.input_factor).norm(dim=1).cpu()  # stream units
    clean, buggy = readings.steering
    out = {"kind": trained["kind"], "seed": trained["seed"], "dose": dose,
           "placement": placement, "feature": feature, "reference_activation": reference,
           "controls": controls}
    for direction, items in (("up", clean), ("down", buggy)):
        sign = 1.0 if direction == "up" else -1.0
        value = sign * dose * reference
        own = encoded(sae, at[direction], [feature])[:, 0]
        change = ((value - own).abs().mean() * norms[feature]).item()  # mean |h' - h|
        read = read_outputs(model, items, params.layer,
                            clamp_hook(sae, feature, value, last_only))
        values = encoded(sae, at[direction], controls)
        reads, clamps = [], []
        for column, j in enumerate(controls):
            c = matched_clamp(values[:, column], change / norms[j].item(), sign > 0)
            reads.append(read_outputs(model, items, params.layer,
                                      clamp_hook(sae, j, c, last_only)))
            clamps.append(c)
        result = {
            "clamp": value, "mean_change_norm": change,
            "feature": rate(read["predicts_error"]),
            "controls": [float(r["predicts_error"].mean()) for r in reads],
            "control_clamps": clamps,
            "lines": read["lines"][:EXAMPLES],
        }
        if direction == "up":
            # what the clamped model wrote where its line starts with a capital: an error's
            # name, or other text (which counts as no error predicted)
            names = [line if line in ERROR_TYPES else "other" for line in read["lines"]
                     if line[:1].isupper()]
            result["error_names"] = {name: names.count(name) for name in sorted(set(names))}
        else:
            result["bug_free"] = rate(read["bug_free"])
            result["control_bug_free"] = [float(r["bug_free"].mean()) for r in reads]
        out[direction] = result
    return out


def unclamped(readings: Readings) -> dict:
    """What the model writes for the steering programs as it is, with intervals."""
    up, down = readings.unclamped["up"], readings.unclamped["down"]
    clean, buggy = readings.steering
    return {"up": {"feature": rate(up["predicts_error"]), "lines": up["lines"][:EXAMPLES],
                   "prompts": [p.prompt() for p in clean[:EXAMPLES]]},
            "down": {"feature": rate(down["predicts_error"]), "bug_free": rate(down["bug_free"]),
                     "lines": down["lines"][:EXAMPLES],
                     "prompts": [p.prompt() for p in buggy[:EXAMPLES]]}}


def at_fixed_dose(params: Params, scored: dict) -> dict:
    """An SAE's steering run at the fixed dose, clamped at every position."""
    return next(r for r in scored["steering"]
                if r["dose"] == params.clamp_multiple and r["placement"] == "every")


def effects(params: Params, relu: list[dict], base: dict) -> dict:
    """Per direction ("up": clean programs clamped high, "down": buggy clamped negative), over
    the ReLU SAEs at the fixed dose: each seed's rate of error predictions unclamped and
    clamped, how far the feature moves it, and how far its controls do on average."""
    out = {}
    for direction in ("up", "down"):
        b = base[direction]["feature"]["rate"]
        runs = [at_fixed_dose(params, r)[direction] for r in relu]
        out[direction] = {
            "base": [b] * len(runs),
            "clamped": [run["feature"]["rate"] for run in runs],
            "feature_effect": [abs(run["feature"]["rate"] - b) for run in runs],
            "control_effect": [summarize([abs(c - b) for c in run["controls"]])["mean"]
                               for run in runs],
        }
    return out
