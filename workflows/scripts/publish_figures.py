from digestlab.render import publish_figures
from digestlab.workflow import logged

with logged(snakemake.log[0]):
    publish_figures(snakemake.input[0], snakemake.output[0])
