from digestlab.render import render_paper_pages
from digestlab.workflow import logged

with logged(snakemake.log[0]):
    render_paper_pages(
        entry=snakemake.input.entry,
        tags=snakemake.input.tags,
        arxiv=snakemake.input.arxiv[0] if snakemake.input.arxiv else None,
        metrics=snakemake.input.metrics[0] if snakemake.input.metrics else None,
        out={"ko": snakemake.output.ko, "en": snakemake.output.en},
        related_entries=list(snakemake.input.related),
        related_arxiv=list(snakemake.input.related_arxiv),
        methods=list(snakemake.input.methods),
        linked_entries=list(snakemake.input.linked),
    )
