"""Building the MkDocs site: stale generated pages out, a strict build, then an atomic swap."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from digestlab.io import replace_dir_atomic
from digestlab.papers import LANGUAGES

PAGES = ("index", "results", "tags")  # generated per language beside the paper pages
TAGS_ENV = "DIGESTLAB_TAGS"  # tells mkdocs_hooks.py where the tag vocabulary is


class SiteError(Exception):
    """`mkdocs build --strict` failed; the message holds its output."""


def prune_generated(docs_dir: str | Path, keep_papers: Iterable[str]) -> list[Path]:
    """Remove generated pages and figures of papers that are no longer in the digest."""
    docs_dir, keep = Path(docs_dir), set(keep_papers)
    stale = [
        page
        for lang in LANGUAGES
        for page in (docs_dir / lang / "papers").glob("*.md")
        if page.stem not in keep
    ]
    stale += [d for d in (docs_dir / "assets" / "figures").glob("*") if d.name not in keep]
    for path in stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return stale


def build_site(
    mkdocs_yml: str | Path,
    docs_dir: str | Path,
    site_dir: str | Path,
    keep_papers: Iterable[str],
    tags: str | Path = "config/tags.yaml",
    stamp: str | Path | None = None,
) -> None:
    """Build the site with `mkdocs build --strict` and swap it in; a failed build leaves the old
    site in place. `stamp` is written into the new site once it is in place."""
    for path in prune_generated(docs_dir, keep_papers):
        print(f"removed stale {path}")
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1", TAGS_ENV: str(Path(tags).resolve())}
    with replace_dir_atomic(site_dir) as staging:
        command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean",
                   "--config-file", str(mkdocs_yml), "--site-dir", str(staging.resolve())]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        print(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SiteError(f"mkdocs build --strict failed:\n{done.stderr[-4000:]}")
    if stamp is not None:
        Path(stamp).write_text("built by mkdocs build --strict\n", encoding="utf-8")
