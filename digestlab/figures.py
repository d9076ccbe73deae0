"""Figures for the site: one matplotlib style, every figure in every language of the site, and
SVG files that repeat byte for byte.

An experiment's analysis saves what its figures show (`Report.figures`: figure name -> data, in
`figures/data.json` beside `metrics.json`); its module `figures.py` holds `FIGURES`, figure name ->
`draw(data, _)`, where `_` translates a label into the page's language. The render stage draws
them: a new label or translation redraws figures in seconds and never reruns an experiment.
"""

from __future__ import annotations

import importlib
import io
import logging
import warnings
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: figures are files

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager, ticker  # noqa: E402

from digestlab.experiments import (  # noqa: E402
    DEFAULT_PACKAGES,
    FIGURE_DATA,
    ExperimentError,
    load_spec,
)
from digestlab.i18n import translations  # noqa: E402
from digestlab.io import read_json, replace_dir_atomic, write_bytes_atomic  # noqa: E402
from digestlab.papers import LANGUAGES  # noqa: E402

Draw = Callable[[Any, Callable[[str], str]], "matplotlib.figure.Figure"]

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
# Latin text in DejaVu Sans (matplotlib's own); Hangul falls back to Noto Sans CJK (Debian's
# fonts-noto-cjk), which also sizes Korean labels correctly when the layout is computed.
LATIN_FONT, KOREAN_FONT = "DejaVu Sans", "Noto Sans CJK KR"


def figure_file(name: str, lang: str) -> str:
    """The file of figure `name` in language `lang`."""
    return f"{name}.{lang}.svg"


@cache
def font_families() -> tuple[str, ...]:
    """The font stack of every figure: the Korean font only where this machine has it."""
    def known() -> bool:
        return any(f.name == KOREAN_FONT for f in font_manager.fontManager.ttflist)

    if not known():  # installed after matplotlib cached its font list: add it now
        for path in font_manager.findSystemFonts():
            if "NotoSansCJK" in Path(path).name:
                font_manager.fontManager.addfont(path)
    if known():
        return (LATIN_FONT, KOREAN_FONT)
    logging.getLogger(__name__).warning(
        "no %s font (Debian: fonts-noto-cjk): Korean figure labels are sized as Latin text",
        KOREAN_FONT)
    return (LATIN_FONT,)


def new_figure(ncols: int = 1, width: float = 6.4, height: float = 4.0, nrows: int = 1):
    """A figure with `ncols` axes side by side (in `nrows` rows) in the site's style; the axes
    come row by row."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             squeeze=False, layout="constrained")
    return fig, list(axes.flat)


def log_x(ax, ticks=None) -> None:
    """A log-scaled x axis labelled with plain numbers, at `ticks` when given."""
    ax.set_xscale("log")
    if ticks is not None:
        ax.set_xticks(sorted(set(ticks)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def render_svg(draw: Draw, data: Any, lang: str) -> bytes:
    """Draw one figure in language `lang` and return it as SVG, without a timestamp."""
    buffer = io.StringIO()
    with plt.rc_context(STYLE | {"font.family": list(font_families())}), warnings.catch_warnings():
        # without the Korean font, every Hangul glyph would warn once
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig = draw(data, translations(lang).gettext)
        try:
            fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
        finally:
            plt.close(fig)
    return buffer.getvalue().encode("utf-8")


def experiment_figures(experiment: str, packages: tuple[str, ...] = DEFAULT_PACKAGES
                       ) -> dict[str, Draw]:
    """Experiment `experiment`'s figures: name -> draw function (empty when it draws none)."""
    spec = load_spec(experiment, packages)
    try:
        module = importlib.import_module(f"{spec.__name__}.figures")
    except ModuleNotFoundError as error:
        if error.name != f"{spec.__name__}.figures":
            raise
        return {}
    return module.FIGURES


def draw_figures(experiment: str, figures_dir: str | Path, out_dir: str | Path,
                 packages: tuple[str, ...] = DEFAULT_PACKAGES,
                 languages: Iterable[str] = LANGUAGES) -> list[str]:
    """Draw every figure a result saved data for (in `figures_dir`), in every language, into
    `out_dir` (replaced as a whole); return the files written."""
    draws = experiment_figures(experiment, packages)
    data_path = Path(figures_dir) / FIGURE_DATA
    data = read_json(data_path)
    unknown = sorted(set(data) - set(draws))
    if unknown:
        raise ExperimentError(f"{data_path}: experiment {experiment!r} draws no figure named "
                              f"{', '.join(unknown)}")
    written = []
    with replace_dir_atomic(out_dir) as staging:
        for name, figure_data in data.items():
            for lang in languages:
                write_bytes_atomic(staging / figure_file(name, lang),
                                   render_svg(draws[name], figure_data, lang))
                written.append(figure_file(name, lang))
    return written
