"""The FSDP + torch.compile experiment's figures, drawn from the data `run.py` saves."""

from __future__ import annotations

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
    """Training memory (with the cap) and compiled tokens/s against the checkpointed fraction,
    each round a line. data: {"fractions", "memory_mb": one list per round, "cap_mb",
    "tokens_per_s": one list per round}."""
    fig, (left, right) = new_figure(ncols=2, width=4.6, height=3.4)
    fractions = data["fractions"]
    for memory in data["memory_mb"]:
        left.plot(fractions, memory, "o-", color="tab:green", lw=1, ms=4, alpha=0.7)
    left.axhline(data["cap_mb"], color="tab:red", ls="--", lw=1, label=_("the cap"))
    left.legend(fontsize=8)
    for speed in data["tokens_per_s"]:
        right.plot(fractions, speed, "o-", color="tab:blue", lw=1, ms=4, alpha=0.7)
    left.set(xlabel=_("fraction of blocks checkpointed"), ylabel=_("training memory (MB)"),
             title=_("peak memory above the built model"), xticks=fractions)
    right.set(xlabel=_("fraction of blocks checkpointed"),
              ylabel=_("training tokens per second"),
              title=_("compiled throughput (one line per round)"), xticks=fractions)
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    return fig


def parity(data: dict, _):
    """The parity runs' final validation loss by seed and lever (left), and what compile and
    the most processes shift it by, in sds over seeds of the eager loss, beside the band of one
    sd (right). data: {"losses": configuration -> loss by seed, "shifts": see run.shifts}."""
    fig, (losses, shifted) = new_figure(ncols=2, width=5.2, height=3.4)
    markers = {"eager": ("o", "tab:gray"), "compile": ("x", "tab:red")}
    for name, values in data["losses"].items():
        marker, colour = markers.get(name, ("^", "tab:purple"))
        losses.plot(range(len(values)), values, marker, color=colour, ms=6, mfc="none",
                    label=name)
    losses.set(xlabel=_("seed"), ylabel=_("final validation loss (nats per byte)"),
               title=_("each lever from each seed"))
    losses.legend(fontsize=8)
    shift = data["shifts"]
    rows = [(_("compile − eager"), shift["compile"], "tab:red"),
            (_("FSDP x%(world)s − eager") % {"world": shift["world"]}, shift["fsdp"],
             "tab:purple")]
    shifted.axvspan(-1, 1, color="tab:green", alpha=0.12, label=_("one seed sd"))
    for y, (_label, values, colour) in enumerate(rows):
        shifted.plot(values, [y] * len(values), "o", color=colour, ms=5, alpha=0.7)
        shifted.plot([sum(values) / len(values)], [y], "|", color="black", ms=14, mew=2)
    shifted.set_yticks(range(len(rows)), [label for label, _v, _c in rows])
    shifted.set_ylim(-0.7, len(rows) - 0.3)
    shifted.set(xlabel=_("shift in final loss (sds over seeds)"),
                title=_("per seed (bar: mean)"))
    shifted.legend(fontsize=8, loc="lower right")
    return fig


FIGURES = {"throughput": throughput, "checkpointing": checkpointing, "parity": parity}
