"""SirLLM against StreamingLLM: what a dialogue model remembers through a small KV cache.

Two dialogue models read streams many times longer than their cache: the dialogue model
(`base_lm.py`, trained on dialogues of at most 256 tokens) and its fine-tune for a sparse cache
(`base_robust.py`), on which the claims are decided. Each reads turn by turn through the
shared `Streamer` (`digestlab/nn/cache.py`): before each turn the cache is cut down to
its size by a policy, positions are renumbered inside the cache, and the turn is read. All
policies of one comparison ride in one batch, a row each, on the same stream: common random
numbers, so every difference is paired.

- window: the latest tokens only.
- StreamingLLM (Xiao et al. 2023): the first `sinks` tokens plus the latest.
- SirLLM (Yao et al. 2024): the first `sinks` tokens plus the tokens of highest stored token
  entropy e_i = -log p(x_i | x_<i); at every request (a user's turn) the stored values are
  multiplied by the decay ratio, once, as the authors' code does, so old tokens make way.
  "SirLLM (reference scoring)" is the same with the scoring of the authors' code, which gives
  token i the surprisal of token i - 1 (and each turn's first token the turn's largest); every
  SirLLM claim is decided under both scorings.
- random: the first `sinks` tokens plus a uniform draw of the rest, the control.
- oracle (grocery only): the first `sinks` tokens, the turn that asked for the item, and the
  latest: what a sparse cache can do at best, and the claim's premise.

Tasks: grocery (recall an item asked for ~900 tokens earlier, among four offered, with other
items mentioned in between), rock-paper-scissors against a biased opponent (the bot plays the
counter to the model's most likely next move; win rate), and perplexity over long streams of
dialogue, where StreamingLLM's own claim is checked against recomputing each window afresh.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from digestlab.claims import (
    LEVEL,
    Claim,
    binomial_interval,
    mean_interval,
    paired_differences,
    paired_ratios,
    summarize,
)
from digestlab.data import dialogue
from digestlab.data.dialogue import BEATS, BOS, MOVE_IDS, SLOTS
from digestlab.data.rng import SplitMix64, derive_seed
from digestlab.device import device_name, pick_device, seeded_generator
from digestlab.experiments import Report, RunContext
from digestlab.experiments.sirllm import CLAIMS, ORACLE, REFERENCE, Params
from digestlab.experiments.sirllm.base_lm import STAGES, first_token_attention, training_stages
from digestlab.modelfile import load_model
from digestlab.nn import GPT
from digestlab.nn.cache import Policy, Streamer
from digestlab.train import map_runs, worker_count

# StreamingLLM's Figure 1 (Llama-2-13B, 65K tokens of PG19): perplexity by cache policy.
PAPER_STREAMING_PPL = [["dense", 5641.0], ["window", 5158.0], ["recompute", 5.43],
                       ["StreamingLLM", 5.40]]


USER = dialogue.TOKEN_ID["user"]  # a turn that opens with it is a request
# Both dialogue models read every stream, side by side on the page: as trained, and fine-tuned
# to read from a sparse cache, on which the claims are decided (its premise is the oracle's
# recall from a sparse cache).
MODELS, CLAIMS_MODEL = ("lm", "robust"), "robust"


def policies(params: Params, decay: float, sweep: bool, oracle: bool = False) -> list[Policy]:
    """The rows compared on one task: the baselines, SirLLM at `decay` with both scorings,
    with `sweep` SirLLM at every other decay of params.decays, and with `oracle` the cache that
    keeps the request's turn (grocery: where the item was asked for) and the latest tokens."""
    s = params.sinks
    rows = [Policy("window", "recent"), Policy("StreamingLLM", "recent", s),
            Policy("random", "random", s), Policy("SirLLM", "top_score", s, decay),
            Policy(REFERENCE, "top_score", s, decay, True)]
    if oracle:
        rows.append(Policy(ORACLE, "protect", s))
    if sweep:
        rows += [Policy(f"SirLLM decay {d:g}", "top_score", s, d)
                 for d in params.decays if d != decay]
    return rows


def read_turn(streamer: Streamer, turn: list[int]) -> torch.Tensor:
    """Read one turn; a user's turn is a request, before which stored scores decay once."""
    if turn[0] == USER or turn[:2] == [BOS, USER]:
        streamer.request()
    return streamer.read(torch.tensor(turn))


# --- tasks: each job is one stream, every policy a row ---------------------------------------


def grocery_stream(params: Params, index: int, exchanges: int) -> dialogue.Grocery:
    """Grocery dialogue `index` of the evaluation set, with `exchanges` of chat in between."""
    return dialogue.grocery(SplitMix64(derive_seed(params.eval_seed, 1, index)), exchanges,
                            params.lm.mention_percent)


def _grocery_job(model: GPT, job: tuple[Params, int, int, bool]) -> dict:
    params, index, cache_size, sweep = job
    stream = grocery_stream(params, index, params.grocery_exchanges)
    rows = policies(params, params.grocery_decay, sweep, oracle=True)
    streamer = Streamer(model, rows, cache_size,
                        seeded_generator(params.eval_seed, 2, index, cache_size))
    item_offset = None
    for turn in (([BOS] if i == 0 else []) + turn for i, turn in enumerate(stream.turns)):
        if item_offset is None and stream.item in turn:  # the request
            item_offset = streamer.read_tokens + turn.index(stream.item)
            streamer.protect(range(streamer.read_tokens, streamer.read_tokens + len(turn)))
        read_turn(streamer, turn)
    options = torch.tensor(stream.options)
    picked = options[streamer.last_logprobs.cpu()[:, options].argmax(dim=1)]  # (B,)
    origin = streamer.origin.cpu()
    return {
        "correct": {p.name: bool(picked[i] == stream.item) for i, p in enumerate(rows)},
        "retained": {p.name: bool((origin[i] == item_offset).any())
                     for i, p in enumerate(rows)},
        # the item, or the token after it, whose keys and values (from the second layer on)
        # were computed in the item's context and so may carry it: what the authors' scoring,
        # which shifts each surprisal to the next token, may keep instead
        "carried": {p.name: bool(((origin[i] == item_offset) | (origin[i] == item_offset + 1))
                                 .any()) for i, p in enumerate(rows)},
        "tokens": streamer.read_tokens,
        "distance": streamer.read_tokens - item_offset,
    }


def grocery_in_context(model: GPT, params: Params, n: int, exchanges: int) -> int:
    """Questions answered correctly with nothing evicted, out of `n` short grocery dialogues that
    fit the training context: the ceiling the policies are measured against."""
    correct = 0
    for index in range(n):
        stream = grocery_stream(params, 10_000 + index, exchanges)
        tokens = torch.tensor([BOS] + [t for turn in stream.turns for t in turn])
        with torch.no_grad():
            logits, _ = model(tokens[None].to(model.wte.weight.device))
        logits = logits.cpu()
        options = torch.tensor(stream.options)
        correct += int(options[logits[0, -1, options].argmax()] == stream.item)
    return correct


def _rps_job(model: GPT, job: tuple[Params, int]) -> dict:
    params, index = job
    moves = dialogue.opponent_moves(SplitMix64(derive_seed(params.eval_seed, 3, index)),
                                    params.rps_rounds, params.favourite_percent)
    rows = policies(params, params.rps_decay, sweep=True)
    streamer = Streamer(model, rows, params.cache_size,
                        seeded_generator(params.eval_seed, 4, index))
    for i, turn in enumerate(dialogue.rps_opening()):
        read_turn(streamer, ([BOS] if i == 0 else []) + turn)
    outcomes = torch.zeros(len(rows), params.rps_rounds, dtype=torch.long)
    move_ids = torch.tensor(MOVE_IDS)
    favourite = max(SLOTS["move"], key=moves.count)
    # which stream offsets hold the opponent's moves, and whether each was its favourite
    move_at = torch.zeros(0, dtype=torch.long)
    move_is_favourite = torch.zeros(0, dtype=torch.bool)
    held = torch.zeros(len(rows))  # opponent's moves in the cache, summed over scored rounds
    held_favourite = torch.zeros(len(rows))
    for r, move in enumerate(moves):
        move_at = torch.cat([move_at, torch.tensor([streamer.read_tokens + 2])])
        move_is_favourite = torch.cat([move_is_favourite, torch.tensor([move == favourite])])
        logprobs = read_turn(streamer, dialogue.user_move_turn(move)).cpu()
        guess = logprobs[:, 1, move_ids].argmax(dim=1)  # after "user :", before the move
        bots = [BEATS[SLOTS["move"][g]] for g in guess.tolist()]
        if r >= params.rps_scored_from:  # what the cache held when the guess was made
            cached = (streamer.origin.cpu()[:, :, None] == move_at[:-1]).any(dim=1)  # (B, r)
            held += cached.sum(dim=1)
            held_favourite += (cached & move_is_favourite[:-1]).sum(dim=1)
        streamer.read(torch.tensor([dialogue.bot_move_turn(b, move) for b in bots]))
        outcomes[:, r] = torch.tensor([dialogue.outcome(b, move) for b in bots])
    scored = outcomes[:, params.rps_scored_from:]
    oracle = [dialogue.outcome(dialogue.counter_of_favourite(moves[:r]), moves[r])
              for r in range(params.rps_scored_from, params.rps_rounds)]
    return {
        "moves_held": {p.name: held[i].item() / len(oracle) for i, p in enumerate(rows)},
        "favourite_share_held": {p.name: held_favourite[i].item() / max(held[i].item(), 1)
                                 for i, p in enumerate(rows)},
        "win": {p.name: (scored[i] == 1).float().mean().item() for i, p in enumerate(rows)},
        "lose": {p.name: (scored[i] == -1).float().mean().item() for i, p in enumerate(rows)},
        "oracle_win": sum(o == 1 for o in oracle) / len(oracle),
        "favourite_share": moves[params.rps_scored_from:].count(favourite) / len(oracle),
    }


def perplexity_stream(params: Params, index: int) -> torch.Tensor:
    """Perplexity stream `index`: <bos>, then evaluation dialogues end to end, ppl_tokens long."""
    mix = dialogue.Mixture(mention_percent=params.lm.mention_percent)
    tokens, i = [BOS], 0
    while len(tokens) < params.ppl_tokens:
        tokens += dialogue.dialogue(derive_seed(params.eval_seed, 5, index), i, mix)
        i += 1
    return torch.tensor(tokens[: params.ppl_tokens])


def _perplexity_job(model: GPT, job: tuple[Params, list[int]]) -> dict[str, torch.Tensor]:
    """NLL of the tokens of some perplexity streams, read with window and with StreamingLLM,
    and recomputed from scratch, at the scored positions: {name: (n_streams, n_scored)}."""
    params, indices = job
    tokens = torch.stack([perplexity_stream(params, i) for i in indices])  # (n, N)
    n, L = tokens.shape[0], params.ppl_window
    kinds = [Policy("window", "recent"), Policy("StreamingLLM", "recent", params.sinks)]
    streamer = Streamer(model, [k for k in kinds for _ in range(n)], L, torch.Generator())
    rows = tokens.repeat(len(kinds), 1).to(streamer.device)  # (kinds * n, N), kind-major
    nll = []
    for t in range(tokens.shape[1] - 1):
        logprobs = streamer.read(rows[:, t : t + 1])[:, -1]  # (B, vocab), predicting t + 1
        nll.append(-logprobs.gather(1, rows[:, t + 1 : t + 2]).squeeze(1))
    nll = torch.stack(nll, dim=1).cpu().view(len(kinds), n, -1)  # (kinds, n, N - 1): t + 1
    scored = scored_positions(params)
    out = {k.name: nll[i][:, scored - 1] for i, k in enumerate(kinds)}
    # Recomputation: each scored token predicted by a fresh forward over <bos> and the L - 1
    # tokens before it (the model's training condition: the oracle), or the L tokens alone.
    for name, width in (("recompute", L - 1), ("recompute without <bos>", L)):
        contexts = torch.stack([tokens[:, t - width : t] for t in scored.tolist()], dim=1)
        if width < L:
            contexts = torch.cat([torch.full((*contexts.shape[:2], 1), BOS), contexts], dim=2)
        flat = contexts.flatten(0, 1).to(streamer.device)  # (n * n_scored, L)
        with torch.no_grad():
            logprobs = torch.cat([F.log_softmax(model(chunk)[0][:, -1].float(), dim=-1)
                                  for chunk in flat.split(256)]).cpu()  # (n * n_scored, vocab)
        targets = tokens[:, scored].flatten()
        out[name] = -logprobs.gather(1, targets[:, None]).view(n, len(scored))
    return out


def scored_positions(params: Params) -> torch.Tensor:
    """The stream positions whose tokens the perplexity comparison scores: every
    `recompute_every`-th from the first the window no longer holds everything before."""
    return torch.arange(params.ppl_window + 1, params.ppl_tokens, params.recompute_every)


# --- attention sinks -------------------------------------------------------------------------


def attention_sinks(model: GPT, params: Params, saved: dict) -> dict:
    """Attention on the first token (<bos>) by layer, on the opening training-length windows
    of the perplexity streams, against a uniform head's; and the same measured along training
    (validation windows), stage by stage, from the model file."""
    T = min(params.lm.seq_len, params.ppl_tokens)
    idx = torch.stack([perplexity_stream(params, i)[:T] for i in range(params.ppl_streams)])
    along, tokens_before = {}, 0
    for name, result in training_stages(saved).items():
        curves = result.get("probe_curves", {})
        if curves:
            tokens_per_step = result["items_seen"] // curves["top_head"][-1][0]  # at the end
            along[name] = {
                "tokens": [tokens_before + step * tokens_per_step
                           for step, _ in curves["top_head"]],
                "top_head": [v for _, v in curves["top_head"]],
                "mean_head": [v for _, v in curves["mean_head"]],
            }
        tokens_before += result["items_seen"]
    trained = first_token_attention(model, idx)
    peak = max((v for curve in along.values() for v in curve["top_head"]), default=None)
    return trained | {
        # the most attentive head's share against a uniform head's: the sink premise
        "top_head_ratio": max(trained["top_head_per_layer"]) / trained["uniform"],
        "along_training": along, "peak_along_training": peak}


# --- the experiment --------------------------------------------------------------------------


def _job(models: dict[str, GPT], job: tuple) -> tuple[str, str, object]:
    """One unit of work for map_runs: ("grocery" | "rps" | "ppl", model name, args), read by
    that model of `models` (the trained models every worker shares)."""
    kind, model, args = job
    runner = {"grocery": _grocery_job, "rps": _rps_job, "ppl": _perplexity_job}[kind]
    return kind, model, runner(models[model], args)


def jobs_of(params: Params, model: str) -> list[tuple]:
    """Every stream one model reads: grocery at every cache size (the decay sweep at the claims'),
    rock-paper-scissors, and one perplexity stream per job, so that no number depends on how
    many workers there are."""
    jobs = [("grocery", model, (params, i, b, b == params.cache_size))
            for b in params.cache_sizes for i in range(params.grocery_streams)]
    jobs += [("rps", model, (params, i)) for i in range(params.rps_streams)]
    return jobs + [("ppl", model, (params, [i])) for i in range(params.ppl_streams)]


def measure(params: Params, model: GPT, saved: dict, results: dict[str, list]) -> dict:
    """What one model's streams measured, by task, and its attention on the first token."""
    grocery = grocery_metrics(params, results["grocery"])
    correct = grocery_in_context(model, params, params.grocery_streams, exchanges=6)
    grocery |= {"in_context_correct": correct, "in_context_dialogues": params.grocery_streams,
                "in_context_accuracy": correct / params.grocery_streams}
    return {"grocery": grocery, "rps": rps_metrics(results["rps"]),
            "perplexity": perplexity_metrics(params, results["ppl"]),
            "attention_sinks": attention_sinks(model, params, saved)}


def run(params: Params, ctx: RunContext) -> Report:
    """Stream every task through both dialogue models under every policy; decide the claims on
    the cache-robust one."""
    device = pick_device()
    corpus, _ = dialogue.training_corpora(params.lm.n_dialogues,
                                          dialogue.Mixture(mention_percent=params.lm.mention_percent))
    loaded = {name: load_model(ctx.bases[name], corpus.sha256, device) for name in MODELS}
    jobs = [job for name in MODELS for job in jobs_of(params, name)]
    workers = worker_count(ctx.threads, device, len(jobs))
    ctx.log(f"{len(jobs)} streaming jobs on {workers} worker(s)")
    done = map_runs(_job, jobs, ctx.threads, device,
                    shared={name: model for name, (model, _) in loaded.items()})
    by_model = {
        name: measure(params, model, saved, {
            kind: [r for k, m, r in done if (k, m) == (kind, name)]
            for kind in ("grocery", "rps", "ppl")})
        for name, (model, saved) in loaded.items()}
    claimed = by_model[CLAIMS_MODEL]
    claims = decide_claims(params, claimed["grocery"], claimed["rps"], claimed["perplexity"],
                           claimed["attention_sinks"])
    figures = {
        "grocery_recall": {"cache_sizes": params.cache_sizes, "cache_size": params.cache_size,
                           "claims_model": CLAIMS_MODEL,
                           "by_model": {name: d["grocery"] for name, d in by_model.items()}},
        "rps_win_rate": {"win_per_game": claimed["rps"]["win_per_game"],
                         "oracle_win": claimed["rps"]["oracle_win"]},
        "streaming_perplexity": claimed["perplexity"],
        "attention_sinks": claimed["attention_sinks"],
    }
    stages = training_stages(loaded[CLAIMS_MODEL][1])
    pretrain, chat, sparse = (stages[name] for name in STAGES)
    model = loaded[CLAIMS_MODEL][0]
    return Report(
        seeds=[params.lm.train.seed],
        device=device_name(device),
        metrics={
            "lm": {"params": model.num_params(), "val_loss": pretrain["val_loss"],
                   "train_tokens": pretrain["items_seen"], "context": params.lm.seq_len,
                   "vocab_size": dialogue.VOCAB_SIZE, "chat_steps": params.lm.chat.steps,
                   "chat_tokens": chat["items_seen"],
                   "chat_user_weight": params.lm.chat_user_weight,
                   "chat_val_loss": chat["val_loss"]},
            "robust": {"steps": params.robust.train.steps, "tokens": sparse["items_seen"],
                       "val_loss": sparse["val_loss"]},
            "claims_model": CLAIMS_MODEL,
            "by_model": by_model,
        },
        claims=claims,
        figures=figures,
        timing={"workers": workers, "lm_tokens_per_s": pretrain["items_per_s"]},
        reference={"columns": ["cache", "perplexity"], "rows": PAPER_STREAMING_PPL},
    )


def grocery_metrics(params: Params, results: list[dict]) -> dict:
    """Recall accuracy and item retention of every policy at every cache size, per-stream
    outcomes at the claims' cache size (for the paired claim) and the decay sweep there."""
    n = params.grocery_streams
    by_cache_size = {}
    for i, cache_size in enumerate(params.cache_sizes):
        runs = results[i * n : (i + 1) * n]
        by_cache_size[str(cache_size)] = {name: _recall(runs, name) for name in runs[0]["correct"]}
    at_cache_size = results[params.cache_sizes.index(params.cache_size) * n :][:n]
    sweep = {params.grocery_decay: by_cache_size[str(params.cache_size)]["SirLLM"]["accuracy"]}
    for d in params.decays:
        name = f"SirLLM decay {d:g}"
        if name in at_cache_size[0]["correct"]:
            sweep[d] = by_cache_size[str(params.cache_size)][name]["accuracy"]
    return {
        "streams": n,
        "stream_tokens_mean": sum(r["tokens"] for r in at_cache_size) / n,
        "item_distance_mean": sum(r["distance"] for r in at_cache_size) / n,
        "by_cache_size": by_cache_size,
        "decay_sweep": [[d, sweep[d]] for d in sorted(sweep, reverse=True)],
        "correct_at_cache_size": {name: [int(r["correct"][name]) for r in at_cache_size]
                                  for name in at_cache_size[0]["correct"]},
        "oracle_correct": sum(r["correct"][ORACLE] for r in at_cache_size),
    }


def _recall(runs: list[dict], name: str) -> dict:
    """A policy's accuracy over the streams, how often it still held the item at the question,
    and its accuracy on those streams alone (None when it never did); and how often it held the
    item or the token after it."""
    held = [r["correct"][name] for r in runs if r["retained"][name]]
    return {"accuracy": sum(r["correct"][name] for r in runs) / len(runs),
            "retained": len(held) / len(runs),
            "accuracy_if_retained": sum(held) / len(held) if held else None,
            "carried": sum(r["carried"][name] for r in runs) / len(runs)}


def rps_metrics(results: list[dict]) -> dict:
    """Win and loss rates of every policy over the scored rounds, per game and on average."""
    names = list(results[0]["win"])
    return {
        "games": len(results),
        "win_per_game": {name: [r["win"][name] for r in results] for name in names},
        "win": {name: summarize([r["win"][name] for r in results])["mean"] for name in names},
        "lose": {name: summarize([r["lose"][name] for r in results])["mean"] for name in names},
        "oracle_win": summarize([r["oracle_win"] for r in results])["mean"],
        "favourite_share": summarize([r["favourite_share"] for r in results])["mean"],
        # what each policy's cache held when it guessed: how many of the opponent's moves,
        # and which share of them its favourite
        "moves_held": {name: summarize([r["moves_held"][name] for r in results])["mean"]
                       for name in names},
        "favourite_share_held": {
            name: summarize([r["favourite_share_held"][name] for r in results])["mean"]
            for name in names},
    }


def perplexity_metrics(params: Params, results: list[dict[str, torch.Tensor]]) -> dict:
    """Perplexity of each way of reading, per stream and overall, and mean NLL along the
    stream in bins, from the scored positions."""
    nll = {name: torch.cat([r[name] for r in results]) for name in results[0]}  # (streams, n)
    positions = scored_positions(params)
    bins = torch.div(positions, 256, rounding_mode="floor")
    return {
        "streams": params.ppl_streams, "tokens": params.ppl_tokens, "window": params.ppl_window,
        "scored_tokens": int(nll["window"].numel()),
        "per_stream": {name: v.double().mean(dim=1).exp().tolist() for name, v in nll.items()},
        "ppl": {name: math.exp(v.double().mean().item()) for name, v in nll.items()},
        "along_stream": {
            "positions": [int(positions[bins == b].float().mean()) for b in bins.unique()],
            **{name: [v[:, bins == b].double().mean().item() for b in bins.unique()]
               for name, v in nll.items()}},
    }


def decide_claims(params: Params, grocery: dict, rps: dict, perplexity: dict, sinks: dict
                  ) -> list[Claim]:
    """The three claims, each from paired values over the streams (games), SirLLM's under both
    scorings, with the premises the spec declares: recall from a sparse cache that kept the
    request (the oracle's accuracy, the upper end of its interval), play from memory
    (StreamingLLM's win rate, the upper end of its bound) and an attention sink in the trained
    model."""
    correct = grocery["correct_at_cache_size"]
    ceiling = binomial_interval(grocery["oracle_correct"], grocery["streams"], LEVEL)
    wins = rps["win_per_game"]
    per = perplexity["per_stream"]
    return [
        CLAIMS["sirllm-recalls-grocery"].decide(
            {"recall gain": paired_differences(correct["SirLLM"], correct["StreamingLLM"]),
             "recall gain, authors' scoring": paired_differences(correct[REFERENCE],
                                                                 correct["StreamingLLM"])},
            unit="streams", premises={"recall from a sparse cache": ceiling[1]},
            base_models=1, fields={"cache_size": params.cache_size}),
        CLAIMS["sirllm-wins-rps"].decide(
            {"win gain": paired_differences(wins["SirLLM"], wins["StreamingLLM"]),
             "win gain, authors' scoring": paired_differences(wins[REFERENCE],
                                                              wins["StreamingLLM"])},
            unit="games", premises={"play from memory": mean_interval(wins["StreamingLLM"])[1]},
            base_models=1),
        CLAIMS["sinks-keep-perplexity"].decide(
            {"StreamingLLM near recompute": paired_ratios(per["StreamingLLM"], per["recompute"]),
             "window degrades": paired_ratios(per["window"], per["recompute"])},
            unit="streams", premises={"attention sink": sinks["top_head_ratio"]}, base_models=1),
    ]
