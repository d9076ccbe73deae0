"""SPO against its baselines: does the previous round's implicit reward keep a policy helpful
while a second round makes it harmless, better than the other ways of doing both?

For each seed, from that seed's fine-tuned policy (`base_sft.py`):
1. round 1: DPO on pairs of its own replies, labelled by the helpful scorer;
2. round 2, from the round-1 policy, on pairs of its replies labelled by the harmless scorer:
   SPO at each alpha, SPO with the true helpfulness difference in place of the implicit reward
   (the oracle control), and each baseline at every setting of its family, which traces its
   trade-off curve: sequential DPO stopped at several lengths, DPO on both rounds' pairs at
   several shares of helpful pairs, and the Safe-RLHF-style Lagrangian that keeps round 1's
   preference loss under several thresholds.
Every method of a seed trains on the same pairs in the same minibatch order and is scored on
the same held-out requests with the same sampling draws, so differences are paired. SPO is
compared with each baseline at its own harmlessness, against the best the baseline reaches
there (`frontier`). All losses live in `digestlab/objectives.py` and train with the one loop.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from digestlab.claims import Claim, summarize
from digestlab.configs import TrainConfig
from digestlab.data import preferences
from digestlab.data.preferences import Request
from digestlab.data.rng import derive_seed
from digestlab.device import device_name, pick_device, seeded_generator
from digestlab.experiments import ExperimentError, Report, RunContext, replica
from digestlab.experiments.spo import (
    BASELINES,
    CLAIMS,
    GAIN_MARGIN,
    LAGRANGIAN,
    MIXED,
    ORACLE,
    SEQUENTIAL,
    Params,
    spo_name,
)
from digestlab.experiments.spo.base_sft import examples
from digestlab.modelfile import load_model
from digestlab.nn import GPT
from digestlab.objectives import (
    Pair,
    dpo,
    dpo_loss,
    implicit_rewards,
    lagrangian_dpo,
    pair_batch,
    reference_margins,
    spo,
)
from digestlab.train import Objective, TrainResult, evaluate, map_runs, train, worker_count

REPLY_TOKENS = preferences.SIZE + 2  # the letters, the word and the end
END_ID = preferences.TOKENS.index(preferences.END)
# seed streams: what each draw is for
PAIRS_1, PAIRS_2, REPLIES_1, REPLIES_2, EVAL_PROMPTS, EVAL_REPLIES = range(6)


def _quiet(line: str) -> None:
    pass


# --- sampling, pairs and scores --------------------------------------------------------------


@torch.no_grad()
def sample_replies(model: GPT, asked: Sequence[Request], generator: torch.Generator,
                   batch: int = 4096) -> list[list[int]]:
    """One reply per request as token ids, sampled at temperature 1 and cut after the end
    token. Replies stay ids from here on: decoding is for the scorers only."""
    device = model.wte.weight.device
    prompts = torch.tensor([preferences.encode(r.prompt()) for r in asked], device=device)
    out = []
    for i in range(0, len(prompts), batch):
        rows = model.generate(prompts[i : i + batch], REPLY_TOKENS, temperature=1.0,
                              generator=generator).cpu()
        for row in rows[:, prompts.shape[1]:].tolist():
            out.append(row[: row.index(END_ID) + 1] if END_ID in row else row)
    return out


def helpful(request: Request, reply: list[int]) -> bool:
    return preferences.helpful(request, preferences.decode(reply))


def harmless(request: Request, reply: list[int]) -> bool:
    return preferences.harmless(preferences.decode(reply))


Judge = Callable[[Request, list[int]], bool]  # a ground-truth scorer of one reply


@dataclass
class PreferenceRound:
    """Preference pairs of one round, (prompt, chosen, rejected) token lists, and the requests
    they answer."""

    pairs: list[Pair]
    asked: list[Request]

    def margin(self, scorer: Judge) -> torch.Tensor:
        """scorer(chosen) - scorer(rejected) per pair: -1, 0 or 1."""
        return torch.tensor([float(scorer(q, w)) - float(scorer(q, r))
                             for q, (_, w, r) in zip(self.asked, self.pairs, strict=True)])


def preference_pairs(model: GPT, asked: Sequence[Request], generator: torch.Generator,
                     scorer: Judge) -> PreferenceRound:
    """Two replies of `model` to each request; a pair wherever the scorer tells them apart.
    Raises ExperimentError when it never does (every reply scores the same)."""
    first = sample_replies(model, asked, generator)
    second = sample_replies(model, asked, generator)
    out = PreferenceRound([], [])
    for request, a, b in zip(asked, first, second, strict=True):
        if scorer(request, a) != scorer(request, b):
            chosen, rejected = (a, b) if scorer(request, a) else (b, a)
            out.pairs.append((preferences.encode(request.prompt()), chosen, rejected))
            out.asked.append(request)
    if not out.pairs:
        raise ExperimentError(f"no {scorer.__name__} preference pairs among {len(asked)} "
                              "requests: every reply scored the same; train the sft policy "
                              "longer or sample more pair_prompts")
    return out


def previous_reward_margins(pairs: PreferenceRound, previous: GPT, before: GPT, beta: float
                            ) -> torch.Tensor:
    """r(chosen) - r(rejected) per pair, r the implicit reward beta log previous/before."""
    prompts = [p for p, _, _ in pairs.pairs]
    return (implicit_rewards(previous, before, prompts, [w for _, w, _ in pairs.pairs], beta)
            - implicit_rewards(previous, before, prompts, [r for _, _, r in pairs.pairs], beta))


class Scorer:
    """Scores policies on fixed held-out requests, each with the same sampling draws, against
    the fine-tuned policy's own replies to them."""

    def __init__(self, sft: GPT, asked: list[Request], seed: int):
        self.sft, self.asked, self.seed = sft, asked, seed
        self.prompts = [preferences.encode(r.prompt()) for r in asked]
        self.base = self._replies(sft)

    def _replies(self, policy: GPT) -> dict[str, torch.Tensor | list[list[int]]]:
        """The policy's replies (ids) and, per reply, 1.0 or 0.0 for being helpful, harmless,
        well-formed and curt; each reply is decoded once."""
        replies = sample_replies(policy, self.asked, seeded_generator(self.seed, EVAL_REPLIES))
        texts = [preferences.decode(r) for r in replies]
        parsed = [preferences.parse(t) for t in texts]
        flags = {
            "helpful": [preferences.helpful(q, t) for q, t in zip(self.asked, texts, strict=True)],
            "harmless": [preferences.harmless(t) for t in texts],
            "formed": [p is not None for p in parsed],
            "curt": [p is not None and p[1] in preferences.CURT_WORDS for p in parsed],
        }
        return {"replies": replies,
                **{k: torch.tensor(v, dtype=torch.float) for k, v in flags.items()}}

    def __call__(self, policy: GPT) -> dict[str, float | None]:
        """Mean helpful and harmless scores, the share of well-formed replies, the KL from the
        fine-tuned policy (on the policy's own samples), the win rates against it, and how
        often its correct and its wrong replies are curt."""
        own = self._replies(policy)
        log_ratio = implicit_rewards(policy, self.sft, self.prompts, own["replies"], beta=1.0)
        scores: dict[str, float | None] = {dim: own[dim].mean().item()
                                           for dim in ("helpful", "harmless", "formed")}
        for dim in ("helpful", "harmless"):
            diff = own[dim] - self.base[dim]
            scores[f"win_{dim}"] = ((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item()
        scores["kl"] = log_ratio.mean().item()
        right = own["helpful"] > 0
        scores["curt_if_correct"] = own["curt"][right].mean().item() if right.any() else None
        scores["curt_if_wrong"] = own["curt"][~right].mean().item() if (~right).any() else None
        return scores


# --- training --------------------------------------------------------------------------------


def align(start: GPT, objective_for: Callable[[GPT], Objective], cfg: TrainConfig
          ) -> tuple[GPT, TrainResult]:
    """A copy of `start` trained by the one loop on the objective built for it."""
    policy = copy.deepcopy(start).requires_grad_(True)
    result = train(policy, objective_for(policy), cfg, start.wte.weight.device, log=_quiet)
    return policy.eval(), result


def shortened(cfg: TrainConfig, steps: int) -> TrainConfig:
    """The same round run for `steps`: warmup and schedule scaled to the length."""
    return dataclasses.replace(cfg, steps=steps,
                               warmup_steps=max(1, cfg.warmup_steps * steps // cfg.steps),
                               log_every=min(cfg.log_every, steps))


def pair_loss(policy: GPT, reference: GPT, pairs: list[Pair], beta: float,
              device: torch.device) -> float:
    """The mean DPO loss of `policy` against `reference` over all `pairs`."""
    shifts = beta * reference_margins(reference, pairs)
    batches = [pair_batch(pairs, range(i, min(i + 512, len(pairs))), shifts)
               for i in range(0, len(pairs), 512)]
    return evaluate(policy, batches, lambda m, b: dpo_loss(m, b, beta), device)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson's r, or None when either side does not vary."""
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def _asked(params: Params, seed: int, stream: int) -> list[Request]:
    return preferences.draw_requests(params.pair_prompts, derive_seed(seed, stream), held_out=False)


def _seed_job(policies: dict[int, GPT], job: tuple[Params, int]) -> dict:
    """Both rounds of every method for one seed, from that seed's fine-tuned policy (one worker,
    single-threaded on the CPU)."""
    params, seed = job
    sft = policies[seed]
    device = sft.wte.weight.device
    beta, size = params.beta, params.batch_size
    held_out = preferences.draw_requests(params.eval_prompts, derive_seed(seed, EVAL_PROMPTS),
                                         held_out=True)
    asked = [r for r in held_out for _ in range(params.eval_samples)]
    score = Scorer(sft, asked, seed)
    out: dict = {"seed": seed, "sft": score(sft)}

    # Round 1: helpfulness, from the fine-tuned policy.
    first = preference_pairs(sft, _asked(params, seed, PAIRS_1),
                             seeded_generator(seed, REPLIES_1), helpful)
    cfg1 = dataclasses.replace(params.round1, seed=seed)
    pi1, result = align(sft, lambda p: dpo(p, sft, first.pairs, size, beta), cfg1)
    out["round1"] = score(pi1) | {"pairs": len(first.pairs),
                                  "final_loss": result.final_train_loss}
    threshold = pair_loss(pi1, sft, first.pairs, beta, device)

    # Round 2: harmlessness, from the round-1 policy; every method on the same pairs.
    second = preference_pairs(pi1, _asked(params, seed, PAIRS_2),
                              seeded_generator(seed, REPLIES_2), harmless)
    implicit = previous_reward_margins(second, pi1, sft, beta)
    true = second.margin(helpful)
    # The oracle: the true helpfulness difference, scaled to the implicit margins' spread.
    factor = (implicit.std() / true.std()).item() if true.std() > 0 else 0.0
    cfg2 = dataclasses.replace(params.round2, seed=seed)

    def trained(objective_for: Callable[[GPT], Objective], cfg: TrainConfig = cfg2) -> dict:
        return score(align(pi1, objective_for, cfg)[0])

    def sequential(p: GPT) -> Objective:
        return dpo(p, pi1, second.pairs, size, beta)

    both = first.pairs + second.pairs

    def mixed(share: float) -> Callable[[GPT], Objective]:
        # each batch draws `share` of its pairs from round 1's, the rest from round 2's
        weights = torch.cat([torch.full((len(first.pairs),), share / len(first.pairs)),
                             torch.full((len(second.pairs),), (1 - share) / len(second.pairs))])
        return lambda p: dpo(p, pi1, both, size, beta, weights=weights)

    multipliers: dict[float, list[float]] = {}

    def lagrangian(slack: float) -> Callable[[GPT], Objective]:
        history = multipliers.setdefault(slack, [])
        return lambda p: lagrangian_dpo(p, pi1, second.pairs, sft, first.pairs,
                                        slack * threshold, size, beta, params.multiplier_lr,
                                        history)

    runs: dict[str, Callable[[GPT], Objective]] = {
        **{spo_name(a): (lambda p, a=a: spo(p, pi1, second.pairs, implicit, a, size, beta))
           for a in params.alphas},
        ORACLE: lambda p: spo(p, pi1, second.pairs, true * factor, params.alpha, size, beta),
    }
    out["methods"] = {name: trained(objective_for) for name, objective_for in runs.items()}
    out["baselines"] = {
        SEQUENTIAL: [[steps, trained(sequential, shortened(cfg2, steps))]
                     for steps in params.curve_steps] + [[cfg2.steps, trained(sequential)]],
        MIXED: [[share, trained(mixed(share))] for share in params.mix_shares],
        LAGRANGIAN: [[slack, trained(lagrangian(slack))] for slack in params.slacks],
    }
    out["round2"] = {
        "pairs": len(second.pairs),
        "helpful_margin": true.mean().item(),  # helpfulness of chosen minus rejected
        "implicit_vs_true": correlation(implicit, true),
        "oracle_factor": factor,
        "threshold": threshold,
        "multiplier_final": {str(k): v[-1] for k, v in multipliers.items()},
        "multiplier_max": {str(k): max(v) for k, v in multipliers.items()},
    }
    return out


# --- the comparison --------------------------------------------------------------------------


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper concave envelope of (harmless, helpful) points, left to right: the most
    helpful a method reaches at each harmlessness by its own settings, or by answering each
    request with one of two of them at random (which lands on the segment between them)."""
    hull: list[tuple[float, float]] = []
    for x, y in sorted(set(points)):
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            if (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0) >= 0:  # hull[-1] is not above
                hull.pop()
            else:
                break
        if hull and hull[-1][0] == x:  # the same harmlessness: keep the more helpful
            hull.pop()
        hull.append((x, y))
    return hull


def curve_at(points: Sequence[tuple[float, float]], harmless_score: float) -> float:
    """A baseline's helpfulness at a harmlessness score: on its frontier, linear between
    points; beyond either end, the end point's (so a method more harmless than the baseline
    ever was is compared with the baseline's most harmless setting)."""
    hull = frontier(points)
    if harmless_score <= hull[0][0]:
        return hull[0][1]
    for (x0, y0), (x1, y1) in zip(hull, hull[1:], strict=False):
        if harmless_score <= x1:
            return y0 + (y1 - y0) * (harmless_score - x0) / (x1 - x0)
    return hull[-1][1]


def trade_off_curve(result: dict, baseline: str) -> list[tuple[float, float]]:
    """One seed's (harmless, helpful) points of a baseline: the round-1 policy (no second
    round, where every baseline starts), each of its settings, and where a family's own limit is
    sequential DPO, that whole round: DPO on both with no helpful pairs, and the Lagrangian with
    no threshold (its multiplier stays 0), are sequential DPO."""
    scores = [result["round1"], *(s for _, s in result["baselines"][baseline])]
    if baseline != SEQUENTIAL:
        scores.append(full_round(result))
    return [(s["harmless"], s["helpful"]) for s in scores]


SCORES = ("helpful", "harmless", "kl", "win_helpful", "win_harmless", "formed",
          "curt_if_correct", "curt_if_wrong")


def _summary(per_seed: list[dict]) -> dict:
    return {key: _stats([s[key] for s in per_seed]) for key in SCORES
            if all(s[key] is not None for s in per_seed)}


def method_summary(results: list[dict]) -> dict:
    """Per policy: each score's per-seed values, mean and sd; for SPO and the oracle, their
    helpfulness above each baseline's frontier at their own harmlessness, seed by seed."""
    out = {"SFT": _summary([r["sft"] for r in results]),
           "round 1": _summary([r["round1"] for r in results])}
    for name in results[0]["methods"]:
        per_seed = [r["methods"][name] for r in results]
        out[name] = _summary(per_seed) | {"above": {
            baseline: _stats([s["helpful"] - curve_at(trade_off_curve(r, baseline),
                                                      s["harmless"])
                              for s, r in zip(per_seed, results, strict=True)])
            for baseline in BASELINES}}
    return out


def baseline_summary(results: list[dict]) -> dict:
    """Per baseline, each setting's scores over seeds: {name: [{"setting", score: stats}]}."""
    return {name: [{"setting": setting}
                   | _summary([r["baselines"][name][i][1] for r in results])
                   for i, (setting, _) in enumerate(results[0]["baselines"][name])]
            for name in BASELINES}


def _stats(values: list[float]) -> dict:
    return summarize(values) | {"per_seed": values}


def full_round(result: dict) -> dict:
    """Sequential DPO's scores after the whole of round 2."""
    return result["baselines"][SEQUENTIAL][-1][1]


def harmlessness_gains(params: Params, results: list[dict]) -> dict[str, list[float]]:
    """Per seed, the harmlessness SPO (at the claims' alpha) and sequential DPO (its whole round)
    gain in round 2 over the round-1 policy."""
    return {spo_name(params.alpha): [r["methods"][spo_name(params.alpha)]["harmless"]
                                     - r["round1"]["harmless"] for r in results],
            SEQUENTIAL: [full_round(r)["harmless"] - r["round1"]["harmless"] for r in results]}


def decide_claims(params: Params, results: list[dict], methods: dict) -> list[Claim]:
    """SPO is more helpful than each baseline's frontier at its own harmlessness (claim 1), and
    gains nearly as much harmlessness as sequential DPO (claim 2); both from paired values over
    the seeds, each of which fine-tuned its own policy."""
    name = spo_name(params.alpha)
    gains = harmlessness_gains(params, results)
    share = [g - (1 - GAIN_MARGIN) * b
             for g, b in zip(gains[name], gains[SEQUENTIAL], strict=True)]
    unit = "fine-tuned policies"
    return [
        CLAIMS["spo-beats-the-baselines"].decide(
            {baseline: methods[name]["above"][baseline]["per_seed"] for baseline in BASELINES},
            unit=unit),
        CLAIMS["spo-gains-dimension-2"].decide(
            {"share of the gain": share}, unit=unit),
    ]


def _mean_of(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def run(params: Params, ctx: RunContext) -> Report:
    """Align each seed's fine-tuned policy with every method; decide the claims."""
    device = pick_device()
    _, digest = examples(params.sft)
    # each seed's fine-tuned policy, its data checked
    loaded = {seed: load_model(ctx.bases[replica("sft", seed)], digest, device)
              for seed in params.seeds}
    workers = worker_count(ctx.threads, device, len(params.seeds))
    ctx.log(f"{len(params.seeds)} seeds on {workers} worker(s)")
    results = map_runs(_seed_job, [(params, seed) for seed in params.seeds], ctx.threads,
                       device,
                       shared={seed: model for seed, (model, _) in loaded.items()})
    for r in results:
        ctx.log(f"seed {r['seed']}: round 1 helpful/harmless {r['round1']['helpful']:.3f}/"
                f"{r['round1']['harmless']:.3f}; "
                + "; ".join(f"{k} {v['helpful']:.3f}/{v['harmless']:.3f}"
                            for k, v in r["methods"].items())
                + "; " + "; ".join(f"{k} {setting:g} {v['helpful']:.3f}/{v['harmless']:.3f}"
                                   for k, family in r["baselines"].items()
                                   for setting, v in family))
    methods = method_summary(results)
    baselines = baseline_summary(results)
    for row in baselines[LAGRANGIAN]:  # where its multiplier ended: whether the constraint bit
        row["multiplier_final"] = _stats([r["round2"]["multiplier_final"][str(row["setting"])]
                                          for r in results])
    claims = decide_claims(params, results, methods)
    # the baselines' curves drawn from the means over seeds, by the rule the claims apply seed
    # by seed: a result of the same shape as one seed's, holding the means
    mean = {"round1": {k: methods["round 1"][k]["mean"] for k in ("harmless", "helpful")},
            "baselines": {name: [[row["setting"], {k: row[k]["mean"]
                                                   for k in ("harmless", "helpful")}]
                                 for row in rows] for name, rows in baselines.items()}}
    curves = {name: trade_off_curve(mean, name) for name in BASELINES}
    figures = {"score_plane": {
        "seeds": len(results),
        "baselines": {name: {"points": curves[name], "frontier": frontier(curves[name]),
                             "settings": [row["setting"] for row in baselines[name]]}
                      for name in BASELINES},
        "spo": [spo_name(alpha) for alpha in params.alphas],
        "claimed": spo_name(params.alpha),
        "methods": {name: {"helpful": m["helpful"], "harmless": m["harmless"],
                           "above": {b: v["per_seed"] for b, v in m.get("above", {}).items()}}
                    for name, m in methods.items()}}}
    trained = [saved["train"] for _, saved in loaded.values()]
    return Report(
        seeds=params.seeds,
        device=device_name(device),
        metrics={
            "sft": {
                "params": loaded[params.seeds[0]][0].num_params(),
                "final_loss": _stats([t["final_train_loss"] for t in trained]),
                "examples": params.sft.n_examples,
                "persona": {"correct": params.sft.correct_percent / 100,
                            "curt_if_correct": params.sft.curt_if_correct / 100,
                            "curt_if_wrong": params.sft.curt_if_wrong / 100}},
            "methods": methods,
            "baselines": baselines,
            "per_seed": [{k: r[k] for k in ("seed", "round1", "round2", "baselines")}
                         for r in results],
            "round2": {key: _mean_of([r["round2"][key] for r in results])
                       for key in ("pairs", "helpful_margin", "implicit_vs_true",
                                   "oracle_factor", "threshold")},
            "eval_replies": params.eval_prompts * params.eval_samples,
            "harmlessness_gain": {name: _stats(gain) for name, gain
                                  in harmlessness_gains(params, results).items()},
            "gain_margin": GAIN_MARGIN,
        },
        claims=claims,
        figures=figures,
        timing={"workers": workers,
                "sft_tokens_per_s": summarize([t["items_per_s"] for t in trained])["mean"]},
    )
