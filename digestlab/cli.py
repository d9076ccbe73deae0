"""The `digestlab` command: what a person runs beside `snakemake` to keep the digest.

    digestlab check                     validate every entry as the pipeline would; exit 0 or 1
    digestlab new 2405.12981 --tags efficiency,llm
                                        start papers/<slug>.yaml from the paper's arXiv record
    digestlab import digest.txt [--dry-run]
                                        turn a plain-text digest into entries (digestlab/digest.py)

Both read config/config.yaml (or --config) for where the entries and tags live.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from digestlab.digest import DigestError, parse_digest
from digestlab.experiments import experiment_exists, resolve_scale
from digestlab.fetch import (
    FETCH_ERRORS,
    ArxivUnreachable,
    FetchSettings,
    NoSuchPaper,
    find_arxiv_id,
    offline_metadata,
    query_arxiv,
)
from digestlab.io import write_bytes_atomic
from digestlab.methods import measured_elsewhere
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


def raw_entries(papers_dir: Path) -> dict[Path, dict[str, Any]]:
    """Each entry file's fields as written, read without validating them (a new entry's notes
    are still empty); a file that is not a YAML mapping is left out: `digestlab check` names
    it."""
    found = {}
    for path in sorted(papers_dir.glob("*.yaml")):
        try:
            data = load_yaml(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(data, dict):
            found[path] = data
    return found


def entries_by_arxiv_id(papers_dir: Path) -> dict[str, Path]:
    """The entry file of each arXiv id (without version) that the entries hold."""
    held = {}
    for path, data in raw_entries(papers_dir).items():
        source = data.get("source")
        if isinstance(source, dict) and source.get("arxiv"):
            held.setdefault(bare_arxiv_id(str(source["arxiv"])), path)
    return held


class _EntryDumper(yaml.SafeDumper):
    """Entries as a person would write them: notes of several lines as literal blocks."""


_EntryDumper.add_representer(
    str, lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def reproductions_in(papers_dir: Path, packages: tuple[str, ...]) -> dict[str, str]:
    """Entry id -> experiment for each entry whose reproduction names a known experiment."""
    found = {}
    for path, data in raw_entries(papers_dir).items():
        reproduction = data.get("reproduction")
        experiment = reproduction.get("experiment") if isinstance(reproduction, dict) else None
        if isinstance(experiment, str) and experiment_exists(experiment, packages):
            found[path.stem] = experiment
    return found


def say_measured(path: Path, ref: str, reproductions: dict[str, str],
                 packages: tuple[str, ...]) -> None:
    """Tell the person adding an entry which methods of its paper the digest's `reproductions`
    (reproductions_in) already measure: its page will show them, and no experiment reruns."""
    for entry, method in measured_elsewhere(ref, reproductions, packages):
        print(f"{path}: {method.name} is measured in {entry}'s reproduction; the page will show "
              "it under \"Measured in this digest\", and no experiment reruns for it")


def dump_entry(entry: dict[str, Any]) -> str:
    return yaml.dump(entry, Dumper=_EntryDumper, allow_unicode=True, sort_keys=False, width=100)


def slug(title: str) -> str:
    """A file name from a title: its first words, lower case, joined by hyphens."""
    words = re.findall(r"[a-z0-9]+", title.lower())[:SLUG_WORDS]
    return "-".join(words)[:64].strip("-")


def entry_id(title: str, otherwise: str) -> str:
    """slug(title) when it is a valid entry id, else `otherwise`."""
    name = slug(title)
    return name if PAPER_ID.match(name) else otherwise


def new_entry(arxiv_id: str, tags: list[str], config: dict[str, Any]
              ) -> tuple[Path, dict[str, Any], str]:
    """The entry to write for `arxiv_id`, where, and where its metadata came from; raises
    PaperError with one line per problem."""
    if not is_arxiv_id(arxiv_id):
        raise PaperError([f"{arxiv_id}: (argument): not an arXiv id that can exist"])
    known = load_tags(config["tags"])
    problems = [f"--tags: unknown tag {t!r} (allowed: {', '.join(sorted(known))}; add new "
                "tags to config/tags.yaml)" for t in tags if t not in known]
    papers_dir = Path(config["papers_dir"])
    held = entries_by_arxiv_id(papers_dir).get(bare_arxiv_id(arxiv_id))
    if held:
        problems.append(f"{held}: source.arxiv: already holds {arxiv_id}")
    if problems:
        raise PaperError(problems)
    try:
        meta = query_arxiv(arxiv_id, FetchSettings(**config["fetch"]))
    except NoSuchPaper as exc:
        raise PaperError([f"{arxiv_id}: (argument): {exc}; nothing was written"]) from None
    except FETCH_ERRORS as exc:  # what the pipeline falls back on, the same way
        meta = offline_metadata({"arxiv_id": arxiv_id, "title": "", "authors": [],
                                 "published": "", "url": arxiv_abs_url(arxiv_id)},
                                f"{type(exc).__name__}: {exc}")
    name = entry_id(meta["title"], "arxiv-" + re.sub(r"[^a-z0-9]+", "-",
                                                     bare_arxiv_id(arxiv_id).lower()))
    entry = {
        "id": name,
        "source": {"arxiv": arxiv_id},
        "title": meta["title"],
        "authors": meta["authors"],
        "published": meta["published"],
        "digest_date": dt.date.today().isoformat(),
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
    write_bytes_atomic(path, dump_entry(entry).encode("utf-8"))
    packages = tuple(config["experiment_packages"])
    say_measured(path, arxiv_id, reproductions_in(path.parent, packages), packages)
    if origin == "arxiv":
        print(f"wrote {path} from arXiv; write its notes, then run `digestlab check`")
    else:
        print(f"wrote {path}, but arXiv was not reached: fill in the title, "
              "authors, date and notes, then run `digestlab check`")
    return 0


def arxiv_id_by_title(title: str, settings: FetchSettings, where: str) -> str | None:
    """The arXiv id of the paper titled `title`, or None; when there is none, say whether arXiv
    lacks the title (stdout) or could not be asked (stderr), one line naming `where`."""
    try:
        arxiv_id = find_arxiv_id(title, settings)
    except ArxivUnreachable as exc:
        print(f"{where}: arXiv could not be reached to look up the title ({exc}); the entry "
              "was not checked against the entries' arXiv ids", file=sys.stderr)
        return None
    if arxiv_id is None and re.search(r"\w", title):
        print(f"{where}: arXiv has no paper of this title")
    return arxiv_id


def tag_list(text: str) -> list[str]:
    """The tags of a comma-separated list, spaces around each and empty pieces dropped."""
    return [tag for tag in (piece.strip() for piece in text.split(",")) if tag]


def import_digest(digest: str | Path, config: dict[str, Any], dry_run: bool = False) -> int:
    """Write an entry for each paper of a plain-text digest that no entry holds yet. The
    commentary becomes note.ko; the abstract is left to the fetch step; an arXiv id comes from
    the paper's URL or from a title search, and its record gives the authors and date the
    digest lacks. Unknown tags are kept and reported, and nothing existing is overwritten.
    What the reader had to guess or could not place is said on stderr, one line each; the exit
    status is 1 when some part of the digest was not imported, else 0."""
    digest = Path(digest)
    try:
        date, items, problems = parse_digest(digest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        sys.exit(f"{digest}: (file): cannot be read as UTF-8 text ({type(exc).__name__})")
    except DigestError as exc:
        sys.exit(f"{digest}: {exc}")
    for problem in problems:
        print(f"{digest}: {problem}", file=sys.stderr)
    left_out = sum(problem.skipped for problem in problems)
    known = load_tags(config["tags"])
    settings = FetchSettings(**config["fetch"])
    papers_dir = Path(config["papers_dir"])
    held = entries_by_arxiv_id(papers_dir)
    # an imported entry has no reproduction: what measures methods is known before the first
    packages = tuple(config["experiment_packages"])
    reproductions = reproductions_in(papers_dir, packages)
    written = 0
    for n, item in enumerate(items):
        if n:
            time.sleep(settings.delay_s)  # arXiv asks for a pause between requests
        where = f"{digest}: line {item.line}"
        arxiv_id = item.arxiv_id or arxiv_id_by_title(item.title, settings, where)
        meta = None
        if arxiv_id:
            if bare_arxiv_id(arxiv_id) in held:
                print(f"{where}: {held[bare_arxiv_id(arxiv_id)]} already holds {arxiv_id}; "
                      "skipped")
                continue
            try:
                meta = query_arxiv(arxiv_id, settings)
            except FETCH_ERRORS:
                meta = None
        source = ({"arxiv": arxiv_id} if arxiv_id else {"url": item.url} if item.url else {})
        title = item.title or (meta["title"] if meta else "")
        if not title:
            print(f"{where}: an entry without a title, and arXiv gave none; not written",
                  file=sys.stderr)
            left_out += 1
            continue
        entry = {
            "id": entry_id(title, f"entry-{item.line}"),
            "source": source,
            "title": title,
            "authors": item.authors or (meta["authors"] if meta else []),
            "published": meta["published"] if meta else "",
            "digest_date": date.isoformat(),
            "digest_position": n + 1,
            "tags": item.tags,
            "note": {"ko": "\n".join(item.commentary), "en": ""},
        }
        path = papers_dir / f"{entry['id']}.yaml"
        if path.exists():
            print(f"{where}: {path} already exists; skipped")
            continue
        unknown = [t for t in item.tags if t not in known]
        if unknown:
            print(f"{where}: unknown tags {', '.join(unknown)} kept; add them to "
                  f"{config['tags']} or change them")
        todo = [name for name, missing in (("source", not source), ("authors",
                not entry["authors"]), ("published", not entry["published"]),
                ("note.en", True)) if missing]
        if dry_run:
            print(f"would write {path} (to fill in: {', '.join(todo)}):\n{dump_entry(entry)}")
        else:
            write_bytes_atomic(path, dump_entry(entry).encode("utf-8"))
            print(f"wrote {path} (to fill in: {', '.join(todo)})")
            if source:
                say_measured(path, source.get("arxiv") or source["url"], reproductions,
                             packages)
        written += 1
        if arxiv_id:
            held[bare_arxiv_id(arxiv_id)] = path
    verb = "would write" if dry_run else "wrote"
    print(f"{verb} {written} of {len(items)} papers; then run `digestlab check`")
    if left_out:
        print(f"{digest}: {left_out} part{'s' if left_out > 1 else ''} of the digest not "
              "imported (named above); fix the digest and import it again", file=sys.stderr)
    return 1 if left_out else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="digestlab", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml",
                        help="the workflow's config (default: config/config.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate every entry as the pipeline would")
    make = commands.add_parser("new", help="start an entry from an arXiv id")
    make.add_argument("arxiv_id")
    make.add_argument("--tags", default="", help="comma-separated tags from config/tags.yaml")
    bring = commands.add_parser("import", help="turn a plain-text digest into entries")
    bring.add_argument("digest")
    bring.add_argument("--dry-run", action="store_true", help="show the entries, write nothing")
    args = parser.parse_args(argv)
    config = read_config(args.config)
    try:
        if args.command == "check":
            return check(config)
        if args.command == "import":
            return import_digest(args.digest, config, args.dry_run)
        return new(args.arxiv_id, tag_list(args.tags), config)
    except PaperError as exc:  # a broken tags file, say
        sys.exit("\n".join(exc.problems))


if __name__ == "__main__":
    sys.exit(main())
