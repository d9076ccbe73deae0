# Shared by every stage: config and entry validation, wildcard constraints and input functions.
from snakemake.utils import validate

from digestlab import package_files
from digestlab.experiments import experiment_sources, resolve_scale
from digestlab.papers import ARXIV_ID, LANGUAGES, PAPER_ID, bare_arxiv_id
from digestlab.site import PAGES
from digestlab.workflow import (
    export_package_path,
    load_papers_or_exit,
    retry_token,
)


validate(config, "schemas/config.schema.yaml")

# Every job imports the digestlab package beside this workflow, whichever environment runs it.
export_package_path(workflow.basedir)

PAPERS = load_papers_or_exit(config)
SCALE = resolve_scale(config["scale"])
BY_ARXIV_ID = {paper.arxiv_id: paper for paper in PAPERS.values() if paper.arxiv_id}
BY_BARE_ARXIV_ID = {bare_arxiv_id(a): paper.id for a, paper in BY_ARXIV_ID.items()}
REPRODUCED = sorted(paper.id for paper in PAPERS.values() if paper.reproduction)
# Templates and UI catalogs are inputs of the pages they make: editing one re-renders them.
RENDER_SOURCES = package_files("templates/**/*.j2", "locale/*/LC_MESSAGES/*.po")
HAND_WRITTEN = [f"notes/{lang}/about.md" for lang in LANGUAGES] + ["notes/stylesheets/extra.css"]


wildcard_constraints:
    paper=PAPER_ID.pattern.strip("^$"),
    arxiv_id=ARXIV_ID.pattern.strip("^$"),


def entry_file(wildcards):
    return f"{config['papers_dir']}/{wildcards.paper}.yaml"


def entry_files():
    return [f"{config['papers_dir']}/{paper}.yaml" for paper in PAPERS]


def related_entries(wildcards):
    """Entries this one relates to, by their id or by the arXiv id they are the source of."""
    related = [BY_BARE_ARXIV_ID.get(bare_arxiv_id(ref), ref) for ref in PAPERS[wildcards.paper].related]
    return [f"{config['papers_dir']}/{ref}.yaml" for ref in related if ref in PAPERS]


def arxiv_json_of(paper):
    return f"resources/arxiv/{PAPERS[paper].arxiv_id}.json" if PAPERS[paper].arxiv_id else None


def metrics_json_of(paper):
    return f"results/{paper}/metrics.json" if PAPERS[paper].reproduction else None


def arxiv_json(wildcards):
    return [path] if (path := arxiv_json_of(wildcards.paper)) else []


def metrics_json(wildcards):
    return [path] if (path := metrics_json_of(wildcards.paper)) else []


def all_arxiv_json():
    return {paper: path for paper in PAPERS if (path := arxiv_json_of(paper))}


def all_metrics_json():
    return {paper: path for paper in PAPERS if (path := metrics_json_of(paper))}


def results_figures(wildcards):
    return f"results/{wildcards.paper}/figures"


def published_figures():
    return [f"notes/assets/figures/{paper}" for paper in REPRODUCED]


def paper_pages():
    return [f"notes/{lang}/papers/{paper}.md" for paper in PAPERS for lang in LANGUAGES]


def site_pages():
    return expand("notes/{lang}/{page}.md", lang=LANGUAGES, page=PAGES)


def fallback_metadata(wildcards):
    return BY_ARXIV_ID[wildcards.arxiv_id].fallback_metadata()


def fetch_retry_token(wildcards):
    path = f"resources/arxiv/{wildcards.arxiv_id}.json"
    return retry_token(path, config["fetch"]["retry_offline_after_min"])


def experiment_name(wildcards):
    return PAPERS[wildcards.paper].reproduction.experiment


def experiment_params(wildcards):
    return PAPERS[wildcards.paper].reproduction.params


def experiment_code(wildcards):
    """The experiment's module and the shared code under it: editing either reruns it."""
    return experiment_sources(experiment_name(wildcards), tuple(config["experiment_packages"]))
