"""The SPO experiment's figure, drawn from the data `run.py` saves."""

from __future__ import annotations

from statistics import fmean

from digestlab.experiments.spo import LAGRANGIAN, MIXED, ORACLE, SEQUENTIAL
from digestlab.figures import new_figure


def score_plane(data: dict, _):
    """Top: helpfulness against harmlessness, every method's mean +- sd over seeds, and
    sequential DPO's curve for each seed (thin) from the round-1 policy to its full round.
    Bottom: what claim 1 reads, each round-2 method's helpfulness above that curve, seed by
    seed. data: {"curves": one [[harmless, helpful], ...] per seed, "curve_steps", "spo": SPO's
    method names, "methods": name -> {"helpful", "harmless": {"mean", "sd"}, "above_curve":
    per-seed values or None}}."""
    fig, (ax, right) = new_figure(nrows=2, width=7.6, height=4.0)
    curves, methods = data["curves"], data["methods"]
    for curve in curves:
        ax.plot([x for x, _y in curve], [y for _x, y in curve], color="tab:blue", alpha=0.25,
                linewidth=1)
    mean_curve = [(fmean(x for x, _y in column), fmean(y for _x, y in column))
                  for column in zip(*curves, strict=True)]
    ax.plot([x for x, _y in mean_curve], [y for _x, y in mean_curve], color="tab:blue",
            linewidth=2, marker="o", markersize=3,
            label=_("%(method)s (steps %(steps)s)")
            % {"method": SEQUENTIAL, "steps": ", ".join(map(str, data["curve_steps"]))})
    colours = {"SFT": "black", "round 1": "tab:gray", SEQUENTIAL: "tab:blue"}
    shades = ["#f4a3a3", "tab:red", "#7a0f0f"]
    for i, name in enumerate(data["spo"]):
        colours[name] = shades[i % len(shades)]
    colours |= {ORACLE: "tab:orange", MIXED: "tab:green", LAGRANGIAN: "tab:purple"}
    labels = {"SFT": _("SFT"), "round 1": _("round 1")}
    for name, colour in colours.items():
        if name == SEQUENTIAL:
            continue
        m = methods[name]
        ax.errorbar(m["harmless"]["mean"], m["helpful"]["mean"], xerr=m["harmless"]["sd"] or 0,
                    yerr=m["helpful"]["sd"] or 0, fmt="s" if name.startswith("SPO") else "o",
                    color=colour, capsize=3, label=labels.get(name, name), markersize=5)
    ax.set_xlabel(_("harmless (share of replies)"))
    ax.set_ylabel(_("helpful (share of replies)"))
    ax.set_title(_("mean ± sd over %(seeds)s seeds") % {"seeds": len(curves)})
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))

    names = [n for n in colours if n not in ("SFT", "round 1")]
    for row, name in enumerate(names):
        values = [100 * v for v in methods[name]["above_curve"]]
        right.scatter(values, [row] * len(values), color=colours[name], s=18, alpha=0.7)
        right.plot([fmean(values)] * 2, [row - 0.3, row + 0.3], color=colours[name],
                   linewidth=2)
    right.axvline(0, color="black", linewidth=0.8)
    right.set_yticks(range(len(names)), names)
    right.invert_yaxis()
    right.set_xlabel(_("helpful above sequential DPO's curve (points)"))
    right.set_title(_("at each method's own harmlessness, per seed"))
    return fig


FIGURES = {"score_plane": score_plane}
