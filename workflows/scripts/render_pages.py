from digestlab.render import render_site_pages
from digestlab.workflow import logged

with logged(snakemake.log[0]):
    render_site_pages(
        entries=list(snakemake.input.entries),
        tags=snakemake.input.tags,
        arxiv=dict(snakemake.params.arxiv),
        metrics=dict(snakemake.params.metrics),
        out_dir="notes",
        methods=dict(snakemake.params.methods),
    )
