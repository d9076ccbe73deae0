from digestlab.experiments import pretrain
from digestlab.workflow import logged

with logged(snakemake.log[0]):
    pretrain(
        snakemake.params.experiment,
        snakemake.wildcards.base,
        snakemake.params.scale,
        dict(snakemake.params.values),
        snakemake.output[0],
        packages=tuple(snakemake.config["experiment_packages"]),
        threads=snakemake.threads,
        bases={name: path for name, path in snakemake.input.items() if name != "code"},
    )
