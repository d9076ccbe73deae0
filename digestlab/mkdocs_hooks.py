"""MkDocs hooks: the tags plugin allows exactly the labels of the tag vocabulary, every page's
content passes the site's HTML allow-list, and pages make no requests that cannot be
answered."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from material.plugins.tags.structure.tag.options import TagSet
from mkdocs.plugins import event_priority

from digestlab.papers import LANGUAGES, load_tags
from digestlab.sanitize import page_html
from digestlab.site import TAGS_ENV


def on_config(config):
    """Set the tags plugin's `tags_allowed` from the vocabulary (config/tags.yaml unless the
    workflow names another file), so the vocabulary has one home."""
    default = Path(config.config_file_path).parent / "config" / "tags.yaml"
    vocabulary = load_tags(os.environ.get(TAGS_ENV, default))
    labels = sorted({label for labels in vocabulary.values() for label in labels.values()})
    for name, plugin in config.plugins.items():
        if name.endswith("tags"):
            plugin.config.tags_allowed = TagSet().validate(labels)
    return config


def on_page_content(html, page, config, files):
    """Whatever a page's Markdown made, only what `digestlab.sanitize` allows reaches the
    site, its search index included."""
    return page_html(html)


# The head's links to the same page in the other languages (the i18n plugin writes them per
# page). Material's script fetches a sitemap beside each one (/en/papers/x/sitemap.xml), which
# does not exist, and logs a 404 on every page; sitemap.xml already lists every page's other
# languages, and the header's language menu links the same pages.
_HREFLANG_LINK = re.compile(r'\s*<link rel="alternate" href="[^"]*" hreflang="[^"]*">')
_BASE = re.compile(r'("base": ")([^"]*)(")')
OTHER_LANGUAGES = LANGUAGES[1:]  # the first is the site's default, at its root


def _language_of(url: str) -> str | None:
    first = url.split("/", 1)[0]
    return first if first in OTHER_LANGUAGES else None


def _language_root(base: str) -> str:
    """The relative path from a page of another language to that language's root, given the
    path to the site's root (its last step is the language's folder)."""
    steps = base.split("/")[:-1]
    return "/".join(steps) or "."


def on_post_page(output: str, page, config) -> str:
    """Drop the head's hreflang links; pages of another language look for the search index
    (and sitemap) under that language's root, so a search finds pages of the reader's
    language only."""
    output = _HREFLANG_LINK.sub("", output)
    if _language_of(page.url):
        output = _BASE.sub(lambda m: m[1] + _language_root(m[2]) + m[3], output, count=1)
    return output


@event_priority(-200)  # after the i18n plugin has merged every language's index into one
def on_post_build(config) -> None:
    """Split the merged search index by language: the default language's pages stay at the
    root, each other language's go under its folder, located relative to it; the sitemap is
    copied there too."""
    site = Path(config.site_dir)
    index_path = site / "search" / "search_index.json"
    if not index_path.exists():
        return
    index = json.loads(index_path.read_text(encoding="utf-8"))
    by_language: dict[str | None, list] = {}
    for doc in index["docs"]:
        by_language.setdefault(_language_of(doc["location"]), []).append(doc)
    for lang in OTHER_LANGUAGES:
        docs = [doc | {"location": doc["location"][len(lang) + 1:]}
                for doc in by_language.get(lang, [])]
        out = site / lang / "search" / "search_index.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(index | {"docs": docs}, ensure_ascii=False), encoding="utf-8")
        if (site / "sitemap.xml").exists():
            shutil.copyfile(site / "sitemap.xml", site / lang / "sitemap.xml")
    index_path.write_text(json.dumps(index | {"docs": by_language.get(None, [])},
                                     ensure_ascii=False), encoding="utf-8")
