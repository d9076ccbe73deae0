"""The SirLLM experiment's figures, drawn from the data `run.py` saves."""

from __future__ import annotations

import math

from matplotlib.ticker import EngFormatter

from digestlab.claims import summarize
from digestlab.experiments.sirllm import SINK_RATIO
from digestlab.figures import new_figure

COLOURS = {"window": "tab:gray", "StreamingLLM": "tab:blue", "random": "tab:olive",
           "SirLLM": "tab:red", "SirLLM (reference scoring)": "tab:orange", "oracle": "tab:green",
           "recompute": "black", "recompute without <bos>": "tab:purple"}


def grocery_recall(data: dict, _):
    """Recall accuracy against the cache size for each dialogue model (left: as trained;
    middle: fine-tuned for a sparse cache), and against SirLLM's decay for the claims' model
    (right). data: {"cache_sizes", "cache_size", "claims_model", "by_model": model -> the
    "grocery" of that model}."""
    fig, (before, after, right) = new_figure(ncols=3, width=3.5, height=3.6)
    cache_sizes, models = data["cache_sizes"], data["by_model"]
    titles = {"lm": _("as trained"), "robust": _("fine-tuned for a sparse cache")}
    for ax, (model, grocery) in zip((before, after), models.items(), strict=True):
        by_cache_size = grocery["by_cache_size"]
        for name, colour in COLOURS.items():
            if name in by_cache_size[str(cache_sizes[0])]:
                ax.plot(cache_sizes, [by_cache_size[str(b)][name]["accuracy"] for b in cache_sizes],
                        "o-", color=colour, label=name)
                ax.plot(cache_sizes, [by_cache_size[str(b)][name]["retained"] for b in cache_sizes],
                        "s--", color=colour, ms=3, lw=1)
        ax.axhline(grocery["in_context_accuracy"], color="black", ls="--", lw=1)
        ax.set(xlabel=_("cache size (tokens)"), title=titles.get(model, model))
        ax.set_xticks(cache_sizes)
    claimed = models[data["claims_model"]]
    before.set_ylabel(_("recall accuracy (4 choices); dashed: item still cached"))
    after.legend(fontsize=7)
    decays, accuracy = zip(*claimed["decay_sweep"], strict=True)
    right.plot(decays, accuracy, "o-", color=COLOURS["SirLLM"], label="SirLLM")
    right.axhline(claimed["by_cache_size"][str(data["cache_size"])]["StreamingLLM"]["accuracy"],
                  color=COLOURS["StreamingLLM"], lw=1, label="StreamingLLM")
    right.set(xlabel=_("decay ratio per request"),
              title=_("SirLLM's decay at %(cache_size)s tokens")
              % {"cache_size": data["cache_size"]})
    right.text(0.02, 0.03, _("dotted: chance; black dashed: nothing evicted (short dialogues)"),
               transform=right.transAxes, fontsize=7)
    right.legend(fontsize=7)
    for ax in (before, after, right):
        ax.axhline(0.25, color="gray", ls=":", lw=1)
        ax.set_ylim(0, 1.02)
    fig.suptitle(_("grocery, item ~%(distance)s tokens back")
                 % {"distance": f"{claimed['item_distance_mean']:.0f}"}, fontsize=10)
    return fig


def rps_win_rate(data: dict, _):
    """Win rate of every policy, mean and 95% band over games, with the perfect-memory player.
    data: {"win_per_game": policy -> one win rate per game, "oracle_win"}."""
    fig, (ax,) = new_figure(width=6.4, height=3.6)
    names = list(data["win_per_game"])
    for i, name in enumerate(names):
        stats = summarize(data["win_per_game"][name])
        half = 1.96 * (stats["sd"] or 0.0) / math.sqrt(stats["n"])
        ax.barh(i, stats["mean"], xerr=half, color=COLOURS.get(name, "tab:pink"), capsize=3)
    ax.axvline(data["oracle_win"], color="black", ls="--", lw=1, label=_("perfect memory"))
    ax.axvline(1 / 3, color="gray", ls=":", lw=1, label=_("random play"))
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set(xlabel=_("win rate over the scored rounds"), xlim=(0, 1),
           title=_("rock-paper-scissors against a biased opponent"))
    ax.legend(fontsize=7)
    return fig


def streaming_perplexity(data: dict, _):
    """Mean NLL along the stream for each way of reading it. data: metrics.json's
    "perplexity"."""
    fig, (ax,) = new_figure(width=6.4, height=3.6)
    along = data["along_stream"]
    for name in ("window", "StreamingLLM", "recompute", "recompute without <bos>"):
        ax.plot(along["positions"], along[name], "o-", ms=3, color=COLOURS[name],
                label=f"{name} ({data['ppl'][name]:.3f})")
    ax.set(xlabel=_("position in the stream (tokens)"), ylabel=_("mean NLL (nats per token)"),
           title=_("cache of %(window)s tokens (perplexity in brackets)")
           % {"window": data["window"]})
    ax.legend(fontsize=7)
    return fig


def attention_sinks(data: dict, _):
    """Attention on the first token against a uniform head's: by layer in the trained model
    (left), and along training, stage by stage (right). data: metrics.json's
    "attention_sinks"."""
    fig, (left, right) = new_figure(ncols=2, width=5.2, height=3.8)
    uniform = data["uniform"]
    layers = range(len(data["per_layer"]))
    top = [a / uniform for a in data["top_head_per_layer"]]
    left.bar([i - 0.2 for i in layers], [a / uniform for a in data["per_layer"]], width=0.4,
             label=_("mean head"))
    left.bar([i + 0.2 for i in layers], top, width=0.4, label=_("top head"))
    left.set(xlabel=_("layer"), ylabel=_("attention on the first token / uniform's"),
             title=_("the trained model, by layer"))
    left.set_xticks(list(layers))
    highest, previous_end = max(top), None
    for curve in data["along_training"].values():  # pretraining, then any fine-tuning
        first = previous_end is None
        right.plot(curve["tokens"], curve["mean_head"], "o-", ms=3, color="tab:blue",
                   label=_("mean head") if first else None)
        right.plot(curve["tokens"], curve["top_head"], "o-", ms=3, color="tab:orange",
                   label=_("top head") if first else None)
        if not first:
            right.axvline(previous_end, color="gray", lw=1)
            right.text(previous_end, 0.08, " " + _("fine-tuning"), fontsize=7, color="gray")
        highest, previous_end = max(highest, *curve["top_head"]), curve["tokens"][-1]
    right.set(xlabel=_("training tokens"), title=_("along training"))
    right.xaxis.set_major_formatter(EngFormatter())  # 2M, not 2 with 1e6 in the corner
    for ax in (left, right):
        ax.axhline(1.0, color="gray", ls=":", lw=1, label=_("uniform attention"))
        ax.axhline(SINK_RATIO, color="black", ls="--", lw=1, label=_("a sink, by our bar"))
        ax.set_ylim(0, max(SINK_RATIO + 1, highest * 1.1))
    left.legend(fontsize=7)
    return fig


FIGURES = {"grocery_recall": grocery_recall, "rps_win_rate": rps_win_rate,
           "streaming_perplexity": streaming_perplexity, "attention_sinks": attention_sinks}
