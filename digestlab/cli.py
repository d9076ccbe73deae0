"""The `digestlab` command: what a person runs beside `snakemake` to keep the digest.

    digestlab check                     validate every entry as the pipeline would; exit 0 or 1
    digestlab new 2405.12981 --tags efficiency,llm
                                        start papers/<slug>.yaml from the paper's arXiv record

Both read config/config.yaml (or --config) for where the entries and tags live.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from digestlab.experiments import resolve_scale
from digestlab.fetch import FETCH_ERRORS, FetchSettings, offline_metadata, query_arxiv
from digestlab.io import write_bytes_atomic
from digestlab.papers import (
    PAPER_ID,
    PaperError,
    arxiv_abs_url,
    bare_arxiv_id,
    is_arxiv_id,
    load_tags,
    load_yaml,
)
from digestlab.workflow import load_papers_or_exit, load_reproductions_or_exit

SLUG_WORDS = 6  # words of the title kept in a new entry's file name


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        sys.exit(f"{path}: (file): cannot be read ({type(exc).__name__})")


def check(config: dict[str, Any]) -> int:
    """Every entry and its experiment params, with the pipeline's own messages."""
    papers = load_papers_or_exit(config)
    load_reproductions_or_exit(papers, resolve_scale(config["scale"]), config)
    print(f"{len(papers)} entries in {config['papers_dir']}/ are valid")
    return 0


def slug(title: str) -> str:
    """A file name from a title: its first words, lower case, joined by hyphens."""
    words = re.findall(r"[a-z0-9]+", title.lower())[:SLUG_WORDS]
    return "-".join(words)[:64].strip("-")


def new_entry(arxiv_id: str, tags: list[str], config: dict[str, Any],
              today: dt.date | None = None) -> tuple[Path, dict[str, Any], str]:
    """The entry to write for `arxiv_id`, where, and where its metadata came from; raises
    PaperError with one line per problem."""
    if not is_arxiv_id(arxiv_id):
        raise PaperError([f"{arxiv_id}: (argument): not an arXiv id that can exist"])
    known = load_tags(config["tags"])
    problems = [f"--tags: unknown tag {t!r} (allowed: {', '.join(sorted(known))}; add new "
                "tags to config/tags.yaml)" for t in tags if t not in known]
    papers_dir = Path(config["papers_dir"])
    for path in sorted(papers_dir.glob("*.yaml")):
        try:
            source = (load_yaml(path.read_text(encoding="utf-8")) or {}).get("source") or {}
        except (yaml.YAMLError, UnicodeDecodeError, AttributeError):
            continue  # `digestlab check` names broken entries
        if isinstance(source, dict) and bare_arxiv_id(str(source.get("arxiv"))) == \
                bare_arxiv_id(arxiv_id):
            problems.append(f"{path}: source.arxiv: already holds {arxiv_id}")
    if problems:
        raise PaperError(problems)
    try:
        meta = query_arxiv(arxiv_id, FetchSettings(**config["fetch"]))
    except FETCH_ERRORS as exc:  # what the pipeline falls back on, the same way
        meta = offline_metadata({"arxiv_id": arxiv_id, "title": "", "authors": [],
                                 "published": "", "url": arxiv_abs_url(arxiv_id)},
                                f"{type(exc).__name__}: {exc}")
    name = slug(meta["title"]) if meta["title"] else ""
    if not PAPER_ID.match(name):
        name = "arxiv-" + re.sub(r"[^a-z0-9]+", "-", bare_arxiv_id(arxiv_id).lower())
    entry = {
        "id": name,
        "source": {"arxiv": arxiv_id},
        "title": meta["title"],
        "authors": meta["authors"],
        "published": meta["published"],
        "digest_date": (today or dt.date.today()).isoformat(),
        "tags": tags,
        "note": {"ko": "", "en": ""},
    }
    return papers_dir / f"{name}.yaml", entry, meta["origin"]


def new(arxiv_id: str, tags: list[str], config: dict[str, Any]) -> int:
    try:
        path, entry, origin = new_entry(arxiv_id, tags, config)
    except PaperError as exc:
        sys.exit("\n".join(exc.problems))
    if path.exists():
        sys.exit(f"{path}: (file): already exists; nothing was written")
    text = yaml.safe_dump(entry, allow_unicode=True, sort_keys=False, width=100)
    write_bytes_atomic(path, text.encode("utf-8"))
    if origin == "arxiv":
        print(f"wrote {path} from arXiv; write its notes, then run `digestlab check`")
    else:
        print(f"wrote {path}, but arXiv was not reached: fill in the title, "
              "authors, date and notes, then run `digestlab check`")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="digestlab", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml",
                        help="the workflow's config (default: config/config.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate every entry as the pipeline would")
    make = commands.add_parser("new", help="start an entry from an arXiv id")
    make.add_argument("arxiv_id")
    make.add_argument("--tags", default="", help="comma-separated tags from config/tags.yaml")
    args = parser.parse_args(argv)
    config = read_config(args.config)
    if args.command == "check":
        return check(config)
    return new(args.arxiv_id, [t for t in args.tags.split(",") if t], config)


if __name__ == "__main__":
    sys.exit(main())
