"""Building the MkDocs site: stale generated pages out, a strict build, then an atomic swap."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from digestlab.io import replace_dir_atomic
from digestlab.papers import LANGUAGES

PAGES = ("index", "results", "methods", "tags")  # generated per language beside the paper pages
FEED = "feed.xml"  # an Atom feed of the digest, per language, beside the home page
BIBLIOGRAPHY = "assets/digestlab.bib"  # the whole catalogue in BibTeX, under the docs folder
FILTERS_CSS = "stylesheets/filters.css"  # the results table's filters, under the docs folder
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


class _Page(HTMLParser):
    """The element ids of one HTML page and the addresses it links or loads."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        for name in ("href", "src"):
            if values.get(name) and tag in ("a", "link", "img", "script", "source", "iframe"):
                self.links.append(values[name])


def broken_links(site_dir: str | Path, base_path: str = "/") -> list[str]:
    """Every internal link of a built site that leads nowhere: a file that does not exist, or
    an anchor the target page lacks. Each as "page: link"; external addresses are not
    checked. `base_path` is where the site is served (the path of its site_url): links from
    the server's root start with it."""
    site_dir = Path(site_dir).resolve()
    base_path = "/" + base_path.strip("/") + "/" if base_path.strip("/") else "/"
    pages: dict[Path, _Page] = {}
    for path in sorted(site_dir.rglob("*.html")):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path] = page
    broken = []
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                continue  # external, or data: and mailto:
            if parts.path.startswith("/"):  # from the server's root
                if not parts.path.startswith(base_path):
                    broken.append(f"{path.relative_to(site_dir)}: {link} (outside the site)")
                    continue
                target = (site_dir / unquote(parts.path[len(base_path):])).resolve()
            else:
                target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            fragment = unquote(parts.fragment)
            if not target.is_relative_to(site_dir) or not target.exists():
                broken.append(f"{path.relative_to(site_dir)}: {link}")
            elif fragment and target in pages and fragment not in pages[target].ids:
                broken.append(f"{path.relative_to(site_dir)}: {link} (no such anchor)")
    return broken


def build_site(
    mkdocs_yml: str | Path,
    docs_dir: str | Path,
    site_dir: str | Path,
    keep_papers: Iterable[str],
    tags: str | Path = "config/tags.yaml",
    stamp: str | Path | None = None,
) -> None:
    """Build the site with `mkdocs build --strict`, check that every internal link of it leads
    somewhere, and swap it in; a failed build leaves the old site in place. `stamp` is written
    into the new site once it is in place."""
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
        broken = broken_links(staging, urlsplit(os.environ.get("SITE_URL", "")).path or "/")
        if broken:
            raise SiteError(f"{len(broken)} links of the built site lead nowhere:\n"
                            + "\n".join(broken[:20]))
    if stamp is not None:
        Path(stamp).write_text("built by mkdocs build --strict\n", encoding="utf-8")
