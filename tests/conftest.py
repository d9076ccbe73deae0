"""Shared fixtures: a copy of the workflow in a temporary directory, and a fake arXiv API."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import shutil
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from fake_arxiv import FakeArxiv

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; the tests download no browser
sys.path.insert(0, str(TESTS))

ARXIV_PAPERS = {
    "2405.12981": {
        "title": "Reducing Transformer Key-Value Cache Size with Cross-Layer Attention",
        "authors": ["William Brandon", "Mayank Mishra"],
        "abstract": "We share keys and values between adjacent layers.",
    },
    "2405.05254": {  # a related paper the digest does not hold: its title is fetched too
        "title": "You Only Cache Once: Decoder-Decoder Architectures for Language Models",
        "authors": ["Yutao Sun"],
        "abstract": "A decoder that caches key-value pairs only once.",
    },
    "hep-th/9901001": {  # an old-style id, and hostile text in every field
        "title": "A <script>alert(1)</script> [x](javascript:alert(2)) { onmouseover=alert(3) }",
        "authors": ["Ada <b>Lovelace</b>"],
        "abstract": "An abstract with <img src=x onerror=alert(4)> and [a](javascript:alert(5)).",
    },
}


def entry(paper_id: str, **fields) -> dict:
    """A valid paper entry with `fields` overriding the defaults."""
    base = {
        "id": paper_id,
        "source": {"arxiv": "2405.12981"},
        "title": "Cross-Layer Attention",
        "authors": ["William Brandon"],
        "published": "2024-05-21",
        "digest_date": "2024-05-22",
        "tags": ["efficiency"],
        "note": {"ko": "한국어 노트입니다.", "en": "An English note."},
    }
    base.update(fields)
    return base


def write_entry(papers_dir: Path, data: dict, name: str | None = None) -> Path:
    """Write an entry to `papers_dir/<id>.yaml`."""
    path = papers_dir / f"{name or data['id']}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def fake_arxiv():
    with FakeArxiv(ARXIV_PAPERS) as server:
        yield server


@pytest.fixture
def workspace(tmp_path, fake_arxiv, monkeypatch):
    """A runnable copy of the workflow with two entries, pointed at the fake arXiv API."""
    shutil.copy(ROOT / "Snakefile", tmp_path / "Snakefile")
    for name in ("workflows", "config", "envs", "profiles"):
        shutil.copytree(ROOT / name, tmp_path / name)
    site_skeleton(tmp_path)
    papers = tmp_path / "papers"
    papers.mkdir()
    write_entry(papers, entry("cla", reproduction={"experiment": "noisy_mean"},
                              related=["2405.05254", "blog-post"]))
    write_entry(papers, entry("blog-post", source={"url": "https://example.org/post"},
                              title="A blog post", tags=["llm"]))
    write_entry(papers, entry("old-style", source={"arxiv": "hep-th/9901001"}, title="Old"))
    (tmp_path / "config" / "test.yaml").write_text(textwrap.dedent(f"""\
        scale: smoke
        experiment_packages: [digestlab.experiments, experiments_for_tests]
        fetch:
          api_url: {fake_arxiv.url}
          timeout_s: 1
          num_retries: 0
          delay_s: 0
          retry_offline_after_min: 0
          download_pdf: false
    """))
    monkeypatch.setenv("PYTHONPATH", f"{TESTS}:{ROOT}")
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    return tmp_path


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """`smoke_runs(experiment)` -> (folder, [first, second]): the experiment run twice at smoke
    scale into folder/a and folder/b, and both metrics.json contents, so a test can check what
    one holds and that the other repeats it. Each experiment runs once per session, whichever
    tests ask; they get copies to change as they please."""
    from digestlab.experiments import reproduce

    done: dict[str, tuple[Path, list[dict]]] = {}

    def runs(experiment: str) -> tuple[Path, list[dict]]:
        if experiment not in done:
            root = tmp_path_factory.mktemp(f"smoke-{experiment}")
            for name in ("a", "b"):
                out = root / name
                reproduce(experiment, "smoke", {}, out / "metrics.json", out / "figures",
                          threads=1, log=lambda _: None)
            done[experiment] = (root, [json.loads((root / name / "metrics.json").read_text())
                                       for name in ("a", "b")])
        root, metrics = done[experiment]
        return root, copy.deepcopy(metrics)

    return runs


def site_skeleton(root: Path) -> Path:
    """`root` made ready for `build_site`: the MkDocs configuration, its hooks, and the notes
    folder with the hand-written pages and stylesheet, for the rendered pages to join."""
    shutil.copy(ROOT / "mkdocs.yml", root)
    (root / "digestlab").symlink_to(ROOT / "digestlab")  # mkdocs.yml names its hooks by path
    for name in ("ko/about.md", "en/about.md", "stylesheets/extra.css"):
        (root / "notes" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "notes" / name, root / "notes" / name)
    return root


# The browser tests (marked `browser`): a built site over loopback HTTP, read in Chromium.

@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """`directory` over HTTP on loopback, as a reader's browser gets a site; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


def open_page(browser, javascript: bool = True):
    """A new page that records every console error and failed request."""
    page = browser.new_page(viewport={"width": 1280, "height": 900},
                            java_script_enabled=javascript)
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("requestfailed", lambda r: page.problems.append(f"failed {r.url}"))
    page.on("response", lambda r: r.status >= 400 and page.problems.append(
        f"{r.status} {r.url}"))
    return page


def visit(page, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
