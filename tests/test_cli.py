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
    said = capsys.readouterr().out
    assert "write its notes" in said
    # the workspace's cla entry runs noisy_mean, which credits its sample mean to this paper
    assert f"{path.relative_to(repo)}: Sample mean is measured in cla's reproduction" in said
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


def test_new_for_a_paper_arxiv_does_not_have_writes_nothing(repo):
    before = sorted(p.name for p in (repo / "papers").iterdir())
    stopped = run("new", "2405.99999", "--tags", "llm")  # arXiv answers with an empty feed
    assert stopped == ("2405.99999: (argument): arXiv has no such paper (its answer listed "
                       "none); nothing was written")
    assert sorted(p.name for p in (repo / "papers").iterdir()) == before


@pytest.mark.parametrize("tags", ["llm, efficiency", " llm ,efficiency, ", "llm,,efficiency"])
def test_new_takes_tags_with_spaces_around_the_commas(repo, tags):
    assert run("new", NEW_ID, "--tags", tags) == 0
    written = yaml.safe_load((repo / "papers" / "you-only-cache-once-decoder-decoder.yaml")
                             .read_text(encoding="utf-8"))
    assert written["tags"] == ["llm", "efficiency"]


def test_slugs_are_the_first_words_of_the_title():
    assert slug("Phi-3 Technical Report: A Highly Capable Language Model") == \
        "phi-3-technical-report-a-highly"
    assert slug("???") == ""


DIGEST = """\ufeff2024년 5월 22일

You Only Cache Once: Decoder-Decoder Architectures for Language Models
https://arxiv.org/abs/2405.05254
디코더를 두 단계로 나눠 KV 캐시를 한 번만 저장하는 구조입니다.
두 번째 문단입니다.
#efficiency
A Note Without Authors
https://example.org/a-note
Tools and links collected for later.
짧은 메모입니다.
#llm
#astrology
Reducing Transformer Key-Value Cache Size with Cross-Layer Attention
(William Brandon, Mayank Mishra)
Key-value caching plays an essential role in decoding; sharing it between layers shrinks it.
레이어 사이에서 KV 캐시를 나눠 씁니다.
#efficiency
"""


def test_import_turns_a_digest_into_entries_and_overwrites_nothing(repo, capsys):
    (repo / "digest.txt").write_text(DIGEST, encoding="utf-8")
    before = sorted(p.name for p in (repo / "papers").iterdir())
    assert run("import", "digest.txt", "--dry-run") == 0
    shown = capsys.readouterr().out
    assert "would write papers/you-only-cache-once-decoder-decoder.yaml" in shown
    assert sorted(p.name for p in (repo / "papers").iterdir()) == before

    assert run("import", "digest.txt") == 0
    said = capsys.readouterr().out
    yoco = yaml.safe_load((repo / "papers" / "you-only-cache-once-decoder-decoder.yaml")
                          .read_text(encoding="utf-8"))
    assert yoco["source"] == {"arxiv": NEW_ID} and yoco["authors"] == ["Yutao Sun", "Li Dong"]
    assert yoco["published"] == "2024-05-21" and str(yoco["digest_date"]) == "2024-05-22"
    assert yoco["note"] == {"ko": "디코더를 두 단계로 나눠 KV 캐시를 한 번만 저장하는 구조입니다.\n"
                                  "두 번째 문단입니다.", "en": ""}
    note = yaml.safe_load((repo / "papers" / "a-note-without-authors.yaml").read_text())
    assert note["source"] == {"url": "https://example.org/a-note"} and note["authors"] == []
    assert note["tags"] == ["llm", "astrology"]  # tags over two lines; the unknown one kept
    # an English line too short to be the abstract is commentary, kept in the note
    assert note["note"]["ko"] == "Tools and links collected for later.\n짧은 메모입니다."
    assert "unknown tags astrology kept" in said
    # found by its title on arXiv, and already held by the workspace's cla entry
    assert "cla.yaml already holds 2405.12981; skipped" in said
    assert "wrote 2 of 3 papers" in said
    assert "you-only-cache-once-decoder-decoder.yaml: Sample mean is measured in cla's" in said

    written = {p: p.read_bytes() for p in (repo / "papers").iterdir()}
    assert run("import", "digest.txt") == 0
    assert "wrote 0 of 3 papers" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in (repo / "papers").iterdir()} == written
    stopped = run("check")  # what is left to fill in is named like any other mistake
    assert "papers/a-note-without-authors.yaml: authors:" in stopped


@pytest.mark.parametrize(("text", "says"), [
    ("Yesterday\nA paper\n#llm\n", "line 1: expected the digest's date"),
    ("2024년 13월 1일\nA paper\n#llm\n", "line 1: expected the digest's date"),
])
def test_import_names_the_line_that_breaks_the_format(repo, text, says):
    # a digest read at all imports what it can: tests/test_digest.py
    (repo / "digest.txt").write_text(text, encoding="utf-8")
    stopped = run("import", "digest.txt")
    assert isinstance(stopped, str) and stopped.startswith(f"digest.txt: {says}")
    assert "\n" not in stopped



URL_ONLY_DIGEST = """2024-05-22

A Note Without Authors
https://example.org/a-note
짧은 메모입니다.
#llm
"""


@pytest.mark.parametrize(("mode", "says"), [
    ("ok", "digest.txt: line 3: arXiv has no paper of this title"),
    ("500", "digest.txt: line 3: arXiv could not be reached to look up the title (HTTPError"),
])
def test_import_says_whether_arxiv_lacks_the_title_or_could_not_be_asked(repo, fake_arxiv,
                                                                          capsys, mode, says):
    (repo / "digest.txt").write_text(URL_ONLY_DIGEST, encoding="utf-8")
    fake_arxiv.mode = mode
    assert run("import", "digest.txt") == 0
    said = capsys.readouterr()
    assert says in said.out + said.err
    if mode == "500":
        assert "not checked against the entries" in said.err
    written = yaml.safe_load((repo / "papers" / "a-note-without-authors.yaml").read_text())
    assert written["source"] == {"url": "https://example.org/a-note"}
