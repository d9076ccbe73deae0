# Stage 3: Markdown pages for both languages from the entries, metadata and results; then the site.


# What a result measured, credited to the papers its methods come from: read by the pages of
# those papers, so adding an entry for one of them reruns no experiment.
rule credit_methods:
    input:
        metrics="results/{paper}/metrics.json",
        code=methods_code,
    output:
        "results/{paper}/methods.json",
    conda:
        "../envs/render.yaml"
    log:
        "logs/render/{paper}-methods.log",
    script:
        "scripts/credit_methods.py"


rule render_paper:
    input:
        entry=entry_file,
        tags=config["tags"],
        arxiv=arxiv_json,
        metrics=metrics_json,
        related=related_entries,
        related_arxiv=related_arxiv_json,
        methods=credited_methods,
        linked=linked_entries,
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


# Figures are drawn here, in every language, from the data the experiment saved: a new label
# or translation redraws them without rerunning the experiment.
rule draw_figures:
    input:
        data="results/{paper}/figures",
        code=figure_code,
    output:
        directory("notes/assets/figures/{paper}"),
    params:
        experiment=experiment_name,
    conda:
        "../envs/render.yaml"
    log:
        "logs/render/{paper}-figures.log",
    script:
        "scripts/draw_figures.py"


rule render_pages:
    input:
        entries=entry_files(),
        tags=config["tags"],
        arxiv=all_arxiv_json().values(),
        metrics=all_metrics_json().values(),
        methods=all_methods_json().values(),
        sources=RENDER_SOURCES,
    output:
        site_pages(),
    params:
        arxiv=all_arxiv_json(),
        metrics=all_metrics_json(),
        methods=all_methods_json(),
    conda:
        "../envs/render.yaml"
    log:
        "logs/render/pages.log",
    script:
        "scripts/render_pages.py"


# The declared output is a stamp written after the new site replaced the old one: Snakemake
# deletes a job's outputs before it runs, and a failed build must leave the old site whole.
rule site:
    input:
        pages=site_pages(),
        papers=paper_pages(),
        figures=published_figures(),
        hand_written=HAND_WRITTEN,
        tags=config["tags"],
        mkdocs="mkdocs.yml",
        hooks=package_files("mkdocs_hooks.py", "sanitize.py"),
    output:
        "site/.built",
    params:
        keep_papers=list(PAPERS),
    conda:
        "../envs/render.yaml"
    log:
        "logs/site.log",
    script:
        "scripts/build_site.py"
