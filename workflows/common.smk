# Shared by every stage: config and entry validation, wildcard constraints and input functions.
from pathlib import Path

from snakemake.utils import validate

import digestlab
from digestlab.experiments import resolve_scale
from digestlab.workflow import export_package_path, load_papers_or_exit, retry_token


validate(config, "schemas/config.schema.yaml")

# Every job imports the digestlab package beside this workflow, whichever environment runs it.
export_package_path(workflow.basedir)

PAPERS = load_papers_or_exit(config)
SCALE = resolve_scale(config["scale"])
LANGUAGES = ["ko", "en"]
PAGES = ["index", "results", "tags"]
# Templates and UI catalogs are inputs of the pages they make: editing one re-renders them.
PACKAGE_DIR = Path(digestlab.__file__).parent
RENDER_SOURCES = sorted(
    str(path)
    for pattern in ("templates/**/*.j2", "locale/*/LC_MESSAGES/*.po")
    for path in PACKAGE_DIR.glob(pattern)
)
HAND_WRITTEN = [f"notes/{lang}/about.md" for lang in LANGUAGES] + ["notes/stylesheets/extra.css"]
BY_ARXIV_ID = {paper.arxiv_id: paper for paper in PAPERS.values() if paper.arxiv_id}
REPRODUCED = sorted(paper.id for paper in PAPERS.values() if paper.reproduction)


wildcard_constraints:
    paper=r"[a-z0-9][a-z0-9-]{1,63}",
    arxiv_id=r"[A-Za-z0-9.-]+(/[0-9]+)?(v[0-9]+)?",


def entry_file(wildcards):
    return f"{config['papers_dir']}/{wildcards.paper}.yaml"


def related_entries(wildcards):
    related = [ref for ref in PAPERS[wildcards.paper].related if ref in PAPERS]
    return [f"{config['papers_dir']}/{ref}.yaml" for ref in related]


def entry_files():
    return [f"{config['papers_dir']}/{paper}.yaml" for paper in PAPERS]


def arxiv_json(wildcards):
    arxiv_id = PAPERS[wildcards.paper].arxiv_id
    return [f"resources/arxiv/{arxiv_id}.json"] if arxiv_id else []


def all_arxiv_json():
    return [f"resources/arxiv/{arxiv_id}.json" for arxiv_id in sorted(BY_ARXIV_ID)]


def metrics_json(wildcards):
    return [f"results/{wildcards.paper}/metrics.json"] if PAPERS[wildcards.paper].reproduction else []


def all_metrics_json():
    return [f"results/{paper}/metrics.json" for paper in REPRODUCED]


def results_figures(wildcards):
    return f"results/{wildcards.paper}/figures"


def published_figures():
    return [f"notes/assets/figures/{paper}" for paper in REPRODUCED]


def paper_pages():
    return [f"notes/{lang}/papers/{paper}.md" for paper in PAPERS for lang in LANGUAGES]


def site_pages():
    return ["site/index.html", "site/en/index.html"]


def fallback_metadata(wildcards):
    return BY_ARXIV_ID[wildcards.arxiv_id].fallback_metadata()


def fetch_retry_token(wildcards):
    path = f"resources/arxiv/{wildcards.arxiv_id}.json"
    return retry_token(path, config["fetch"]["retry_offline_after_min"])


def experiment_name(wildcards):
    return PAPERS[wildcards.paper].reproduction.experiment


def experiment_params(wildcards):
    return PAPERS[wildcards.paper].reproduction.params
