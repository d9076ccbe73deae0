"""The `digestlab` command: checking every entry as the pipeline would, and starting a new
entry from an arXiv id."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from conftest import entry, write_entry

from digestlab.cli import main, slug

NEW_ID = "2405.05254"


@pytest.fixture
def repo(workspace, fake_arxiv, monkeypatch):
    """The workspace, run from its root with one config file, and a paper the fake arXiv knows
    that no entry holds yet."""
    config = yaml.safe_load((workspace / "config" / "config.yaml").read_text())
    config |= yaml.safe_load((workspace / "config" / "test.yaml").read_text())
    (workspace / "config" / "cli.yaml").write_text(yaml.safe_dump(config))
    fake_arxiv.papers = fake_arxiv.papers | {NEW_ID: {
        "title": "You Only Cache Once: Decoder-Decoder Architectures for Language Models",
        "authors": ["Yutao Sun", "Li Dong"], "abstract": "A decoder-decoder."}}
    monkeypatch.chdir(workspace)
    return workspace


def run(*args: str) -> int | str:
    """main's exit status, or the message it stopped with."""
    try:
        return main(["--config", "config/cli.yaml", *args])
    except SystemExit as stop:
        return stop.code


def test_check_passes_valid_entries_and_names_each_problem_like_the_pipeline(repo, capsys):
    assert run("check") == 0
    assert "3 entries in papers/ are valid" in capsys.readouterr().out
    write_entry(repo / "papers", entry("broken", title="", tags=["astrology"]))
    write_entry(repo / "papers", entry("params", source={"arxiv": "2405.12982"},
                                       reproduction={"experiment": "noisy_mean",
                                                     "params": {"stepz": 1}}))
    stopped = run("check")
    assert isinstance(stopped, str)
    assert stopped.splitlines() == [
        "papers/broken.yaml: title: String should have at least 1 character",
        "papers/broken.yaml: tags[0]: unknown tag 'astrology' (allowed: alignment, efficiency, "
        "efficient-training, interpretability, llm, rlhf; add new tags to config/tags.yaml)",
        "2 problems in the paper entries"]
    (repo / "papers" / "broken.yaml").unlink()
    stopped = run("check")  # the params are checked too, once the entries are valid
    assert stopped.splitlines()[0].startswith(
        "papers/params.yaml: reproduction.params.stepz: unknown param")


def test_new_writes_an_entry_from_arxiv_that_check_then_asks_notes_for(repo, capsys):
    assert run("new", NEW_ID, "--tags", "efficiency,llm") == 0
    path = repo / "papers" / "you-only-cache-once-decoder-decoder.yaml"
    assert "write its notes" in capsys.readouterr().out
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert written["source"] == {"arxiv": NEW_ID} and written["authors"] == ["Yutao Sun",
                                                                           "Li Dong"]
    assert written["published"] == "2024-05-21" and written["tags"] == ["efficiency", "llm"]
    assert written["digest_date"] == dt.date.today().isoformat()
    stopped = run("check")
    assert f"{path.relative_to(repo)}: note.ko: String should have at least 1 character" in \
        stopped
    before = path.read_bytes()
    again = run("new", NEW_ID, "--tags", "llm")  # one entry per paper, and no overwriting
    assert f"source.arxiv: already holds {NEW_ID}" in again and path.read_bytes() == before


@pytest.mark.parametrize(("args", "says"), [
    (("0000.0000",), "not an arXiv id that can exist"),
    ((NEW_ID, "--tags", "astrology"), "--tags: unknown tag 'astrology'"),
    (("2405.12981",), "source.arxiv: already holds 2405.12981"),  # the workspace's cla entry
])
def test_new_refuses_in_one_line_and_writes_nothing(repo, args, says):
    before = sorted(p.name for p in (repo / "papers").iterdir())
    stopped = run("new", *args)
    assert isinstance(stopped, str) and says in stopped and "Traceback" not in stopped
    assert sorted(p.name for p in (repo / "papers").iterdir()) == before


def test_new_without_arxiv_still_starts_an_entry_for_the_person_to_fill(repo, fake_arxiv,
                                                                          capsys):
    fake_arxiv.mode = "500"
    assert run("new", NEW_ID, "--tags", "llm") == 0
    assert "arXiv was not reached" in capsys.readouterr().out
    written = yaml.safe_load((repo / "papers" / "arxiv-2405-05254.yaml").read_text())
    assert written["title"] == "" and written["source"] == {"arxiv": NEW_ID}


def test_slugs_are_the_first_words_of_the_title():
    assert slug("Phi-3 Technical Report: A Highly Capable Language Model") == \
        "phi-3-technical-report-a-highly"
    assert slug("???") == ""
