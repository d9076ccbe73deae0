from digestlab.site import build_site
from digestlab.workflow import logged

with logged(snakemake.log[0]):
    build_site(
        "mkdocs.yml",
        docs_dir="notes",
        site_dir="site",
        keep_papers=snakemake.params.keep_papers,
        tags=snakemake.input.tags,
        stamp=snakemake.output[0],
    )
