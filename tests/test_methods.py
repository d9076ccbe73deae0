"""Methods credited across papers: what an experiment declares (digestlab/methods.py), which
entries a method's paper matches, what a result credits, and the workflow that shows it on
those entries' pages without rerunning any experiment."""

from __future__ import annotations

import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, entry, site_skeleton, write_entry
from pydantic import ValidationError
from test_workflow import run_workflow, snapshot

import digestlab.experiments
from digestlab.claims import LEVEL, binomial_interval, mean_interval
from digestlab.experiments import experiment_sources, methods_sources
from digestlab.methods import (
    Method,
    Row,
    credit,
    declared,
    declared_links,
    mean_row,
    measured_elsewhere,
    rate_row,
)
from digestlab.papers import PaperError, load_papers, load_tags, paper_key, read_paper

TEST_PACKAGES = ("digestlab.experiments", "experiments_for_tests")
# every experiment of the package: a new one is checked as soon as it is added
EXPERIMENTS = sorted(m.name for m in pkgutil.iter_modules(digestlab.experiments.__path__)
                     if m.ispkg)
HOW = {"ko": "잽니다.", "en": "Measured."}


def test_rows_carry_the_claims_intervals():
    row = mean_row({"ko": "손실", "en": "loss"}, [1.0, 2.0, 4.0], "training seeds")
    assert row.value == pytest.approx(7 / 3) and row.n == 3 and row.level == LEVEL
    assert row.interval == pytest.approx(mean_interval([1.0, 2.0, 4.0]))
    assert mean_row({"ko": "a", "en": "a"}, [3.0], "runs").interval is None
    assert mean_row({"ko": "a", "en": "a"}, [3.0, 3.0], "runs").interval is None  # no spread
    rate = rate_row({"ko": "정답률", "en": "accuracy"}, 17, 100, "streams")
    assert rate.value == 0.17 and rate.interval == pytest.approx(binomial_interval(17, 100, LEVEL))
    with pytest.raises(ValidationError, match="interval comes with its level"):
        Row(quantity=HOW, value=1.0, interval=(0.0, 2.0), n=2, unit="runs")
    with pytest.raises(ValidationError, match="neither an arXiv id nor"):
        Method(id="m", name="M", paper="not a paper", role="baseline", how=HOW)


@pytest.mark.parametrize(("a", "b"), [
    ("2405.04434", "2405.04434v5"),
    ("https://transformer-circuits.pub/2024/x/index.html", "http://transformer-circuits.pub/2024/x/"),
    ("https://Example.org/post#part", "https://example.org/post"),
])
def test_a_paper_is_the_same_in_any_version_or_spelling_of_its_address(a, b):
    assert paper_key(a) == paper_key(b)


def test_two_papers_never_share_a_key():
    assert paper_key("2405.04434") != paper_key("2405.04435")
    assert paper_key("https://example.org/a") != paper_key("https://example.org/b")


def _papers(tmp_path: Path, *entries: dict):
    for data in entries:
        write_entry(tmp_path, data)
    return load_papers(tmp_path, load_tags(ROOT / "config" / "tags.yaml"), lambda _: True,
                       lambda name: [m.id for m in declared(name, TEST_PACKAGES).methods])


def test_a_method_is_credited_by_arxiv_version_url_or_the_entry_s_own_word(tmp_path):
    papers = _papers(
        tmp_path,
        entry("measuring", reproduction={"experiment": "noisy_mean"}),
        entry("by-version", source={"arxiv": "2405.05254v1"}, title="YOCO"),
        entry("by-word", source={"url": "https://example.org/a-post"}, title="A post",
              measured_as=[{"experiment": "noisy_mean", "method": "sample-mean"}]),
        entry("by-url", source={"url": "https://example.org/unmeasured/"}, title="Unmeasured"),
        entry("bystander", source={"arxiv": "2405.05255"}, title="Nothing measured"),
    )
    found = {(link.entry, link.measured_in, link.method, link.explicit)
             for link in declared_links(papers, TEST_PACKAGES)}
    # the measuring entry's own method ("own", of 2405.12981) is not credited to itself
    assert found == {("by-version", "measuring", "sample-mean", False),
                     ("by-word", "measuring", "sample-mean", True),
                     ("by-url", "measuring", "unmeasured", False)}


def test_an_unknown_experiment_or_method_named_by_an_entry_is_one_line(tmp_path):
    write_entry(tmp_path, entry("a", measured_as=[{"experiment": "noisy_mean", "method": "x"}]))
    write_entry(tmp_path, entry("b", source={"arxiv": "2405.05254"},
                                measured_as=[{"experiment": "nope", "method": "x"}]))
    write_entry(tmp_path, entry("c", source={"arxiv": "2405.05253"},
                                measured_as=[{"experiment": "noisy_mean", "methd": "own"}]))
    with pytest.raises(PaperError) as caught:
        load_papers(tmp_path, load_tags(ROOT / "config" / "tags.yaml"),
                    lambda name: name == "noisy_mean",
                    lambda name: [m.id for m in declared(name, TEST_PACKAGES).methods])
    problems = caught.value.problems
    assert any(p.startswith(f"{tmp_path / 'a.yaml'}: measured_as[0].method: unknown method 'x' "
                            "of experiment 'noisy_mean' (known: sample-mean, own, unmeasured)")
               for p in problems), problems
    assert f"{tmp_path / 'b.yaml'}: measured_as[0].experiment: unknown experiment 'nope'" \
        in problems
    assert any(p.startswith(f"{tmp_path / 'c.yaml'}: measured_as[0].methd: unknown field "
                            "(allowed: experiment, method)") for p in problems), problems
    assert all("\n" not in p for p in problems)


def _result(means: list[float]) -> dict:
    return {"experiment": "noisy_mean", "scale": "smoke", "claims_schema": 3,
            "params": {}, "metrics": {"means": means},
            "claims": [{"id": "mean-below-bound", "verdict": "reproduced"}]}


def test_credit_holds_rows_the_paper_s_claims_and_what_was_not_measured():
    credited = credit(_result([0.1, -0.2, 0.05]), TEST_PACKAGES)
    by_id = {m["id"]: m for m in credited["methods"]}
    assert credited["reference"] == "own" and list(by_id) == ["sample-mean", "own", "unmeasured"]
    assert by_id["sample-mean"]["rows"][0]["value"] == pytest.approx(-0.05 / 3)
    assert by_id["sample-mean"]["decided"] == [{"id": "mean-below-bound",
                                                "verdict": "reproduced"}]
    assert by_id["unmeasured"]["rows"] == [] and by_id["own"]["decided"] == []
    json.dumps(credited, allow_nan=False)  # what methods.json holds is JSON


def test_credit_refuses_a_claim_the_result_does_not_hold():
    result = _result([0.1, 0.2]) | {"claims": []}
    with pytest.raises(ValueError, match="names claims \\['mean-below-bound'\\]"):
        credit(result, TEST_PACKAGES)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_experiment_declares_its_methods_and_their_claims_exist(experiment):
    from digestlab.experiments import load_spec

    found = declared(experiment, ("digestlab.experiments",))
    spec = load_spec(experiment)
    assert found.methods and found.reference in found.by_id()
    assert sum(m.role == "proposed" for m in found.methods) >= 1
    for method in found.methods:
        assert set(method.claims) <= set(spec.CLAIMS), method.id
    # credits are read at render time: editing them reruns no experiment
    assert not any(p.endswith("methods.py") and "experiments" in p
                   for p in experiment_sources(experiment))
    assert any(p.endswith(f"{experiment}/methods.py") for p in methods_sources(experiment))


def test_streamingllm_s_claim_is_credited_to_streamingllm_not_sirllm():
    methods = declared("sirllm", ("digestlab.experiments",)).by_id()
    owners = {c: m.paper for m in methods.values() for c in m.claims}
    assert owners["sinks-keep-perplexity"] == "2309.17453"
    assert owners["sirllm-recalls-grocery"] == "2405.12528"


def test_the_three_baseline_papers_match_the_methods_of_their_measuring_entries():
    papers = {p.stem: read_paper(p) for p in [*sorted((ROOT / "papers").glob("*.yaml")),
                                              *sorted((ROOT / "tests" / "entries").glob("*.yaml"))]}
    found = {(link.entry, link.measured_in) for link in
             declared_links(papers, ("digestlab.experiments",))}
    assert {("streaming-llm", "sirllm"), ("deepseek-v2", "cross-layer-attention"),
            ("safe-rlhf", "spo")} <= found


def test_measured_elsewhere_names_the_measuring_entry_for_a_new_paper():
    found = measured_elsewhere("2309.17453v2", {"sirllm": "sirllm", "cla": "cla"},
                               ("digestlab.experiments",))
    assert [(entry_id, m.name) for entry_id, m in found] == [("sirllm", "StreamingLLM")]


def test_adding_an_entry_whose_method_was_measured_runs_only_fetch_and_render_jobs(workspace):
    """The workspace's cla entry reproduces noisy_mean, which credits its sample mean to
    arXiv 2405.05254: adding that paper's entry (and a post naming the method itself) re-renders
    pages and reruns no experiment, and the new pages show the method's rows and claim."""
    run_workflow(workspace)
    before = snapshot(workspace)
    write_entry(workspace / "papers", entry(
        "yoco", source={"arxiv": "2405.05254v2"}, title="YOCO", tags=["llm"]))
    write_entry(workspace / "papers", entry(
        "a-post", source={"url": "https://example.org/on-means"}, title="On sample means",
        measured_as=[{"experiment": "noisy_mean", "method": "sample-mean"}]))
    run_workflow(workspace)
    log = max((workspace / ".snakemake" / "log").glob("*.snakemake.log"), key=os.path.getmtime)
    jobs = Counter(re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)", log.read_text(),
                              re.MULTILINE))
    # one fetch (the post has no arXiv id), its two pages and the measuring one, the site pages
    assert jobs == {"fetch": 1, "render_paper": 3, "render_pages": 1, "site": 1, "all": 1}, jobs
    after = snapshot(workspace)
    changed = {p for p in after if before.get(p) != after[p]}
    assert not {"results/cla/metrics.json", "results/cla/methods.json"} & changed
    for page in ("yoco", "a-post"):
        html = (workspace / "site" / "en" / "papers" / page / "index.html").read_text()
        assert "Measured in this digest" in html and "Sample mean" in html
        assert "The mean is below 1" in html  # the paper's claim, decided in cla's run
        assert 'href="../cla/#methods-measured"' in html
    measuring = (workspace / "site" / "papers" / "cla" / "index.html").read_text()
    assert 'href="../yoco/#measured-in-this-digest"' in measuring
    assert 'href="../a-post/#measured-in-this-digest"' in measuring  # "described in"
    index = (workspace / "site" / "en" / "methods" / "index.html").read_text()
    assert "Sample mean" in index and "YOCO" in index and "Unmeasured" not in index
    home = (workspace / "site" / "en" / "index.html").read_text()
    yoco_card = home[home.index(">YOCO<"):]
    assert "Reproduced" in yoco_card[:2000]  # its claim, decided elsewhere, counts for it
    feed = (workspace / "notes" / "en" / "feed.xml").read_text()
    # the claim counts for cla, which decided it, and yoco, whose claim it is; not for the post
    assert feed.count("Claims decided in this digest: Reproduced 1.") == 2


def test_the_workflow_plans_the_three_baseline_papers_without_any_experiment_job(tmp_path):
    """The real workflow and entries at smoke scale, planned with and without entries for
    StreamingLLM, DeepSeek-V2 and Safe RLHF: the experiment jobs are the same, and the new
    pages wait for the methods of the results that measured them."""
    shutil.copy(ROOT / "Snakefile", tmp_path / "Snakefile")
    for name in ("workflows", "config", "envs", "papers"):
        shutil.copytree(ROOT / name, tmp_path / name)
    site_skeleton(tmp_path)

    def plan() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "snakemake", "--dry-run", "--cores", "2", "--config",
             "scale=smoke"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        return done.stdout

    def experiment_jobs(stdout: str) -> list[str]:
        """Each experiment job as planned, its inputs, outputs and params, without its jobid
        and the reason Snakemake gives (whose files it lists in no fixed order)."""
        blocks = re.findall(r"^(?:local)?rule (?:pretrain|reproduce|credit_methods):\n"
                            r"((?:    .*\n)+)", stdout, re.MULTILINE)
        return sorted(re.sub(r"    (jobid|reason): .*\n", "", block) for block in blocks)

    without = plan()
    for path in (ROOT / "tests" / "entries").glob("*.yaml"):
        shutil.copy(path, tmp_path / "papers" / path.name)
    with_them = plan()
    assert experiment_jobs(with_them) == experiment_jobs(without) != []
    renders = re.findall(r"^(?:local)?rule render_paper:\n((?:    .*\n)+)", with_them, re.MULTILINE)
    inputs = {re.search(r"output: notes/ko/papers/([\w-]+)\.md", job)[1]: job for job in renders}
    for paper, measuring in (("streaming-llm", "sirllm"), ("deepseek-v2", "cross-layer-attention"),
                             ("safe-rlhf", "spo")):
        assert f"results/{measuring}/methods.json" in inputs[paper], inputs[paper]
        assert f"papers/{paper}.yaml" in inputs[measuring]  # the measuring page links back


def test_one_paper_has_one_entry_however_its_address_is_spelt(tmp_path):
    write_entry(tmp_path, entry("aa", source={"url": "https://arxiv.org/abs/2405.04434v2"}))
    write_entry(tmp_path, entry("bb", source={"arxiv": "2405.04434"}))
    write_entry(tmp_path, entry("cc", source={"url": "https://dx.doi.org/10.1/x"}))
    write_entry(tmp_path, entry("dd", source={"url": "https://doi.org/10.1/x/"}))
    with pytest.raises(PaperError) as caught:
        load_papers(tmp_path, load_tags(ROOT / "config" / "tags.yaml"), lambda _: True)
    assert caught.value.problems == [
        f"{tmp_path / 'bb.yaml'}: source.arxiv: '2405.04434' is already the source of "
        f"{tmp_path / 'aa.yaml'}",
        f"{tmp_path / 'dd.yaml'}: source.url: 'https://doi.org/10.1/x/' is already the source "
        f"of {tmp_path / 'cc.yaml'}"]


def test_every_experiment_s_methods_import_without_torch():
    """The workflow reads them while it plans, where torch is never imported."""
    modules = [f"digestlab.experiments.{name}.methods" for name in EXPERIMENTS
               if declared(name, ("digestlab.experiments",)).methods]
    assert len(modules) == len(EXPERIMENTS)
    done = subprocess.run(
        [sys.executable, "-c", "import importlib, sys; sys.modules['torch'] = None; "
         f"[importlib.import_module(m) for m in {modules!r}]"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
