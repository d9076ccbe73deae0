# Stage 3: Markdown pages for both languages from the entries, metadata and results; then the site.


rule render_paper:
    input:
        entry=entry_file,
        tags=config["tags"],
        arxiv=arxiv_json,
        metrics=metrics_json,
        related=related_entries,
        sources=RENDER_SOURCES,
    output:
        ko="notes/ko/papers/{paper}.md",
        en="notes/en/papers/{paper}.md",
    conda:
        "../envs/render.yaml"
    log:
        "logs/render/{paper}.log",
    script:
        "scripts/render_paper.py"


rule publish_figures:
    input:
        results_figures,
    output:
        directory("notes/assets/figures/{paper}"),
    conda:
        "../envs/render.yaml"
    log:
        "logs/render/{paper}-figures.log",
    script:
        "scripts/publish_figures.py"


rule render_pages:
    input:
        entries=entry_files(),
        tags=config["tags"],
        arxiv=all_arxiv_json(),
        metrics=all_metrics_json(),
        sources=RENDER_SOURCES,
    output:
        expand("notes/{lang}/{page}.md", lang=LANGUAGES, page=PAGES),
    conda:
        "../envs/render.yaml"
    log:
        "logs/render/pages.log",
    script:
        "scripts/render_pages.py"


rule site:
    input:
        pages=expand("notes/{lang}/{page}.md", lang=LANGUAGES, page=PAGES),
        papers=paper_pages(),
        figures=published_figures(),
        hand_written=HAND_WRITTEN,
        mkdocs="mkdocs.yml",
        hooks=str(PACKAGE_DIR / "mkdocs_hooks.py"),
    output:
        site_pages(),
    params:
        keep_papers=list(PAPERS),
    conda:
        "../envs/render.yaml"
    log:
        "logs/site.log",
    script:
        "scripts/build_site.py"
