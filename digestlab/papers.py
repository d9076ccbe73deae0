"""Paper entries: the one place that reads, validates and describes `papers/*.yaml`.

Validation collects every problem in every file before anything runs, and reports each as one
line naming the file, the field and what is allowed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

PAPER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")
# New-style ids (2405.12981, optionally v2) and old-style ids (hep-th/9901001, math.GT/0309136v1):
# the shape (also the workflow's wildcard constraint), then its parts for is_arxiv_id.
ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z][a-z-]*(\.[A-Z]{2})?/\d{7})(v\d+)?$")
_ARXIV_PARTS = re.compile(r"^(?:(?P<new>\d{4})\.(?P<number>\d{4,5})"
                          r"|[a-z][a-z-]*(?:\.[A-Z]{2})?/(?P<old>\d{4})(?P<serial>\d{3}))"
                          r"(?:v\d+)?$")
LANGUAGES = ("ko", "en")
# Characters that XML 1.0 (and so a feed) cannot hold; and the line breaks that YAML and
# Markdown see besides \n, which would end a title's line in a page's front matter.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
LINE_BREAKS = re.compile("[\r\n\x85\u2028\u2029]")
MAX_ENTRY_BYTES = 256 * 1024  # an entry is a page of notes; anything larger is a mistake
MAX_NOTE_CHARS = 20_000


class StrictLoader(yaml.SafeLoader):
    """YAML for entries and tags: what the text says, as plain data, or a YAMLError.

    Dates and timestamps stay strings, so that an impossible one (month 13) reaches validation
    as data and fails there with its field named, instead of raising from inside the loader; a
    key given twice and an alias (`*name`, which can multiply a small file into a huge
    structure) are refused, where PyYAML would silently keep the last key and expand the alias.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers
                if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_constructor("tag:yaml.org,2002:timestamp",
                             lambda loader, node: loader.construct_scalar(node))


def load_yaml(text: str) -> Any:
    """Parse YAML with StrictLoader; raises yaml.YAMLError for anything it will not read."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


class PaperError(Exception):
    """Raised with one readable line per problem found in the entries."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def this_month() -> tuple[int, int]:
    """The current (year, month), in UTC: arXiv gives out no id of a later month."""
    today = dt.datetime.now(dt.UTC).date()
    return today.year, today.month


def is_arxiv_id(value: str, today: dt.date | None = None) -> bool:
    """True for an identifier some arXiv paper can have: the right shape, a real year and month
    of its scheme (old-style ids from 1991-08 to 2007-03, new-style ids from 2007-04 to the
    current month, or that of `today`), the digit count of its era (four after the dot until
    2014, five from 2015) and a number other than zero."""
    match = _ARXIV_PARTS.match(value)
    if not match:
        return False
    yymm = match["new"] or match["old"]
    year, month = int(yymm[:2]), int(yymm[2:])
    if not 1 <= month <= 12:
        return False
    if match["new"]:
        digits = 4 if (year, month) <= (14, 12) else 5
        latest = (today.year, today.month) if today else this_month()
        return (7, 4) <= (year, month) and (2000 + year, month) <= latest \
            and len(match["number"]) == digits and int(match["number"]) > 0
    old_era = (year, month) >= (91, 8) or (year, month) <= (7, 3)
    return old_era and int(match["serial"]) > 0


def bare_arxiv_id(arxiv_id: str) -> str:
    """The arXiv id without its version suffix: 2405.12981v2 -> 2405.12981."""
    return re.sub(r"v\d+$", "", arxiv_id)


def http_url(value: str) -> str:
    # Links land in Markdown as [label](url): no spaces, parentheses or non-http schemes.
    if not re.match(r"^https?://[^\s()<>]+$", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


HttpUrl = Annotated[str, AfterValidator(http_url)]


ARXIV_PAGE = re.compile(r"^(?:www\.)?(?:export\.)?arxiv\.org/(?:abs|pdf)/(.+?)(?:\.pdf)?$")


def paper_key(ref: str) -> str:
    """What two references to one paper share: the arXiv id without its version (an arXiv
    abstract or PDF address counts as its id), or the URL without its scheme, fragment, a
    trailing slash or index.html, its host in lower case (dx.doi.org is doi.org)."""
    if is_arxiv_id(ref):
        return bare_arxiv_id(ref)
    address = ref.split("://", 1)[-1].split("#", 1)[0]
    address = address.removesuffix("index.html").rstrip("/")
    host, _, path = address.partition("/")
    host = {"dx.doi.org": "doi.org"}.get(host.lower(), host.lower())
    if (page := ARXIV_PAGE.match(f"{host}/{path}")) and is_arxiv_id(page[1]):
        return bare_arxiv_id(page[1])
    return f"{host}/{path}" if path else host


def arxiv_abs_url(arxiv_id: str) -> str:
    """The abstract page of an arXiv paper."""
    return f"https://arxiv.org/abs/{arxiv_id}"


def plain_text(text: str, one_line: bool = True) -> str:
    """Text from outside (arXiv's) made fit for a page, its front matter and a feed: without
    the characters XML cannot hold, and with `one_line` its line breaks of every kind spaces."""
    text = NOT_XML.sub("", text)
    return " ".join(LINE_BREAKS.sub(" ", text).split()) if one_line else text


def _fit_text(value: str, one_line: bool) -> str:
    """An entry's text as written, or a ValueError naming the first character no page, front
    matter or feed can carry."""
    unfit = NOT_XML.search(value) or (LINE_BREAKS.search(value) if one_line else None)
    if unfit:
        what = "a line break" if LINE_BREAKS.match(unfit[0]) else "a control character" \
            if unfit[0] < " " else "a character that is not text"
        raise ValueError(f"holds U+{ord(unfit[0]):04X} ({what}) at character {unfit.start() + 1};"
                         f" {'one line of text' if one_line else 'text'} is allowed")
    return value


def _line(value: str) -> str:
    return _fit_text(value, one_line=True)


def _text(value: str) -> str:
    return _fit_text(value, one_line=False)


Line = Annotated[str, AfterValidator(_line)]


def _known_tag(value: str, info: ValidationInfo) -> str:
    tags = (info.context or {}).get("tags")
    if tags is not None and value not in tags:
        raise ValueError(
            f"unknown tag {value!r} (allowed: {', '.join(sorted(tags))};"
            " add new tags to config/tags.yaml)"
        )
    return value


def _known_experiment(value: str, info: ValidationInfo) -> str:
    exists = (info.context or {}).get("experiment_exists")
    if exists is not None and not exists(value):
        raise ValueError(f"unknown experiment {value!r}")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Source(Strict):
    """Where the paper lives: an arXiv id, or a URL for work that is not on arXiv."""

    arxiv: str | None = None
    url: HttpUrl | None = None

    @field_validator("arxiv")
    @classmethod
    def _arxiv_shape(cls, value: str | None) -> str | None:
        if value is not None and not is_arxiv_id(value):
            year, month = this_month()
            raise ValueError(
                f"{value!r} is not an arXiv id that can exist (allowed: YYMM.NNNN from 0704 to "
                f"1412, YYMM.NNNNN from 1501 to this month, {year % 100:02d}{month:02d}, or an "
                "old-style id such as \"hep-th/9901001\")"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if (self.arxiv is None) == (self.url is None):
            raise ValueError("give exactly one of 'arxiv' or 'url'")
        return self


class Note(Strict):
    """The reader's commentary in Markdown, once per language."""

    ko: Annotated[str, AfterValidator(_text)] = Field(min_length=1, max_length=MAX_NOTE_CHARS)
    en: Annotated[str, AfterValidator(_text)] = Field(min_length=1, max_length=MAX_NOTE_CHARS)

    @field_validator("ko", "en")
    @classmethod
    def _markdown_only(cls, value: str) -> str:
        # A courtesy to the note's author, not the site's defence (digestlab/sanitize.py's
        # allow-list is): raw HTML and javascript: links would be dropped from the page
        # silently, so they are named here. Code spans and blocks show them as text.
        prose = re.sub(r"```.*?```|`[^`\n]*`", "", value, flags=re.DOTALL)
        tag = re.search(r"</?(?!https?://)[a-zA-Z!][^>]*>", prose)  # <https://…>: an autolink
        if tag:
            raise ValueError(f"raw HTML ({tag[0][:30]}) is not allowed in notes; write Markdown")
        if re.search(r"\]\(\s*(javascript|data|vbscript):", prose, re.IGNORECASE):
            raise ValueError("links in notes must be http(s) or relative, not javascript:")
        return value


class Reproduction(Strict):
    """The registered experiment that reproduces the paper, and params over its defaults."""

    experiment: Annotated[str, AfterValidator(_known_experiment)]
    params: dict[str, Any] = Field(default_factory=dict)


def _known_method(value: str, info: ValidationInfo) -> str:
    methods_of = (info.context or {}).get("methods_of")
    experiment = info.data.get("experiment")
    if methods_of is not None and experiment is not None:
        known = methods_of(experiment)
        if value not in known:
            allowed = f"known: {', '.join(known)}" if known else "it declares none"
            raise ValueError(f"unknown method {value!r} of experiment {experiment!r} ({allowed})")
    return value


class MeasuredAs(Strict):
    """A method measured in this digest that the entry describes although its source is not the
    paper the method is credited to (a blog post on it, say): the experiment and the method's
    id there (digestlab/experiments/<experiment>/methods.py)."""

    experiment: Annotated[str, AfterValidator(_known_experiment)]
    method: Annotated[str, AfterValidator(_known_method)]


class Paper(Strict):
    """One entry of the digest."""

    id: str
    source: Source
    title: Line = Field(min_length=1, max_length=500)
    # some collaborations sign with thousands of names
    authors: list[Annotated[Line, Field(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=5000)
    published: dt.date
    digest_date: dt.date
    # the entry's place in its digest (1 first): the home page lists a digest in this order,
    # and entries without one after those with one, by title
    digest_position: int | None = Field(None, ge=1, le=10_000)
    tags: list[Annotated[str, AfterValidator(_known_tag)]] = Field(min_length=1, max_length=30)
    note: Note
    related: list[str] = Field(default_factory=list, max_length=200)
    links: dict[Line, HttpUrl] = Field(default_factory=dict, max_length=50)
    reproduction: Reproduction | None = None
    measured_as: list[MeasuredAs] = Field(default_factory=list, max_length=50)

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not PAPER_ID.match(value):
            raise ValueError(f"{value!r} is not a slug (allowed: ^[a-z0-9][a-z0-9-]{{1,63}}$)")
        return value

    @field_validator("published", "digest_date", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        # StrictLoader leaves dates as text, quoted or not: ISO dates and nothing looser.
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        return value

    @property
    def arxiv_id(self) -> str | None:
        return self.source.arxiv

    @property
    def url(self) -> str:
        """The paper's canonical address."""
        return arxiv_abs_url(self.source.arxiv) if self.source.arxiv else str(self.source.url)

    def fallback_metadata(self) -> dict[str, Any]:
        """The fields that stand in for arXiv's answer when it cannot be had."""
        return {
            "arxiv_id": self.arxiv_id,
            "title": self.title,
            "authors": list(self.authors),
            "published": self.published.isoformat(),
            "url": self.url,
        }


def related_fallback(arxiv_id: str) -> dict[str, Any]:
    """What stands in for arXiv's answer about a related paper the digest does not hold: its id
    and address, no title."""
    return {"arxiv_id": arxiv_id, "title": None, "authors": [], "published": None,
            "url": arxiv_abs_url(arxiv_id)}


def related_arxiv_ids(paper: Paper, papers: Mapping[str, Paper]) -> list[str]:
    """The arXiv ids (without version) of the related papers the digest does not hold: their
    titles are fetched like the entries' own metadata."""
    return [bare_arxiv_id(ref) for ref, entry in resolve_related(paper, papers)
            if entry is None and is_arxiv_id(ref)]


def resolve_related(paper: Paper, papers: Mapping[str, Paper]) -> list[tuple[str, Paper | None]]:
    """Each of `paper.related` with the entry of `papers` it names, by entry id or by the arXiv id
    (with or without version) the entry is the source of; None when the digest lacks it."""
    by_arxiv = {bare_arxiv_id(p.arxiv_id): p for p in papers.values() if p.arxiv_id}
    resolved = []
    for ref in paper.related:
        entry = papers.get(ref)
        if entry is None and is_arxiv_id(ref):
            entry = by_arxiv.get(bare_arxiv_id(ref))
        resolved.append((ref, entry))
    return resolved


_SECTIONS: dict[tuple, type[BaseModel]] = {
    (): Paper,
    ("source",): Source,
    ("note",): Note,
    ("reproduction",): Reproduction,
}
_LISTS: dict[tuple, type[BaseModel]] = {("measured_as",): MeasuredAs}


def describe_error(error: Mapping[str, Any]) -> tuple[str, str]:
    """Turn one pydantic error into (field path, readable message)."""
    loc = [str(part) for part in error["loc"]]
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
    # a key is the entry's own text: what would break the message's line is shown escaped
    field = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in field.lstrip("."))
    field = field or "(top level)"
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return field, "unknown field"
    if kind == "missing":
        return field, "missing required field"
    if kind.endswith("_type") and error.get("input") in (None, ""):
        allowed = " (allowed: a date such as 2024-05-22)" if kind.startswith("date") else ""
        return field, f"empty{allowed}"
    if kind == "value_error":
        return field, msg.removeprefix("Value error, ")
    if loc[-1:] == ["arxiv"] and kind == "string_type":
        return field, "must be a string: write the arXiv id in quotes, e.g. \"2405.12981\""
    if kind.startswith("date"):
        return field, f"{msg} (allowed: a date such as 2024-05-22)"
    return field, msg


def _allowed_fields(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def _read_entry(path: Path, problems: list[str]) -> dict[str, Any] | None:
    size = path.stat().st_size
    if size > MAX_ENTRY_BYTES:
        problems.append(f"{path}: (file): {size:,} bytes, more than an entry can need "
                        f"(at most {MAX_ENTRY_BYTES:,})")
        return None
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        reason = getattr(exc, "problem", None) or str(exc) or "cannot be parsed"
        problems.append(f"{path}: (file): not valid YAML{at}: {reason}")
        return None
    except UnicodeDecodeError:
        problems.append(f"{path}: (file): not UTF-8 text")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: (file): must be a mapping of fields ({_allowed_fields(Paper)})")
        return None
    return data


def _not_an_entry_file(path: Path, papers_dir: Path) -> str | None:
    """Why `path` cannot be an entry, or None when it is a .yaml file. A symbolic link is
    refused, whatever it points to: an entry is the file in papers_dir that its id names."""
    if path.is_symlink():
        target = os.readlink(path)
        if not path.exists():
            return f"a dangling symbolic link (to {target}); entries must be files in {papers_dir}/"
        inside = path.resolve().is_relative_to(papers_dir.resolve())
        outside = "" if inside else f", outside {papers_dir}/"
        return (f"a symbolic link to {target}{outside}; entries must be files in "
                f"{papers_dir}/, not links")
    if path.is_dir():
        return f"a folder; only .yaml entry files belong in {papers_dir}/"
    if path.suffix != ".yaml" or not path.is_file():
        return f"only .yaml entries belong in {papers_dir}/"
    return None


def load_papers(
    papers_dir: str | Path,
    tags: Mapping[str, Mapping[str, str]],
    experiment_exists: Callable[[str], bool],
    methods_of: Callable[[str], list[str]] | None = None,
) -> dict[str, Paper]:
    """Read and validate every entry in `papers_dir`; raise PaperError listing all problems.
    `methods_of` gives the ids of the methods an experiment declares, for `measured_as`."""
    papers_dir = Path(papers_dir)
    problems: list[str] = []
    papers: dict[str, Paper] = {}
    seen_ids: dict[str, Path] = {}
    seen_sources: dict[str, Path] = {}

    if not papers_dir.is_dir():
        raise PaperError([f"{papers_dir}: (folder): not found"])
    for path in sorted(papers_dir.iterdir()):
        if path.name.startswith("."):
            continue
        if why := _not_an_entry_file(path, papers_dir):
            problems.append(f"{path}: (file): {why}")
            continue
        data = _read_entry(path, problems)
        if data is None:
            continue
        try:
            paper = Paper.model_validate(
                data, context={"tags": tags, "experiment_exists": experiment_exists,
                               "methods_of": methods_of}
            )
        except ValidationError as exc:
            for error in exc.errors():
                field, message = describe_error(error)
                if message == "unknown field":
                    parent = (_SECTIONS.get(tuple(error["loc"][:-1]))
                              or _LISTS.get(tuple(error["loc"][:-2])))
                    message += f" (allowed: {_allowed_fields(parent)})" if parent else ""
                problems.append(f"{path}: {field}: {message}")
            continue

        local = []
        if paper.id != path.stem:
            local.append(f"{path}: id: {paper.id!r} must equal the file name {path.stem!r}")
        if paper.id in seen_ids:
            local.append(f"{path}: id: {paper.id!r} is already used by {seen_ids[paper.id]}")
        seen_ids.setdefault(paper.id, path)
        # one entry per paper: an arXiv id in any version, a URL however it is spelt
        key = paper_key(paper.arxiv_id or paper.url)
        if key in seen_sources:
            field, value = ("arxiv", paper.arxiv_id) if paper.arxiv_id else ("url", paper.url)
            local.append(f"{path}: source.{field}: {value!r} is already the source of "
                         f"{seen_sources[key]}")
        seen_sources.setdefault(key, path)
        problems.extend(local)
        if not local:
            papers[paper.id] = paper

    for paper in papers.values():
        for i, ref in enumerate(paper.related):
            if not (is_arxiv_id(ref) or ref in papers):
                problems.append(
                    f"{papers_dir / (paper.id + '.yaml')}: related[{i}]: {ref!r} is neither an "
                    "arXiv id nor the id of another entry"
                )
    if problems:
        raise PaperError(problems)
    return papers


def read_paper(path: str | Path) -> Paper:
    """Read one entry that `load_papers` has already validated."""
    data = load_yaml(Path(path).read_text(encoding="utf-8"))
    return Paper.model_validate(data)


TAG = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def load_tags(path: str | Path) -> dict[str, dict[str, str]]:
    """Read the tag vocabulary: tag -> {language: label}."""
    path = Path(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = exc.__class__.__name__
        raise PaperError([f"{path}: (file): cannot be read as YAML ({reason})"]) from None
    problems = []
    if not isinstance(data, dict) or not data:
        raise PaperError([f"{path}: (file): must map each tag to its labels"])
    for tag, labels in data.items():
        if not isinstance(tag, str) or not TAG.match(tag):
            # tags name pages, CSS classes and filters
            problems.append(f"{path}: {tag}: a tag is lowercase letters, digits and dashes")
        elif not isinstance(labels, dict) or set(labels) != set(LANGUAGES):
            problems.append(f"{path}: {tag}: needs exactly the labels {', '.join(LANGUAGES)}")
        elif not all(isinstance(v, str) and v for v in labels.values()):
            problems.append(f"{path}: {tag}: labels must be non-empty strings")
    if problems:
        raise PaperError(problems)
    return data
