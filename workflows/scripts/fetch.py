from digestlab.fetch import FetchSettings, fetch_metadata
from digestlab.workflow import logged

with logged(snakemake.log[0]):
    fetch_metadata(
        snakemake.params.fallback,
        snakemake.output[0],
        FetchSettings(**snakemake.config["fetch"]),
        retry_token=snakemake.params.retry,
    )
