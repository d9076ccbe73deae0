from digestlab.render import render_site_pages
from digestlab.workflow import logged

with logged(snakemake.log[0]):
    render_site_pages(
        entries=list(snakemake.input.entries),
        tags=snakemake.input.tags,
        arxiv_dir="resources/arxiv",
        results_dir="results",
        out_dir="notes",
    )
