"""The plain-text digest a person writes, read into entries.

The format: a date line (`2024년 5월 22일` or `2024-05-22`), then for each paper
- its title, on one line or wrapped over a few;
- optionally its authors in parentheses, on one line or wrapped over several;
- optionally its URL alone on a line: any form of an arXiv address (abs, pdf or html, with or
  without a version, `www.`, `https://`, a trailing slash or `.pdf`; `arXiv:2405.12981` too) or
  any other http(s) address;
- optionally the abstract: the lines without Korean before the commentary;
- the commentary;
- its `#tags`: lines that hold nothing but `#tag` tokens, glued (`#a#b`), spaced or separated by
  commas, which close the entry; tags written after the last sentence of the commentary count too.
Blank lines and separator lines (`---`) are ignored; CRLF line ends and a BOM are fine.

The digest is read by its structure rather than line by line: a title followed by a list of
authors or by an arXiv URL starts an entry even where the entry before it lacks its tags line.
What had to be guessed, or could not be placed in any entry, comes back as a Problem naming its
line: an entry split off another's commentary, one without tags, a tag token or a line reading
as a title inside a commentary. DigestError is kept for a digest that cannot be read at all
(empty, or without its date).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from digestlab.papers import is_arxiv_id

DATE = re.compile(r"^(\d{4})\s*(?:년|[-./])\s*(\d{1,2})\s*(?:월|[-./])\s*(\d{1,2})\s*(?:일|\.)?"
                  r"(?:\s*\(\w+\))?$")  # a weekday in parentheses may follow: 2024년 5월 22일 (수)
HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
TAG = re.compile(r"[#＃]([^\W\d_][\w-]*)")  # `＃` is what a Korean keyboard's full-width mode types
TAGS_LINE = re.compile(r"^(?:(?:tags?|태그)\s*[:：]\s*)?(?:[#＃][^\W\d_][\w-]*[\s,;·|/.]*)+$", re.I)
TRAILING_TAGS = re.compile(r"(?:^|\s)((?:[#＃][^\W\d_][\w-]*[\s,;·]*)+)$")
STRAY_TAG = re.compile(r"(?<![\w/&#＃])[#＃] ?[^\W\d_][\w-]*")  # not C#, #1 or a URL's #anchor
URL = re.compile(r"(?:https?://|(?:www\.|export\.)?arxiv\.org/)\S+", re.I)
ARXIV_REF = re.compile(r"arxiv\s*:\s*(\d{4}\.\d{4,5}(?:v\d+)?|[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7}"
                       r"(?:v\d+)?)", re.I)
ARXIV_HOST = re.compile(r"^https?://(?:www\.|export\.)?arxiv\.org/", re.I)
ARXIV_URL = re.compile(r"^https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf|html|format)/"
                       r"(\d{4}\.\d{4,5}|[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7})(v\d+)?"
                       r"(?:\.pdf)?/?(?:[?#]\S*)?$", re.I)
SEPARATOR = re.compile(r"(?:[-=*_~.·•]\s*){3,}")
INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u2060"))  # a BOM, zero-width spaces
SENTENCE = re.compile(r"[.!?]$|[.!?][\"')\]]$")

MAX_TITLE_LINES = 3  # a title wraps over at most this many lines
# An English paragraph before the commentary is the abstract only when it is this long (arXiv's
# abstracts run to 1,000 characters and more); a shorter one is commentary, kept in the note.
MIN_ABSTRACT_CHARS = 300
MAX_TITLE_CHARS = 250  # a longer line is a paragraph, not a title
MAX_AUTHOR_LINES = 12  # a list of authors wraps over at most this many lines
MAX_NAME_WORDS = 6
# Words a name may hold in lower case, and words a wrapped title's line may end with.
NAME_PARTICLES = frozenset("al al. and at bin da de del der di dos du et la le of the van von"
                           .split())
CONNECTORS = frozenset("a an and as at by for from in into of on or the to towards via vs with"
                       .split())


class DigestError(ValueError):
    """A digest that cannot be read; the message names the line."""


@dataclass(frozen=True)
class Problem:
    """What the reader had to guess (skipped False) or could not place in any entry (True)."""

    line: int
    message: str
    skipped: bool = False

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class DigestItem:
    """One paper of a digest, as written."""

    line: int  # where its title is (where it starts, when it has none), 1-based
    title: str
    authors: list[str] = field(default_factory=list)
    url: str | None = None
    abstract: str | None = None
    commentary: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @property
    def arxiv_id(self) -> str | None:
        """The arXiv id (with its version, when the URL names one) of an arXiv URL."""
        match = ARXIV_URL.match(self.url or "")
        if not match or not is_arxiv_id(match[1] + (match[2] or "")):
            return None
        return match[1] + (match[2] or "")


class Digest(NamedTuple):
    """A digest as read: its date, its papers in order, and what the reader reports."""

    date: dt.date
    items: list[DigestItem]
    problems: list[Problem]


@dataclass(frozen=True)
class Line:
    """One line of the digest, stripped; a blank or separator line has the text ''."""

    number: int
    text: str


def _lines(text: str) -> list[Line]:
    """The digest's lines, numbered from 1 as an editor numbers them."""
    rows = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = []
    for number, row in enumerate(rows, 1):
        row = row.translate(INVISIBLE).strip()
        lines.append(Line(number, "" if SEPARATOR.fullmatch(row) else row))
    return lines


def _short(text: str) -> str:
    """A title or line as a message quotes it."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _tags(text: str) -> list[str] | None:
    """The tags of a line that holds nothing but tags; None for any other line."""
    return TAG.findall(text) if TAGS_LINE.match(text) else None


def _url(text: str, bracketed: bool = True) -> str | None:
    """The URL a line holds alone (bare, or with `bracketed` in <>, () or []), with https://
    added where it was left off; None for any other line."""
    inner = text
    if bracketed and len(inner) > 1 and inner[0] + inner[-1] in ("<>", "()", "[]"):
        inner = inner[1:-1].strip()
    inner = inner.rstrip(".,;")
    reference = ARXIV_REF.fullmatch(inner)
    if reference:
        return f"https://arxiv.org/abs/{reference[1]}"
    if not URL.fullmatch(inner):
        return None
    return inner if re.match(r"https?://", inner, re.I) else "https://" + inner


def _split_authors(text: str) -> list[str]:
    """The names of an author list: separated by commas or semicolons, `and` dropped."""
    names = (re.sub(r"^and\s+", "", part.strip()) for part in re.split(r"[,;]", text))
    return [name for name in names if name]


def _looks_like_names(authors: list[str]) -> bool:
    """Whether a list reads as people's names: a few capitalised words each, no digits, no
    Korean (so that a parenthesised remark in the commentary is not taken for authors)."""
    def word(w: str) -> bool:
        return w.lower() in NAME_PARTICLES or (any(c.isupper() for c in w)
                                               and not any(c.isdigit() for c in w)
                                               and not HANGUL.search(w) and "://" not in w)
    return bool(authors) and all(
        1 <= len(name.split()) <= MAX_NAME_WORDS and all(word(w) for w in name.split())
        for name in authors)


@dataclass
class _Authors:
    names: list[str]
    end: int  # the index of the line after them
    closed: bool  # False: the parenthesis was never closed, only the first line was taken


def _closes_early(text: str) -> bool:
    """Whether the parenthesis that opens `text` is closed before its last character (an
    author's own parentheses, "(Ada Lovelace (Analytical Engine), ...)", are not)."""
    depth = 0
    for k, c in enumerate(text):
        depth += (c == "(") - (c == ")")
        if depth == 0:
            return k < len(text) - 1
    return False


def _authors(lines: list[Line], i: int, strict: bool) -> _Authors | None:
    """The authors in parentheses from lines[i] on, however wrapped; None when lines[i] opens no
    such list. A list over several lines, and with `strict` any list, must read as names."""
    first = lines[i].text
    # the opening parenthesis closed before the line ends starts a title, "(Self-)Rewarding"
    if not first.startswith("(") or _closes_early(first) or _url(first):
        return None
    rows, j = [first], i
    while not rows[-1].endswith(")"):
        j += 1
        text = lines[j].text if j < len(lines) else ""
        if (not text or j - i >= MAX_AUTHOR_LINES or _url(text) or _tags(text) is not None
                or (HANGUL.search(text) and not HANGUL.search(first))):
            names = _split_authors(first[1:])
            if strict or not _looks_like_names(names):
                return None
            return _Authors(names, i + 1, closed=False)
        rows.append(text)
    names = _split_authors(" ".join(rows)[1:-1])
    if (strict or len(rows) > 1) and not _looks_like_names(names):
        return None
    return _Authors(names, j + 1, closed=True)


def _title_like(text: str, last: bool = True) -> bool:
    """Whether a line could be (a line of) a paper's title: short, without Korean, not a
    sentence; when it is the title's `last` line, not ending mid-phrase either (a colon, a
    hyphen, a word like 'with')."""
    if (not text or len(text) > MAX_TITLE_CHARS or HANGUL.search(text) or text[0] in "(#＃[-*•"
            or text[-1] in ".,;" or _url(text) or not any(c.isalpha() for c in text)):
        return False
    return not (last and _unfinished(text))


def _starts_title(text: str) -> bool:
    """Whether a line could be the first line of a title: title-like, and not starting in lower
    case as the wrapped rest of a sentence does."""
    return _title_like(text, last=False) and not text[0].islower()


def _unfinished(text: str) -> bool:
    """Whether a line stops mid-phrase, so that the next line continues it."""
    return text[-1] in ":-–—&" or text.split()[-1].lower() in CONNECTORS


def _skip_blank(lines: list[Line], j: int) -> int:
    """The index of the first line from lines[j] on that is not blank (len(lines) if none)."""
    while j < len(lines) and not lines[j].text:
        j += 1
    return j


def _anchor(lines: list[Line], j: int, strict: bool) -> str | None:
    """What of an entry's header lines[j] starts: 'authors', 'arxiv' (an arXiv URL) or 'url';
    None for anything else. With `strict`, authors must read as names and a URL stand bare."""
    if j >= len(lines) or not lines[j].text:
        return None
    url = _url(lines[j].text, bracketed=not strict)
    if url:
        return "arxiv" if ARXIV_HOST.match(url) else "url"
    return "authors" if _authors(lines, j, strict) else None


def _title_span(lines: list[Line], i: int) -> int:
    """How many lines the title starting an entry at lines[i] runs over: to the authors or URL
    when they follow within a few lines; else one line, and the next while the line stops
    mid-phrase or the next is a title's line that Korean commentary follows; 0 when the entry
    starts with its authors or URL."""
    if _url(lines[i].text) or _authors(lines, i, strict=False):
        return 0
    for count in range(2, MAX_TITLE_LINES + 1):
        if i + count > len(lines) or not _title_like(lines[i + count - 1].text, last=False):
            break
        if (_title_like(lines[i + count - 1].text)
                and _anchor(lines, _skip_blank(lines, i + count), strict=True)):
            return count  # the title's lines run to its authors or URL
    if _anchor(lines, _skip_blank(lines, i + 1), strict=False):
        return 1
    count = 1
    while count < MAX_TITLE_LINES and i + count < len(lines):
        after = _skip_blank(lines, i + count + 1)
        after_text = lines[after].text if after < len(lines) else ""
        if not _title_like(lines[i + count].text, last=False) or not (
                _unfinished(lines[i + count - 1].text) or HANGUL.search(after_text)):
            break
        count += 1
    return count


def _next_entry(lines: list[Line], start: int) -> tuple[int, int] | None:
    """The first place from lines[start] on where what reads as another entry begins: a title of
    up to a few lines followed by a list of names in parentheses or by an arXiv URL. Returns its
    index and how many lines its title runs over."""
    for j in range(start, len(lines)):
        if not _starts_title(lines[j].text):
            continue
        for count in range(1, MAX_TITLE_LINES + 1):
            last = j + count - 1
            if last >= len(lines) or not _title_like(lines[last].text, last=False):
                break
            if (_title_like(lines[last].text)
                    and _anchor(lines, _skip_blank(lines, j + count), strict=True)
                    in ("authors", "arxiv")):
                return j, count
    return None


def _header(lines: list[Line], i: int, title_lines: int,
            problems: list[Problem]) -> tuple[DigestItem, int]:
    """The entry whose title runs over lines[i:i + title_lines], with the authors and URL that
    follow it (in either order), and the index of the line after them."""
    title = " ".join(line.text for line in lines[i:i + title_lines])
    item = DigestItem(lines[i].number, title)
    j = i + title_lines
    while True:
        j = _skip_blank(lines, j)
        if j >= len(lines):
            break
        url = None if item.url else _url(lines[j].text)
        # after the URL, only a list of names: a remark in parentheses opens the commentary
        authors = (None if item.authors or url
                   else _authors(lines, j, strict=item.url is not None))
        if url:
            item.url = url
            if ARXIV_HOST.match(url) and not item.arxiv_id:
                problems.append(Problem(lines[j].number, f"{url} holds no arXiv id that can "
                                        "exist; the paper is looked up by its title instead"))
            j += 1
        elif authors:
            item.authors = authors.names
            if not authors.closed:
                problems.append(Problem(lines[j].number, "the authors' parenthesis is never "
                                        "closed; only this line is taken for the authors"))
            j = authors.end
        else:
            break
    return item, j


def _fill_body(item: DigestItem, body: list[Line], problems: list[Problem]) -> list[int]:
    """Split the lines after an entry's header into the abstract and the commentary, report what
    in them may start another paper (one that the entry's missing tags line would have set
    apart) and the tags in the abstract, and return the commentary's line numbers."""
    rows = [line for line in body if line.text]
    korean = next((k for k, line in enumerate(rows) if HANGUL.search(line.text)), None)
    paragraph = next((k for k, line in enumerate(body) if not line.text and any(
        other.text for other in body[:k])), len(body))
    in_first = sum(1 for line in body[:paragraph] if line.text)
    if korean is not None:  # the English before the Korean commentary, within one paragraph
        cut = min(korean, in_first)
    elif in_first < len(rows):  # English throughout: the first of several paragraphs
        cut = in_first
    else:  # one English paragraph: the abstract runs to its first full stop
        cut = next((k + 1 for k, line in enumerate(rows) if SENTENCE.search(line.text)), 1)
        cut = cut if cut < len(rows) else 1 if len(rows) > 1 else 0
    if sum(len(line.text) for line in rows[:cut]) < MIN_ABSTRACT_CHARS:
        cut = 0  # too short for an abstract: the commentary, which must not be lost
    if cut:
        item.abstract = " ".join(line.text for line in rows[:cut])
    item.commentary = [line.text for line in rows[cut:]]
    starts_paragraph = {line.number for above, line in zip(body, body[1:], strict=False)
                        if not above.text and line.text}
    for k, line in enumerate(rows[:-1]):
        above, below = rows[k - 1].text if k else "", rows[k + 1].text
        if k and not (HANGUL.search(above) or SENTENCE.search(above)
                      or line.number in starts_paragraph):
            continue  # the wrapped rest of a paragraph
        url = _url(below, bracketed=False)
        if _starts_title(line.text) and _title_like(line.text) and (
                HANGUL.search(below) or (k >= cut and url and not ARXIV_HOST.match(url))
                or (k and line.number in starts_paragraph)):
            what = ("Korean text" if HANGUL.search(below) else "a URL" if url
                    else "the rest of its paragraph")
            problems.append(Problem(line.number, f"{_short(line.text)}, above {what} in the "
                                    f"body of {_short(item.title)}, reads as a title; if another "
                                    "paper starts there, end this one with its #tags line"))
    _stray_tags(f"the abstract of {_short(item.title)}", rows[:cut], problems)
    return [line.number for line in rows[cut:]]


def _stray_tags(where: str, lines: list[Line], problems: list[Problem]) -> None:
    """Report the tag tokens that lines of text hold, which are not taken for tags."""
    for line in lines:
        stray = STRAY_TAG.findall(line.text)
        if stray:
            problems.append(Problem(line.number, f"{where} holds {', '.join(stray)}, kept as "
                                    "text: a tags line holds nothing but #tags"))


def _commentary_tags(item: DigestItem, numbers: list[int], problems: list[Problem]) -> None:
    """Report the tag tokens left in an entry's commentary once its tags are settled."""
    lines = [Line(*row) for row in zip(numbers, item.commentary, strict=False)]  # tags may end it
    _stray_tags(f"the commentary of {_short(item.title)}", lines, problems)


def _untagged(item: DigestItem, sure: bool, problems: list[Problem]) -> bool:
    """Settle an entry that no tags line closes: its tags from the end of its last line when
    they stand there, else none. Returns False when it is not an entry for sure (no authors or
    URL, and nothing after it), so it is left out."""
    last = item.commentary[-1] if item.commentary else ""
    trailing = TRAILING_TAGS.search(last)
    if trailing:
        item.tags = TAG.findall(trailing[1])
        item.commentary[-1] = last[:trailing.start()].rstrip()
        if not item.commentary[-1]:
            item.commentary.pop()
        problems.append(Problem(item.line, f"{_short(item.title)} has no #tags line; the tags "
                                f"at the end of its last line are taken ({trailing[1].strip()})"))
        return True
    if sure or item.authors or item.url:
        problems.append(Problem(item.line, f"{_short(item.title)} has no #tags line; "
                                "imported without tags"))
        return True
    problems.append(Problem(item.line, f"{_short(item.title)} has no #tags line, authors or URL; "
                            "not imported (end it with its #tags line)", skipped=True))
    return False


def _tags_after_sentence(lines: list[Line], problems: list[Problem]) -> list[Line]:
    """The lines with tags written at the end of a sentence (`...입니다. #efficiency`) split off
    onto a tags line of their own; tags after words that do not end a sentence stay text."""
    split = []
    for line in lines:
        trailing = TRAILING_TAGS.search(line.text)
        before = line.text[:trailing.start()].rstrip() if trailing else ""
        if trailing and SENTENCE.search(before):
            problems.append(Problem(line.number, f"the tags at the end of this line "
                                    f"({trailing[1].strip()}) are read as a tags line"))
            split += [Line(line.number, before), Line(line.number, trailing[1].strip())]
        else:
            split.append(line)
    return split


def _what(item: DigestItem) -> str:
    """What an entry's header holds, in words."""
    parts = ["a title"] + (["authors"] if item.authors else [])
    if item.url:
        parts.append("an arXiv URL" if ARXIV_HOST.match(item.url) else "a URL")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _entries(chunk: list[Line], tags: list[str] | None,
             problems: list[Problem]) -> list[DigestItem]:
    """The entries of the lines up to a tags line (`tags`; None at the end of the digest): the
    first starts at the first line, and another wherever a title with authors or an arXiv URL
    stands in the commentary (the entry before it then lacks its tags line)."""
    items: list[DigestItem] = []
    i = next((k for k, line in enumerate(chunk) if line.text), len(chunk))
    if i < len(chunk) and DATE.match(chunk[i].text):
        problems.append(Problem(chunk[i].number, "a second date line; ignored (import each "
                                "day's digest by itself)", skipped=True))
        i = next((k for k in range(i + 1, len(chunk)) if chunk[k].text), len(chunk))
    if i == len(chunk):
        return items
    item, start = _header(chunk, i, _title_span(chunk, i), problems)
    while True:
        found = _next_entry(chunk, start)
        numbers = _fill_body(item, chunk[start:found[0] if found else len(chunk)], problems)
        if not found:
            break
        following, start = _header(chunk, found[0], found[1], problems)
        problems.append(Problem(following.line, f"the commentary of {_short(item.title)} "
                                f"holds what reads as another entry "
                                f"({_what(following)}); {_short(following.title)} is read as "
                                "an entry of its own"))
        if _untagged(item, True, problems):
            items.append(item)
        _commentary_tags(item, numbers, problems)
        item = following
    if tags is not None:
        item.tags = tags
        items.append(item)
    elif _untagged(item, bool(items), problems):
        items.append(item)
    _commentary_tags(item, numbers, problems)
    return items


def _check_titles(items: list[DigestItem], problems: list[Problem]) -> list[DigestItem]:
    """The entries that can be imported; an entry without a title needs an arXiv id to find
    it by, and a title that reads as a sentence is reported."""
    kept = []
    for item in items:
        if not item.title:
            if not item.arxiv_id:
                problems.append(Problem(item.line, "an entry without a title or an arXiv URL "
                                        "(it starts with its authors or URL); not imported",
                                        skipped=True))
                continue
            problems.append(Problem(item.line, "an entry without a title (it starts with its "
                                    "URL); the title is taken from arXiv"))
        elif item.title.endswith(".") or len(item.title) > MAX_TITLE_CHARS:
            problems.append(Problem(item.line, f"{_short(item.title)} is read as a title though "
                                    "it reads as a sentence; if it belongs to the entry before, "
                                    "move that entry's #tags line below it"))
        kept.append(item)
    return kept


def parse_digest(text: str) -> Digest:
    """The digest's date, its papers and the problems met; raises DigestError only for a digest
    that cannot be read at all."""
    lines = _lines(text)
    written = [line for line in lines if line.text]
    if not written:
        raise DigestError("the digest is empty")
    first = written[0]
    match = DATE.match(first.text)
    try:
        date = dt.date(int(match[1]), int(match[2]), int(match[3])) if match else None
    except ValueError:
        date = None
    if date is None:
        raise DigestError(f"line {first.number}: expected the digest's date (e.g. 2024년 5월 22일),"
                          f" got {first.text[:40]!r}")
    items: list[DigestItem] = []
    problems: list[Problem] = []
    chunk: list[Line] = []
    rest = _tags_after_sentence(lines[first.number:], problems)
    k = 0
    while k < len(rest):
        if _tags(rest[k].text) is None:
            chunk.append(rest[k])
            k += 1
            continue
        tags, start = [], rest[k].number
        while k < len(rest) and (not rest[k].text or _tags(rest[k].text) is not None):
            tags += [tag for tag in _tags(rest[k].text) or [] if tag not in tags]
            k += 1
        if any(line.text for line in chunk):
            items += _entries(chunk, tags, problems)
        else:
            shown = " ".join("#" + tag for tag in tags)
            problems.append(Problem(start, f"tags before any paper ({shown}); ignored",
                                    skipped=True))
        chunk = []
    items += _entries(chunk, None, problems)
    return Digest(date, _check_titles(items, problems), sorted(problems, key=lambda p: p.line))
