from digestlab.experiments import reproduce
from digestlab.workflow import logged

with logged(snakemake.log[0]):
    reproduce(
        snakemake.params.experiment,
        snakemake.params.scale,
        dict(snakemake.params.values),
        snakemake.output.metrics,
        snakemake.output.figures,
        packages=tuple(snakemake.config["experiment_packages"]),
        threads=snakemake.threads,
        bases={base: snakemake.input[base] for base in snakemake.params.bases},
    )
