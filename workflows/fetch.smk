# Stage 1: each arXiv entry's metadata, from the API or, when that fails, from the entry itself.


rule fetch:
    output:
        "resources/arxiv/{arxiv_id}.json",
    params:
        fallback=fallback_metadata,
        settings=config["fetch"],
        retry=fetch_retry_token,
    conda:
        "../envs/fetch.yaml"
    log:
        "logs/fetch/{arxiv_id}.log",
    script:
        "scripts/fetch.py"
