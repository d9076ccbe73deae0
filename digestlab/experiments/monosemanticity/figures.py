"""The Scaling Monosemanticity experiment's figures, drawn from the data `run.py` saves."""

from __future__ import annotations

import numpy as np

from digestlab.experiments.monosemanticity import EV_BAR
from digestlab.figures import log_x, new_figure


def sae_sweep(data: dict, _):
    """Explained variance against L0: the ReLU lambda sweep on the tuning seeds, and every
    scored SAE. data: {"width", "layer", "tuning_seeds", "sweep", "relu", "topk"}, each SAE a
    {"l0", "explained_variance"} (the sweep's also "l1_coeff")."""
    fig, (ax,) = new_figure()
    sweep = sorted(data["sweep"], key=lambda r: r["l0"])
    seeds = ", ".join(str(s) for s in data["tuning_seeds"])
    ax.plot([r["l0"] for r in sweep], [r["explained_variance"] for r in sweep], "o-",
            color="C0", label=_("ReLU, λ sweep (tuning seeds %(seeds)s)") % {"seeds": seeds})
    for r in sweep:
        ax.annotate(f"λ={r['l1_coeff']:g}", (r["l0"], r["explained_variance"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=8)
    for kind, color, marker in (("relu", "C0", "s"), ("topk", "C1", "^")):
        rows = data[kind]
        name = {"relu": "ReLU", "topk": "TopK"}[kind]
        ax.scatter([r["l0"] for r in rows], [r["explained_variance"] for r in rows],
                   marker=marker, color=color, zorder=3,
                   label=_("%(sae)s, scored seeds") % {"sae": name})
    ax.axhline(EV_BAR, color="grey", linestyle="--", linewidth=1)
    l0s = [r["l0"] for r in [*sweep, *data["relu"], *data["topk"]]]
    log_x(ax, ticks=sorted({round(x) for x in l0s}))
    ax.set_xlabel(_("L0 (active features per byte)"))
    ax.set_ylabel(_("explained variance"))
    ax.set_title(_("SAEs of width %(width)s on the residual stream after block %(layer)s")
                 % {"width": data["width"], "layer": data["layer"]})
    ax.legend(fontsize=8)
    return fig


def feature_activations(data: list[dict], _):
    """Each browsed feature's activation at the output position: clean against buggy.
    data: one {"feature", "detects", "at_output": {"clean": [...], "buggy": [...]}} each."""
    ncols = min(3, len(data))
    fig, axes = new_figure(ncols=ncols, width=2.6, height=2.4, nrows=-(-len(data) // ncols))
    for ax in axes[len(data):]:
        ax.set_visible(False)
    for ax, f in zip(axes, data, strict=False):
        top = max([*f["at_output"]["clean"], *f["at_output"]["buggy"], 1e-6])
        bins = np.linspace(0, top, 21)
        ax.hist(f["at_output"]["clean"], bins=bins, color="C0", alpha=0.6, label=_("clean"))
        ax.hist(f["at_output"]["buggy"], bins=bins, color="C3", alpha=0.6, label=_("buggy"))
        ax.set_yscale("log")
        ax.set_title(f"#{f['feature']}: {f['detects']}", fontsize=9)
        ax.set_xlabel(_("activation"))
    axes[0].legend(fontsize=8)
    return fig


def dose_response(data: dict, _):
    """The rate of each outcome against the dose, for the general feature (with its 95% interval
    over programs) and its matched random controls, clamped at every position (top) and at the
    output positions alone (bottom). data: {"seed", "fixed", "unclamped", "curve"}, each run of
    the curve a {"dose", "placement", "up", "down"} (steering.steer_run)."""
    panels = ((_("clean programs: an error's name written"), "up", "feature", "controls"),
              (_("buggy programs: an error's name written"), "down", "feature", "controls"),
              (_("buggy programs: the bug-free output written"), "down", "bug_free",
               "control_bug_free"))
    placements = (("every", _("clamped at every position")),
                  ("output", _("clamped at the output alone")))
    fig, axes = new_figure(ncols=3, nrows=2, width=3.3, height=2.9)
    for row, (placement, where) in enumerate(placements):
        runs = sorted((r for r in data["curve"] if r["placement"] == placement),
                      key=lambda r: r["dose"])
        doses = [r["dose"] for r in runs]
        for column, (title, direction, key, controls_key) in enumerate(panels):
            ax = axes[3 * row + column]
            rates = [r[direction][key] for r in runs]
            ax.fill_between(doses, [x["interval"][0] for x in rates],
                            [x["interval"][1] for x in rates], color="C3", alpha=0.2,
                            linewidth=0)
            ax.plot(doses, [x["rate"] for x in rates], "o-", color="C3",
                    label=_("bug feature"))
            controls = np.array([r[direction][controls_key] for r in runs])  # (doses, controls)
            for i in range(controls.shape[1]):
                ax.plot(doses, controls[:, i], color="C0", alpha=0.35, linewidth=0.8,
                        label=_("random features") if i == 0 else None)
            ax.axhline(data["unclamped"][direction][key]["rate"], color="grey", linestyle=":",
                       label=_("no clamp"))
            ax.axvline(data["fixed"], color="grey", linewidth=0.6)
            log_x(ax, ticks=doses)
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(title if row == 0 else "", fontsize=9)
            if column == 0:
                ax.set_ylabel(where + "\n" + _("rate"), fontsize=9)
            if row == 1:
                ax.set_xlabel(_("dose (× largest activation)"))
    axes[0].legend(fontsize=7, loc="upper left")
    return fig


FIGURES = {"sae_sweep": sae_sweep, "feature_activations": feature_activations,
           "dose_response": dose_response}
