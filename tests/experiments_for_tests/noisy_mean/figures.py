"""The noisy_mean test experiment's one figure: each seed's mean against the bound."""

from digestlab.figures import new_figure


def means(data, _):
    fig, (ax,) = new_figure(width=3, height=2)
    ax.plot(range(len(data["means"])), data["means"], "o")
    ax.axhline(data["bound"], color="black")
    ax.set(xlabel=_("seed"), ylabel=_("validation loss"))  # the second is in the catalog
    return fig


FIGURES = {"means": means}
