"""Figures for the site: one matplotlib style, and SVG files that repeat byte for byte."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are files

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from digestlab.io import write_bytes_atomic  # noqa: E402

STYLE = {
    "figure.dpi": 100,
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "digestlab",  # fixed element ids, so the same data gives the same file
    "svg.fonttype": "none",  # text stays text: smaller files that the page's fonts render
}


def new_figure(ncols: int = 1, width: float = 6.4, height: float = 4.0, nrows: int = 1):
    """A figure with `ncols` axes side by side (in `nrows` rows) in the site's style; the axes
    come row by row."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
            layout="constrained"
        )
    return fig, list(axes.flat)


def log_x(ax, ticks=None) -> None:
    """A log-scaled x axis labelled with plain numbers, at `ticks` when given."""
    ax.set_xscale("log")
    if ticks is not None:
        ax.set_xticks(sorted(set(ticks)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def save_svg(fig, path: str | Path) -> str:
    """Write `fig` as SVG without a timestamp, atomically; return the file name."""
    buffer = io.StringIO()
    with plt.rc_context(STYLE):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))
    return Path(path).name
