"""The SPO experiment's figure, drawn from the data `run.py` saves."""

from __future__ import annotations

from statistics import fmean

from digestlab.experiments.spo import LAGRANGIAN, MIXED, ORACLE, SEQUENTIAL
from digestlab.figures import new_figure

BASELINE_COLOURS = {SEQUENTIAL: "tab:blue", MIXED: "tab:green", LAGRANGIAN: "tab:purple"}


def score_plane(data: dict, _):
    """Top: helpfulness against harmlessness, each baseline's settings (means over seeds, from
    the round-1 policy where all start) and its frontier, and every other policy's mean +- sd.
    Bottom: what claim 1 reads, SPO's (and the oracle's) helpfulness above each baseline's
    frontier, seed by seed. data: {"seeds", "baselines": name -> {"points": [[harmless,
    helpful], ...], "frontier": the same, "settings"}, "spo": SPO's method names, "claimed": the
    one the claims read, "methods": name -> {"helpful", "harmless": {"mean", "sd"}, "above":
    baseline -> per-seed values}}."""
    fig, (ax, below) = new_figure(nrows=2, width=7.6, height=4.4)
    methods = data["methods"]
    for name, baseline in data["baselines"].items():
        colour = BASELINE_COLOURS[name]
        points = baseline["points"][1:]  # the first is the round-1 policy, drawn below
        ax.scatter([x for x, _y in points], [y for _x, y in points], color=colour, s=14,
                   alpha=0.6)
        ax.plot([x for x, _y in baseline["frontier"]], [y for _x, y in baseline["frontier"]],
                color=colour, linewidth=1.8, label=_("%(method)s, frontier") % {"method": name})
    colours = {"SFT": "black", "round 1": "tab:gray", ORACLE: "tab:orange"}
    shades = ["#f4a3a3", "tab:red", "#7a0f0f"]
    for i, name in enumerate(data["spo"]):
        colours[name] = shades[i % len(shades)]
    labels = {"SFT": _("SFT"), "round 1": _("round 1")}
    for name, colour in colours.items():
        m = methods[name]
        ax.errorbar(m["harmless"]["mean"], m["helpful"]["mean"], xerr=m["harmless"]["sd"] or 0,
                    yerr=m["helpful"]["sd"] or 0, fmt="s" if name.startswith("SPO") else "o",
                    color=colour, capsize=3, label=labels.get(name, name), markersize=5)
    ax.set_xlabel(_("harmless (share of replies)"))
    ax.set_ylabel(_("helpful (share of replies)"))
    ax.set_title(_("mean ± sd over %(seeds)s seeds") % {"seeds": data["seeds"]})
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))

    rows = [(method, baseline) for baseline in data["baselines"]
            for method in (data["claimed"], ORACLE)]
    for row, (method, baseline) in enumerate(rows):
        values = [100 * v for v in methods[method]["above"][baseline]]
        colour = colours[method]
        below.scatter(values, [row] * len(values), color=colour, s=18, alpha=0.7)
        below.plot([fmean(values)] * 2, [row - 0.3, row + 0.3], color=colour, linewidth=2)
    below.axvline(0, color="black", linewidth=0.8)
    below.set_yticks(range(len(rows)), [_("%(method)s above %(baseline)s")
                                        % {"method": m, "baseline": b} for m, b in rows])
    below.invert_yaxis()
    below.set_xlabel(_("helpful above the baseline's frontier (points)"))
    below.set_title(_("at the method's own harmlessness, per seed"))
    return fig


FIGURES = {"score_plane": score_plane}
