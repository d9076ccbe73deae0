# Shared by every stage: config and entry validation, wildcard constraints and input functions.
import sys

from digestlab import package_files
from digestlab.experiments import (
    base_sources,
    experiment_sources,
    figure_sources,
    methods_sources,
    resolve_scale,
)
from digestlab.methods import declared_links
from digestlab.papers import (
    ARXIV_ID,
    LANGUAGES,
    PAPER_ID,
    related_arxiv_ids,
    related_fallback,
    resolve_related,
)
from digestlab.site import BIBLIOGRAPHY, FEED, FILTERS_CSS, PAGES
from digestlab.workflow import (
    check_config_or_exit,
    clear_stale_locks,
    experiment_threads,
    load_papers_or_exit,
    load_reproductions_or_exit,
    record_lock_holder,
    retry_token,
    runs_jobs,
)


SETTINGS = check_config_or_exit(
    config,
    workflow.overwrite_configfiles or workflow.configfiles,
    command_line=bool(workflow.config_settings.config),
)

# A run killed outright leaves its locks behind; when the run that recorded itself as their
# holder ran on this host and is gone, and no other run is alive here, they are stale. Only a
# run a person started that may run jobs clears them: a job that parses the workflow again (on
# a cluster node, where the run that submitted it is not among the processes) leaves them
# alone, and so do a dry run, which changes nothing, and `--unlock`, which removes them anyway.
# Such a run records itself (host, pid, start), which a run on another host of a shared folder
# reads: before Snakemake takes the locks, and again once it holds them.
PERSON_STARTED = not (workflow.remote_exec or workflow.subprocess_exec)
if PERSON_STARTED and runs_jobs(sys.argv):
    if said := clear_stale_locks():
        print(said, file=sys.stderr)
    record_lock_holder(before_locking=True)


onstart:
    if PERSON_STARTED and workflow.execution_settings.lock:
        record_lock_holder()


PAPERS = load_papers_or_exit(config)
SCALE = resolve_scale(config["scale"])
REPRODUCTIONS = load_reproductions_or_exit(PAPERS, SCALE, config)
EXPERIMENT_PACKAGES = tuple(config["experiment_packages"])
# What an experiment job (pretrain, reproduce) asks for: config `experiment_job` (threads and
# host memory), and one GPU at gpu scale.
EXPERIMENT_THREADS = experiment_threads(SETTINGS.experiment_job.threads, SCALE)
EXPERIMENT_MEM_MB = SETTINGS.experiment_job.mem_mb
EXPERIMENT_GPUS = 1 if SCALE == "gpu" else 0

BY_ARXIV_ID = {paper.arxiv_id: paper for paper in PAPERS.values() if paper.arxiv_id}
REPRODUCED = sorted(paper.id for paper in PAPERS.values() if paper.reproduction)
# Methods measured in one entry's reproduction and credited to another entry's page: each such
# page reads the measuring result's methods.json, and the measuring page links back to it.
METHOD_LINKS = declared_links(PAPERS, EXPERIMENT_PACKAGES)
# Templates and UI catalogs are inputs of the pages they make: editing one re-renders them.
RENDER_SOURCES = package_files(
    "render.py", "sanitize.py", "templates/**/*.j2", "locale/*/LC_MESSAGES/*.po")
HAND_WRITTEN = [f"notes/{lang}/about.md" for lang in LANGUAGES] + ["notes/stylesheets/extra.css"]


# Fetching needs the network, which cluster nodes often lack, and rendering takes seconds:
# these run where Snakemake runs, and only the experiments are submitted to a cluster.
localrules:
    fetch,
    credit_methods,
    render_paper,
    draw_figures,
    render_pages,
    site,


wildcard_constraints:
    paper=PAPER_ID.pattern.strip("^$"),
    arxiv_id=ARXIV_ID.pattern.strip("^$"),
    base="[a-z][a-z0-9_]*(-[0-9]+)?",  # a base model, or its replica of one seed


def entry_file(wildcards):
    """The entry's own file: editing it reruns what the entry feeds."""
    return f"{config['papers_dir']}/{wildcards.paper}.yaml"


def entry_files():
    return [f"{config['papers_dir']}/{paper}.yaml" for paper in PAPERS]


def related_entries(wildcards):
    """Entries this one relates to, by their id or by the arXiv id they are the source of."""
    related = resolve_related(PAPERS[wildcards.paper], PAPERS)
    return [f"{config['papers_dir']}/{entry.id}.yaml" for _, entry in related if entry is not None]


def related_arxiv_json(wildcards):
    """The metadata of related papers the digest does not hold, for their titles."""
    return [f"resources/arxiv/{i}.json" for i in related_arxiv_ids(PAPERS[wildcards.paper], PAPERS)]


def credited_methods(wildcards):
    """The methods.json of the results this page shows methods of: its own reproduction's, and
    that of every reproduction measuring a method of this paper."""
    measuring = {link.measured_in for link in METHOD_LINKS if link.entry == wildcards.paper}
    own = {wildcards.paper} if PAPERS[wildcards.paper].reproduction else set()
    return [f"results/{paper}/methods.json" for paper in sorted(measuring | own)]


def linked_entries(wildcards):
    """The entries at the other end of this page's method links, for their titles."""
    others = {link.measured_in for link in METHOD_LINKS if link.entry == wildcards.paper}
    others |= {link.entry for link in METHOD_LINKS if link.measured_in == wildcards.paper}
    return [f"{config['papers_dir']}/{paper}.yaml" for paper in sorted(others)]


def methods_code(wildcards):
    """The code that credits a result's methods to papers: editing it re-renders, never reruns."""
    return methods_sources(experiment_name(wildcards), EXPERIMENT_PACKAGES)


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


def all_methods_json():
    return {paper: f"results/{paper}/methods.json" for paper in REPRODUCED}


def published_figures():
    return [f"notes/assets/figures/{paper}" for paper in REPRODUCED]


def paper_pages():
    return [f"notes/{lang}/papers/{paper}.md" for paper in PAPERS for lang in LANGUAGES]


def site_pages():
    """The pages, feeds and bibliography made from every entry at once."""
    pages = expand("notes/{lang}/{page}.md", lang=LANGUAGES, page=PAGES)
    return pages + expand("notes/{lang}/{feed}", lang=LANGUAGES, feed=FEED) + [
        f"notes/{BIBLIOGRAPHY}", f"notes/{FILTERS_CSS}"]


def fallback_metadata(wildcards):
    paper = BY_ARXIV_ID.get(wildcards.arxiv_id)
    return paper.fallback_metadata() if paper else related_fallback(wildcards.arxiv_id)


def fetch_retry_token(wildcards):
    path = f"resources/arxiv/{wildcards.arxiv_id}.json"
    return retry_token(path, config["fetch"]["retry_offline_after_min"])


def experiment_name(wildcards):
    return REPRODUCTIONS[wildcards.paper].experiment


def experiment_params(wildcards):
    """The complete params: a change in any value, the scale's defaults included, reruns."""
    return REPRODUCTIONS[wildcards.paper].params


def experiment_code(wildcards):
    """The experiment's analysis code and the shared code under it: editing either reruns it."""
    return experiment_sources(experiment_name(wildcards), EXPERIMENT_PACKAGES)


def figure_code(wildcards):
    """The code and catalogs that draw the experiment's figures: editing them redraws only."""
    return figure_sources(experiment_name(wildcards), EXPERIMENT_PACKAGES)


def experiment_runtime_min(wildcards):
    """Minutes a scheduler may give an experiment job: twice the experiment's budget."""
    return max(5, round(2 * REPRODUCTIONS[wildcards.paper].budget_s / 60))


def model_path(paper, base):
    return f"results/{paper}/bases/{base}.pt"


def base_model_files(wildcards):
    """Each base model of the entry's experiment, by name, to its model file."""
    return {
        base: model_path(wildcards.paper, base)
        for base in REPRODUCTIONS[wildcards.paper].bases
    }


def parent_model_file(wildcards):
    """The model file of the base model this one fine-tunes (STARTS_FROM), if any."""
    parent = REPRODUCTIONS[wildcards.paper].parents.get(wildcards.base)
    return {parent: model_path(wildcards.paper, parent)} if parent else {}


def base_names(wildcards):
    """The names of the base models the entry's experiment stands on."""
    return list(REPRODUCTIONS[wildcards.paper].bases)


def base_params(wildcards):
    """Only the base model's own params: the analysis's may change without retraining it."""
    return REPRODUCTIONS[wildcards.paper].bases[wildcards.base]


def base_code(wildcards):
    """The code that trains the base model (not the analysis) and the shared code."""
    return base_sources(experiment_name(wildcards), wildcards.base, EXPERIMENT_PACKAGES)
