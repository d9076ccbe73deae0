"""The whole workflow, run through Snakemake's Python API in a temporary directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, entry, write_entry
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    OutputSettings,
    ResourceSettings,
    StorageSettings,
)

from digestlab import workflow as workflow_module
from digestlab.io import read_json, write_json_atomic
from digestlab.workflow import (
    clear_stale_locks,
    process_start_ticks,
    record_lock_holder,
    runs_jobs,
    this_run,
)


def run_workflow(workdir: Path, dryrun: bool = False) -> None:
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=2),
            config_settings=ConfigSettings(
                configfiles=[workdir / "config" / "config.yaml", workdir / "config" / "test.yaml"]
            ),
            storage_settings=StorageSettings(),
            snakefile=workdir / "Snakefile",
            workdir=workdir,
        )
        dag = workflow.dag(DAGSettings(targets={"all"}))
        dag.execute_workflow(executor="dryrun" if dryrun else "local")


def snapshot(workdir: Path) -> dict[str, float]:
    """Modification times of everything the workflow made."""
    made = [p for d in ("resources", "results", "notes", "site") for p in (workdir / d).rglob("*")]
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in made if p.is_file()}


def snakemake_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args, "--cores", "2", "--configfile",
         "config/config.yaml", "config/test.yaml"],
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )


def test_full_run_builds_the_bilingual_site_then_does_nothing_then_only_new_work(workspace):
    run_workflow(workspace)

    assert (workspace / "site" / ".built").exists()
    ko = (workspace / "site" / "index.html").read_text(encoding="utf-8")
    en = (workspace / "site" / "en" / "index.html").read_text(encoding="utf-8")
    assert 'lang="ko"' in ko and "재현됨" in ko
    assert 'lang="en"' in en and "Reproduced" in en
    paper = (workspace / "site" / "papers" / "cla" / "index.html").read_text(encoding="utf-8")
    assert "Reducing Transformer Key-Value Cache Size" in paper  # the title arXiv answered with
    assert "한국어 노트입니다." in paper
    assert "You Only Cache Once" in paper and "arXiv:2405.05254" in paper  # a related title
    assert (workspace / "site" / "assets" / "figures" / "cla" / "means.ko.svg").exists()
    assert "효율" in (workspace / "site" / "tags" / "index.html").read_text(encoding="utf-8")
    meta = json.loads((workspace / "resources" / "arxiv" / "2405.12981.json").read_text())
    assert meta["origin"] == "arxiv"
    old = json.loads((workspace / "resources" / "arxiv" / "hep-th" / "9901001.json").read_text())
    assert old["origin"] == "arxiv" and old["title"].startswith("A <script>")
    hostile = (workspace / "site" / "en" / "papers" / "old-style" / "index.html").read_text()
    # The hostile text shows as text: no tag, link or attribute comes out of it.
    assert "<script>alert" not in hostile and "<b>Lovelace" not in hostile
    assert not re.search(r"href=[\"']javascript:|<[^>]*\s(onmouseover|onerror)=", hostile)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile
    metrics = json.loads((workspace / "results" / "cla" / "metrics.json").read_text())
    assert metrics["scale"] == "smoke" and metrics["claims"][0]["verdict"] == "reproduced"

    before = snapshot(workspace)
    run_workflow(workspace)
    assert snapshot(workspace) == before, "a second run changed files"

    write_entry(workspace / "papers", entry("newcomer", source={"url": "https://example.org/n"},
                                            title="A new paper", tags=["alignment"]))
    run_workflow(workspace)
    after = snapshot(workspace)
    changed = {p for p in after if before.get(p) != after[p]}
    assert "notes/en/papers/newcomer.md" in changed and "site/index.html" in changed
    untouched = {"notes/en/papers/cla.md", "notes/ko/papers/blog-post.md",
                 "results/cla/metrics.json", "resources/arxiv/2405.12981.json"}
    assert not untouched & changed

    (workspace / "papers" / "newcomer.yaml").unlink()
    run_workflow(workspace)
    assert not (workspace / "notes" / "en" / "papers" / "newcomer.md").exists()
    assert not (workspace / "site" / "en" / "papers" / "newcomer").exists()


def test_offline_run_still_builds_the_site(workspace, fake_arxiv):
    fake_arxiv.mode = "500"
    run_workflow(workspace)
    meta = json.loads((workspace / "resources" / "arxiv" / "2405.12981.json").read_text())
    assert meta["origin"] == "offline" and "HTTPError" in meta["reason"]
    paper = (workspace / "site" / "en" / "papers" / "cla" / "index.html").read_text()
    assert "Cross-Layer Attention" in paper and "could not be reached" in paper
    assert "HTTPError" in (workspace / "logs" / "fetch" / "2405.12981.log").read_text()

    fake_arxiv.mode = "ok"  # retry_offline_after_min is 0 in the tests: the next run retries
    run_workflow(workspace)
    meta = json.loads((workspace / "resources" / "arxiv" / "2405.12981.json").read_text())
    assert meta["origin"] == "arxiv"


def test_bad_entries_stop_the_run_with_one_line_each_and_keep_the_site(workspace):
    run_workflow(workspace)
    site_before = (workspace / "site" / "index.html").read_bytes()
    write_entry(workspace / "papers", entry("broken", tags=["nope"],
                                            source={"arxiv": "2405.1"}))
    (workspace / "papers" / "garbled.yaml").write_text("id: [unclosed\n")
    done = snakemake_cli(workspace)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("papers/")]
    assert len(lines) == 3
    assert any(line.startswith("papers/broken.yaml: tags[0]: unknown tag 'nope'") for line in lines)
    assert any(line.startswith("papers/broken.yaml: source.arxiv:") for line in lines)
    assert any(line.startswith("papers/garbled.yaml: (file): not valid YAML") for line in lines)
    assert (workspace / "site" / "index.html").read_bytes() == site_before


def test_failed_site_build_keeps_the_old_site(workspace):
    run_workflow(workspace)
    before = (workspace / "site" / "en" / "index.html").read_bytes()
    about = workspace / "notes" / "en" / "about.md"
    about.write_text(about.read_text() + "\n[broken](no-such-page.md)\n")
    done = snakemake_cli(workspace)
    assert done.returncode != 0
    assert "SiteError: mkdocs build --strict failed" in done.stderr
    assert (workspace / "site" / "en" / "index.html").read_bytes() == before
    assert not (workspace / "site" / ".built").exists()  # so the next run builds again


def test_a_bad_configuration_stops_the_run_with_one_line_each(workspace):
    config = workspace / "config" / "config.yaml"
    config.write_text(config.read_text().replace("timeout_s: 15", "timeout_s: -1")
                      .replace("download_pdf: false", "download_pdf: maybe"))
    done = snakemake_cli(workspace, "--config", "scale=big", "papers=elsewhere")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    where = "config/config.yaml + config/test.yaml + --config"
    lines = [line for line in done.stderr.splitlines() if line.startswith(where)]
    assert lines == [f"{where}: {line}" for line in (
        "scale: Input should be 'auto', 'smoke', 'cpu' or 'gpu'",
        "papers: unknown field",
    )]
    assert done.stderr.rstrip().endswith("2 problems in the configuration")
    # config/test.yaml sets every fetch field, so the file's own mistakes are overridden;
    # without it they are found
    done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"],
                          cwd=workspace, capture_output=True, text=True, timeout=120)
    assert [line for line in done.stderr.splitlines() if line.startswith("config/")] == [
        "config/config.yaml: fetch.timeout_s: Input should be greater than 0",
        "config/config.yaml: fetch.download_pdf: Input should be a valid boolean",
    ]
    assert not (workspace / "results").exists() and not (workspace / "resources").exists()


def test_bad_experiment_params_stop_the_run_before_any_job_with_one_line_each(workspace):
    write_entry(workspace / "papers", entry("cla", reproduction={
        "experiment": "noisy_mean", "params": {"stepz": 3, "samples": "many"}}))
    # tuning seeds that would also vote are refused like any other mistake
    write_entry(workspace / "papers", entry("tuned", source={"arxiv": "2405.12982"},
                                            reproduction={"experiment": "cla", "params": {
                                                "tuning_seeds": [0, 5], "seeds": [0, 1]}}))
    done = snakemake_cli(workspace)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("papers/")]
    assert lines == [
        "papers/cla.yaml: reproduction.params.samples: Input should be a valid integer, "
        "unable to parse string as an integer",
        "papers/cla.yaml: reproduction.params.stepz: unknown param "
        "(allowed: true_mean, samples, seeds, pause_s)",
        "papers/tuned.yaml: reproduction.params.tuning_seeds: train.learning_rate and "
        "train.warmup_steps is chosen on [0], which seeds also scores; tuning and scored units "
        "must be disjoint",
    ]
    assert not (workspace / "results").exists() and not (workspace / "resources").exists()


def planned(workdir: Path, target: str) -> dict[str, int]:
    """Rule -> number of jobs a dry run for `target` would run."""
    done = snakemake_cli(workdir, "-n", target)
    assert done.returncode == 0, done.stderr
    stats = done.stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    rows = [line.split() for line in stats.splitlines()[3:] if line.strip()]
    return {rule: int(count) for rule, count in rows}


TINY = "results/tiny/metrics.json"


def test_base_model_is_its_own_job_that_analysis_changes_do_not_rerun(workspace, monkeypatch):
    # A copy of the test experiments, so this test can edit their code.
    packages = workspace / "packages"
    shutil.copytree(Path(__file__).with_name("experiments_for_tests"),
                    packages / "experiments_for_tests")
    monkeypatch.setenv("PYTHONPATH", f"{packages}:{ROOT}")
    write_entry(workspace / "papers", entry("tiny", source={"url": "https://example.org/t"},
                                            reproduction={"experiment": "tiny_lm"}))
    done = snakemake_cli(workspace, TINY)
    assert done.returncode == 0, done.stderr
    model_file = workspace / "results" / "tiny" / "bases" / "lm.pt"
    metrics = json.loads((workspace / "results" / "tiny" / "metrics.json").read_text())
    assert metrics["provenance"]["bases"]["lm"]["file"] == "lm.pt"
    assert (workspace / "logs" / "pretrain" / "tiny" / "lm.log").exists()
    assert "nothing to be done" in snakemake_cli(workspace, "-n", TINY).stdout.lower()

    analysis = packages / "experiments_for_tests" / "tiny_lm" / "run.py"
    analysis.write_text(analysis.read_text() + "\n# an edit to the analysis\n")
    jobs = planned(workspace, TINY)
    assert jobs.get("reproduce") == 1 and "pretrain" not in jobs

    # an analysis param changes the analysis only; a param of the base model retrains it
    write_entry(workspace / "papers", entry("tiny", source={"url": "https://example.org/t"},
                reproduction={"experiment": "tiny_lm", "params": {"eval_groups": 3}}))
    jobs = planned(workspace, TINY)
    assert jobs.get("reproduce") == 1 and "pretrain" not in jobs
    write_entry(workspace / "papers", entry("tiny", source={"url": "https://example.org/t"},
                reproduction={"experiment": "tiny_lm", "params": {"lm": {"n_documents": 20}}}))
    jobs = planned(workspace, TINY)
    assert jobs.get("pretrain") == 1 and jobs.get("reproduce") == 1

    base = packages / "experiments_for_tests" / "tiny_lm" / "base_lm.py"
    base.write_text(base.read_text() + "\n# an edit to the base model's training\n")
    assert planned(workspace, TINY).get("pretrain") == 1
    assert model_file.exists()  # planning touches nothing


@pytest.mark.parametrize("args", [("--lint",), ("-n",)])
def test_shipped_workflow_lints_and_plans(args):
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("profile, expected", [
    ("default", "gpu=0, runtime=30, mem_mb=8000"),  # cpu scale: cla's 15 min budget, twice
    ("gpu", "gpu=1, runtime=20, mem_mb=8000"),  # the profile sets scale gpu: 10 min, twice
    ("slurm", "gpu=0, runtime=30, mem_mb=8000"),
])
def test_each_profile_plans_the_experiment_jobs_with_their_resources(profile, expected):
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--forceall",  # plans every job, built or not
         "--workflow-profile", f"profiles/{profile}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=os.environ | {"CUDA_VISIBLE_DEVICES": ""},  # auto means cpu, whatever the machine
    )
    assert done.returncode == 0, done.stdout + done.stderr
    blocks = [b.split("rule ", 1)[0] for b in done.stdout.split("rule reproduce:")[1:]]
    (cla,) = [b for b in blocks if "paper=cross-layer-attention" in b]
    assert expected in cla


def test_experiment_jobs_take_their_threads_and_memory_from_the_config():
    def plan(setting: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "4",
             "--config", "scale=cpu", f"experiment_job={setting}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)

    done = plan("{threads: 3, mem_mb: 1234}")
    assert done.returncode == 0, done.stdout + done.stderr
    cla = done.stdout.split("output: results/cross-layer-attention/metrics.json")[1]
    cla = cla.split("rule ", 1)[0]
    assert "threads: 3\n" in cla and "mem_mb=1234," in cla
    done = plan("{threads: 0}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--config: experiment_job.threads: must be 'all' or a number of cores" in done.stderr


def test_a_second_run_is_refused_and_a_killed_run_restarts_with_the_plain_command(workspace):
    cla = workspace / "papers" / "cla.yaml"
    data = yaml.safe_load(cla.read_text(encoding="utf-8"))
    # a job long enough to interrupt: a refused run's start and a kill fit in its pause, and
    # the run that holds the locks renders the site after it
    data["reproduction"]["params"] = {"pause_s": 3}
    cla.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile",
               "config/config.yaml", "config/test.yaml"]
    metrics = workspace / "results" / "cla" / "metrics.json"

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([*command, *args], cwd=workspace, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_for(condition, run: subprocess.Popen) -> None:
        deadline = time.monotonic() + 120
        while not condition():
            assert run.poll() is None and time.monotonic() < deadline, "the run never got there"
            time.sleep(0.1)

    first = start()
    wait_for(lambda: (workspace / "results" / "cla" / "figures").exists(), first)
    second = snakemake_cli(workspace)  # Snakemake's lock: one run at a time
    assert second.returncode != 0 and "cannot be locked" in second.stderr
    assert first.wait(timeout=120) == 0  # the first goes on undisturbed
    uninterrupted = json.loads(metrics.read_text())

    third = start("--forcerun", "reproduce")
    wait_for(lambda: not metrics.exists(), third)  # its experiment job has begun
    time.sleep(1)
    os.killpg(third.pid, signal.SIGKILL)  # a power cut: Snakemake and its jobs at once
    third.wait()
    locks = workspace / ".snakemake" / "locks"
    assert list(locks.glob("*.lock"))
    (record,) = locks.glob("holder.*.json")  # the killed run said who held the locks
    assert read_json(record)["pid"] == third.pid
    assert read_json(record)["host"] == socket.gethostname()
    again = snakemake_cli(workspace)  # the README's plain command, nothing added
    assert again.returncode == 0, again.stderr
    assert f"removed the locks of an earlier run (pid {third.pid} on " in again.stderr
    resumed = json.loads(metrics.read_text())
    for m in (resumed, uninterrupted):
        del m["timing"]
    assert resumed == uninterrupted


def leftover_locks(workdir: Path, *holders: dict) -> Path:
    """Snakemake's locks in `workdir` as a run killed outright leaves them, with the holder
    records `holders`."""
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("papers/cla.yaml\n")
    (locks / "0.output.lock").write_text("site/.built\n")
    for holder in holders:
        write_json_atomic(locks / f"holder.{holder['host']}.{holder['pid']}.json", holder)
    return locks


def ended_pid() -> int:
    """The pid of a process of this host that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


ELSEWHERE = {"host": "node-7", "pid": 4242, "start_ticks": 1234, "boot_id": "b",
             "started": "2026-12-01 09:30:00 UTC"}


def test_a_run_records_itself_before_it_locks_and_once_it_holds_the_locks(tmp_path):
    assert record_lock_holder(tmp_path) is None  # no locks: nothing to hold
    before = record_lock_holder(tmp_path, before_locking=True)  # the moment before it locks
    assert read_json(before)["pid"] == os.getpid()
    before.unlink()
    before.parent.rmdir()
    locks = leftover_locks(tmp_path)
    assert record_lock_holder(tmp_path, before_locking=True) is None  # locks stand: refused
    record = read_json(record_lock_holder(tmp_path))
    assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
    assert record["start_ticks"] == process_start_ticks(os.getpid()) is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", record["started"])
    assert [p.name for p in locks.glob("holder.*.json")] == [
        f"holder.{socket.gethostname()}.{os.getpid()}.json"]


def test_locks_of_a_run_that_ended_on_this_host_are_removed(tmp_path):
    holder = this_run() | {"pid": ended_pid()}
    locks = leftover_locks(tmp_path, holder)
    said = clear_stale_locks(tmp_path)
    assert said == (f"removed the locks of an earlier run (pid {holder['pid']} on "
                    f"{holder['host']}, started {holder['started']}) that was stopped without "
                    "cleaning up")
    assert list(locks.iterdir()) == []


def test_a_pid_given_to_a_later_process_is_not_taken_for_the_holder(tmp_path):
    holder = this_run()  # this very pid, but a process that started at another time
    holder["start_ticks"] -= 1
    locks = leftover_locks(tmp_path, holder)
    assert clear_stale_locks(tmp_path).startswith("removed the locks of an earlier run")
    assert list(locks.iterdir()) == []


def test_locks_held_on_another_host_are_kept_with_one_line_naming_the_holder(tmp_path):
    locks = leftover_locks(tmp_path, ELSEWHERE)
    before = sorted(locks.iterdir())
    assert clear_stale_locks(tmp_path) == (
        f"{locks}: the locks were kept: they belong to the run of pid 4242 on node-7, started "
        "2026-12-01 09:30:00 UTC, which this host cannot check; if that run has stopped, "
        "clear them with `snakemake --unlock`")
    assert sorted(locks.iterdir()) == before
    # one dead holder here does not make the other host's locks stale
    leftover_locks(tmp_path / "both", ELSEWHERE, this_run() | {"pid": ended_pid()})
    assert "node-7" in clear_stale_locks(tmp_path / "both")


def test_locks_of_a_live_run_on_this_host_are_kept(tmp_path):
    holder = this_run()  # this test's own process: alive
    locks = leftover_locks(tmp_path, holder)
    before = sorted(locks.iterdir())
    said = clear_stale_locks(tmp_path)
    assert said.startswith(f"{locks}: the locks were kept: they belong to the run of pid "
                           f"{os.getpid()} on {socket.gethostname()}, started ")
    assert "still running" in said and "`snakemake --unlock`" in said and "\n" not in said
    assert sorted(locks.iterdir()) == before


def test_locks_without_a_holder_record_go_when_no_snakemake_runs_here(tmp_path, monkeypatch):
    locks = leftover_locks(tmp_path)  # a run stopped before it recorded itself
    monkeypatch.setattr(workflow_module, "live_snakemake_runs", lambda workdir: [4242])
    assert clear_stale_locks(tmp_path) is None and list(locks.glob("*.lock"))
    monkeypatch.setattr(workflow_module, "live_snakemake_runs", lambda workdir: [])
    assert clear_stale_locks(tmp_path) == ("removed the locks of an earlier run that was "
                                           "stopped without cleaning up")
    assert list(locks.iterdir()) == []


def test_an_unreadable_holder_record_keeps_the_locks(tmp_path):
    locks = leftover_locks(tmp_path)
    (locks / "holder.x.1.json").write_text("{not json")
    said = clear_stale_locks(tmp_path)
    assert said.startswith(f"{locks / 'holder.x.1.json'}: (file): a lock holder record that "
                           "cannot be read") and "`snakemake --unlock`" in said
    assert list(locks.glob("*.lock"))


def test_a_holder_record_with_a_start_that_is_no_count_keeps_the_locks(tmp_path):
    locks = leftover_locks(tmp_path, this_run() | {"start_ticks": "abc"})
    said = clear_stale_locks(tmp_path)
    assert "a lock holder record that cannot be read" in said and list(locks.glob("*.lock"))


@pytest.mark.parametrize(("argv", "runs"), [
    (["snakemake", "--cores", "all"], True),
    (["snakemake", "-c2", "-p", "--config", "scale=smoke"], True),
    (["snakemake", "-n"], False), (["snakemake", "-pn", "-c1"], False),
    (["snakemake", "--dry-run"], False), (["snakemake", "--unlock"], False),
    (["snakemake", "--lint"], False), (["snakemake", "--dag"], False),
])
def test_only_a_command_that_may_run_jobs_clears_stale_locks_or_records_itself(argv, runs):
    assert runs_jobs(argv) is runs


def test_a_dry_run_leaves_stale_locks_alone(workspace):
    locks = leftover_locks(workspace, this_run() | {"pid": ended_pid()})
    done = snakemake_cli(workspace, "-n")
    assert done.returncode == 0 and "removed the locks" not in done.stderr
    assert list(locks.glob("*.lock"))


def test_a_run_beside_locks_held_on_another_host_is_refused_and_names_the_holder(workspace):
    locks = leftover_locks(workspace, ELSEWHERE)
    done = snakemake_cli(workspace)
    assert done.returncode != 0 and "cannot be locked" in done.stderr
    assert "they belong to the run of pid 4242 on node-7, started 2026-12-01 09:30:00 UTC" \
        in done.stderr and "Traceback" not in done.stderr
    assert list(locks.glob("*.lock")) and not (workspace / "resources").exists()
    unlocked = snakemake_cli(workspace, "--unlock")
    assert unlocked.returncode == 0 and "node-7" not in unlocked.stderr
    assert not locks.exists()
