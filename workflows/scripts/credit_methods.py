from digestlab.io import read_json, write_json_atomic
from digestlab.methods import credit
from digestlab.workflow import logged

with logged(snakemake.log[0]):
    write_json_atomic(snakemake.output[0], credit(
        read_json(snakemake.input.metrics), tuple(snakemake.config["experiment_packages"])))
