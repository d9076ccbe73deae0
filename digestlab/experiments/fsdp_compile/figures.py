"""The FSDP + torch.compile experiment's figures, drawn from the data `run.py` saves."""

from __future__ import annotations

import math

from digestlab.figures import new_figure


def throughput(data: list[dict], _):
    """Tokens/s (each run a dot, the mean a bar) and MFU of every configuration.
    data: one {"name", "tokens_per_s", "tokens_per_s_runs", "mfu"} per configuration."""
    fig, (speed, mfu) = new_figure(ncols=2, width=5.2, height=0.45 * len(data) + 1.4)
    rows = data[::-1]
    y = range(len(rows))
    speed.barh(y, [row["tokens_per_s"] for row in rows], color="tab:blue", alpha=0.35)
    for i, row in enumerate(rows):
        speed.plot(row["tokens_per_s_runs"], [i] * len(row["tokens_per_s_runs"]), "o",
                   color="tab:blue", ms=3)
    speed.set_yticks(list(y), [row["name"] for row in rows])
    speed.set(xlabel=_("training tokens per second"), title=_("throughput (dots: runs)"))
    mfu.barh(y, [100 * (row["mfu"] or 0) for row in rows], color="tab:orange", alpha=0.6)
    mfu.set_yticks(list(y), [""] * len(rows))
    mfu.set(xlabel=_("MFU (%) against the measured matmul peak"),
            title=_("model FLOPs utilisation"))
    return fig


def checkpointing(data: dict, _):
    """Training memory and tokens/s against the checkpointed fraction, each round a line.
    data: {"fractions", "memory_mb": one list per round, "tokens_per_s": one list per round}."""
    fig, (left, right) = new_figure(ncols=2, width=4.6, height=3.4)
    fractions = data["fractions"]
    for memory in data["memory_mb"]:
        left.plot(fractions, memory, "o-", color="tab:green", lw=1, ms=4, alpha=0.7)
    for speed in data["tokens_per_s"]:
        right.plot(fractions, speed, "o-", color="tab:blue", lw=1, ms=4, alpha=0.7)
    left.set(xlabel=_("fraction of blocks checkpointed"), ylabel=_("training memory (MB)"),
             title=_("peak memory above the built model"), xticks=fractions)
    right.set(xlabel=_("fraction of blocks checkpointed"),
              ylabel=_("training tokens per second"),
              title=_("throughput (one line per round)"), xticks=fractions)
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    return fig


def loss_curves(data: dict, _):
    """Loss curves of one seed (eager, compiled, FSDP at each world size) and of a second
    seed; beside them the step-by-step gaps, on a log scale. data: {"eager": [seed 0, seed 1],
    "compile": [seed 0], "fsdp": world size -> seed 0's curve}."""
    fig, (curves, gaps) = new_figure(ncols=2, width=5.2, height=3.6)
    eager, eager_1, compiled = data["eager"][0], data["eager"][1], data["compile"][0]
    sharded = {int(world): curve for world, curve in data["fsdp"].items()}
    steps = range(1, len(eager) + 1)
    for curve, style, colour, label in (
            (eager, "-", "tab:gray", _("eager, seed 0")),
            (eager_1, "--", "tab:gray", _("eager, seed 1")),
            (compiled, ":", "tab:red", _("compile, seed 0"))):
        curves.plot(steps, curve, style, color=colour, lw=1.2, label=label)
    for world, curve in sorted(sharded.items()):
        curves.plot(steps, curve, "-.", lw=1,
                    label=_("FSDP x%(world)s, seed 0") % {"world": world})
    curves.set(xlabel=_("step"), ylabel=_("training loss (nats per byte)"),
               title=_("loss curves"))
    curves.legend(fontsize=8)

    def gap_line(a, b, label, style, colour=None):
        gap = [abs(x - y) if x != y else math.nan for x, y in zip(a, b, strict=True)]
        gaps.plot(steps, gap, style, color=colour, lw=1.2, label=label)

    gap_line(eager, eager_1, _("seed 0 vs seed 1"), "--", "tab:gray")
    gap_line(eager, compiled, _("compile vs eager"), ":", "tab:red")
    if 1 in sharded and 2 in sharded:
        gap_line(sharded[1], sharded[2], _("FSDP x2 vs x1"), "-.", "tab:purple")
    gaps.set_yscale("log")
    gaps.set(xlabel=_("step"), ylabel=_("|Δ training loss| (nats)"),
             title=_("gaps (missing: exactly 0)"))
    gaps.legend(fontsize=8)
    return fig


FIGURES = {"throughput": throughput, "checkpointing": checkpointing, "loss_curves": loss_curves}
