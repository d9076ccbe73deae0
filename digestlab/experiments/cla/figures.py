"""The CLA experiment's figures, drawn from the data `run.py` saves (see digestlab.figures)."""

from __future__ import annotations

from digestlab.experiments.cla import DESIGNS
from digestlab.figures import log_x, new_figure

# One colour per design, the same in every figure; one line style per seed.
COLOURS = dict(zip(DESIGNS, ("tab:gray", "tab:purple", "tab:blue", "tab:green", "tab:orange",
                              "tab:red", "tab:pink", "tab:brown"), strict=True))
SEED_STYLES = ("-", "--", ":", "-.")


def loss_curves(data: dict, _):
    """Training loss (left) and validation loss (right) against tokens, every design and seed.
    data: design -> one {"train": [[tokens, loss], ...], "val": [...]} per seed."""
    fig, (left, right) = new_figure(ncols=2, width=5.2, height=3.8)
    for name, curves in data.items():
        for i, curve in enumerate(curves):
            style = SEED_STYLES[i % len(SEED_STYLES)]
            label = name if i == 0 else None
            tokens, losses = zip(*curve["train"], strict=True)
            left.plot([t / 1e6 for t in tokens], losses, style, color=COLOURS[name], lw=1,
                      label=label)
            tokens, losses = zip(*curve["val"], strict=True)
            right.plot([t / 1e6 for t in tokens], losses, style, color=COLOURS[name], lw=1,
                       marker="o", ms=3, label=label)
    # The first steps fall from ln(256) = 5.5; the comparison lives after the first fifth.
    left.set_ylim(top=max(loss for curves in data.values() for c in curves
                          for _step, loss in c["train"][len(c["train"]) // 5:]))
    left.set(xlabel=_("training tokens (millions)"), ylabel=_("training loss (nats per byte)"),
             title=_("training loss, every design and seed (line style: seed)"))
    right.set(xlabel=_("training tokens (millions)"),
              ylabel=_("validation loss (nats per byte)"), title=_("validation loss"))
    left.legend(fontsize=8)
    return fig


def ppl_vs_kv_bytes(data: dict, _):
    """Validation perplexity against KV bytes per token (log x), ours beside the paper's.
    data: {"designs": design -> {"kv_bytes_per_token", "val_ppl_mean", "val_ppl_sd"},
    "paper": [[design, ppl, kv bytes], ...]}."""
    fig, (ours, paper) = new_figure(ncols=2, width=5.2, height=3.8)
    designs = data["designs"]
    # Designs with equal KV bytes (MQA d/2 and MQA-CLA2) share an x: stack their labels.
    by_kv = sorted(designs, key=lambda n: (designs[n]["kv_bytes_per_token"],
                                           -designs[n]["val_ppl_mean"]))
    for name in by_kv:
        v = designs[name]
        same_x = [n for n in by_kv if designs[n]["kv_bytes_per_token"] == v["kv_bytes_per_token"]]
        ours.errorbar(v["kv_bytes_per_token"], v["val_ppl_mean"], yerr=v["val_ppl_sd"] or 0.0,
                      fmt="o", capsize=3, color=COLOURS[name])
        ours.annotate(name, (v["kv_bytes_per_token"], v["val_ppl_mean"]),
                      textcoords="offset points", xytext=(5, 4 - 11 * same_x.index(name)),
                      fontsize=8)
    log_x(ours, ticks=[v["kv_bytes_per_token"] for v in designs.values()])
    ours.set(xlabel=_("KV-cache bytes per token (bf16)"), ylabel=_("validation perplexity"),
             title=_("this reproduction (mean ± sd over seeds)"))
    for name, ppl, kv in data["paper"]:
        paper.plot(kv, ppl, "s", color="tab:gray")
        # the paper's equal-bytes pairs (5,120; about 3,600) share an x: the lower one's label
        # goes below its point
        below = any(abs(other_kv / kv - 1) < 0.05 and other_ppl > ppl
                    for _n, other_ppl, other_kv in data["paper"] if _n != name)
        paper.annotate(name, (kv, ppl), textcoords="offset points", fontsize=8,
                       xytext=(5, -10) if below else (5, 4))
    ticks = []
    for kv in sorted(kv for _name, _ppl, kv in data["paper"]):
        if not ticks or kv > ticks[-1] * 1.05:  # 3,584 and 3,600 would print on each other
            ticks.append(kv)
    log_x(paper, ticks=ticks)
    paper.set(xlabel=_("KV-cache bytes per token (bf16)"), ylabel=_("validation perplexity"),
              title=_("the paper, 1B parameters"))
    return fig


FIGURES = {"ppl_vs_kv_bytes": ppl_vs_kv_bytes, "loss_curves": loss_curves}
