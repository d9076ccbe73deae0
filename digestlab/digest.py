"""The plain-text digest a person writes, read into entries.

The format: a date line (`2024년 5월 22일` or `2024-05-22`), then for each paper a title line,
optionally the authors in parentheses, optionally a URL, optionally the abstract (a paragraph
without Korean), the commentary, and a line of `#tags` (which may run over several lines).
Blank lines are ignored.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

DATE = re.compile(r"^(\d{4})\s*(?:년\s*|-)(\d{1,2})\s*(?:월\s*|-)(\d{1,2})\s*일?$")
TAGS = re.compile(r"^#[\w-]+(\s+#[\w-]+)*$")
HANGUL = re.compile(r"[\uac00-\ud7a3]")
ARXIV_URL = re.compile(r"^https?://(?:www\.)?arxiv\.org/(?:abs|pdf)/([^\s?#]+?)(?:\.pdf)?/?$")


class DigestError(ValueError):
    """A digest that cannot be read; the message names the line."""


@dataclass
class DigestItem:
    """One paper of a digest, as written."""

    line: int  # where its title is, 1-based
    title: str
    authors: list[str] = field(default_factory=list)
    url: str | None = None
    abstract: str | None = None
    commentary: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @property
    def arxiv_id(self) -> str | None:
        match = ARXIV_URL.match(self.url or "")
        return match[1] if match else None


def _item(block: list[tuple[int, str]], tags: list[str]) -> DigestItem:
    (line, title), rest = block[0], block[1:]
    item = DigestItem(line, title, tags=tags)
    if rest and rest[0][1].startswith("(") and rest[0][1].endswith(")"):
        item.authors = [a.strip() for a in rest.pop(0)[1][1:-1].split(",") if a.strip()]
    if rest and re.match(r"^https?://\S+$", rest[0][1]):
        item.url = rest.pop(0)[1]
    if rest and not HANGUL.search(rest[0][1]) and len(rest) > 1:
        item.abstract = rest.pop(0)[1]  # an English paragraph before the commentary
    item.commentary = [text for _, text in rest]
    return item


def parse_digest(text: str) -> tuple[dt.date, list[DigestItem]]:
    """The digest's date and its papers; raises DigestError naming the line that breaks the
    format."""
    lines = [(n, line.strip()) for n, line in enumerate(text.lstrip("\ufeff").splitlines(), 1)
             if line.strip()]
    if not lines:
        raise DigestError("the digest is empty")
    first, date_text = lines[0]
    match = DATE.match(date_text)
    try:
        date = dt.date(int(match[1]), int(match[2]), int(match[3])) if match else None
    except ValueError:
        date = None
    if date is None:
        raise DigestError(f"line {first}: expected the digest's date (e.g. 2024년 5월 22일), "
                          f"got {date_text[:40]!r}")
    items: list[DigestItem] = []
    block: list[tuple[int, str]] = []
    for n, line in lines[1:]:
        if TAGS.match(line):
            tags = [t[1:] for t in line.split()]
            if block:
                items.append(_item(block, tags))
                block = []
            elif items:  # tags that ran over onto the next line
                items[-1].tags += tags
            else:
                raise DigestError(f"line {n}: tags before any paper")
            continue
        block.append((n, line))
    if block:
        raise DigestError(f"line {block[0][0]}: {block[0][1][:40]!r} has no #tags line")
    return date, items
