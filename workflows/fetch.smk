# Stage 1: each arXiv entry's metadata, from the API or, when that fails, from the entry itself.


rule fetch:
    output:
        "resources/arxiv/{arxiv_id}.json",
    params:
        fallback=fallback_metadata,
        api_url=config["fetch"]["api_url"],
        download_pdf=config["fetch"]["download_pdf"],
        retry=fetch_retry_token,
    resources:
        # one request at a time, as arXiv asks (the default profile caps arxiv_api at 1)
        arxiv_api=1,
    conda:
        "../envs/fetch.yaml"
    log:
        "logs/fetch/{arxiv_id}.log",
    script:
        "scripts/fetch.py"
