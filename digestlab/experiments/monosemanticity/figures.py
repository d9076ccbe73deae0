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


def steering(data: list[dict], _):
    """Error predictions before and after clamping, for the feature and the controls.
    data: one {"up", "down"} per analysed SAE, each {"base": {"rate"}, "clamped": {"rate"},
    "control_rates"}."""
    fig, axes = new_figure(ncols=2, width=3.6, height=3.2)
    for ax, direction, title in ((axes[0], "up", _("clean programs, clamped high")),
                                 (axes[1], "down", _("buggy programs, clamped negative"))):
        for i, sae in enumerate(data):
            st = sae[direction]
            x = i * 0.08
            ax.scatter([0 + x], [st["base"]["rate"]], color="grey")
            ax.scatter([1 + x], [st["clamped"]["rate"]], color="C3")
            ax.scatter([2 + x] * len(st["control_rates"]), st["control_rates"], color="C0",
                       s=10)
        ax.set_xticks([0, 1, 2], [_("no clamp"), _("code-error\nfeature"),
                                  _("random\nfeatures")])
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(_("predicts an error"))
    return fig


FIGURES = {"sae_sweep": sae_sweep, "feature_activations": feature_activations,
           "steering": steering}
