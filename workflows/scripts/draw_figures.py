from digestlab.figures import draw_figures
from digestlab.workflow import logged

with logged(snakemake.log[0]):
    draw_figures(
        snakemake.params.experiment,
        snakemake.input.data,
        snakemake.output[0],
        packages=tuple(snakemake.config["experiment_packages"]),
    )
