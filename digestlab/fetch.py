"""Paper metadata from the arXiv API, with the entry's own fields as the offline fallback."""

from __future__ import annotations

import datetime as dt
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arxiv
import requests

from digestlab.io import write_bytes_atomic, write_json_atomic
from digestlab.papers import arxiv_abs_url, bare_arxiv_id

ATOM = "{http://www.w3.org/2005/Atom}"


class NoSuchPaper(LookupError):
    """arXiv answered, with a well-formed feed listing no paper: it has none of that id."""


class ArxivUnreachable(Exception):
    """arXiv could not be asked, or its answer could not be read: nothing is known."""


# What a failed fetch raises; each makes the entry's own fields stand in.
FETCH_ERRORS = (arxiv.ArxivError, requests.RequestException, LookupError, ValueError)


@dataclass(frozen=True)
class FetchSettings:
    """How to talk to the arXiv API (all from config/config.yaml `fetch:`)."""

    api_url: str = "https://export.arxiv.org/api/query"  # tests point this at a loopback server
    timeout_s: float = 15.0  # per HTTP request
    num_retries: int = 2  # extra tries after the first, with delay_s between them
    delay_s: float = 3.0  # arXiv asks for at least 3 s between requests
    retry_offline_after_min: float = 60.0  # offline records are retried once older than this
    download_pdf: bool = False


class _TimeoutSession(requests.Session):
    # The arxiv client issues requests without a timeout; a silent server would hang the run.
    # It also parses whatever arrives, a feed cut off halfway included, so the last body is
    # kept for query_arxiv to check.
    def __init__(self, timeout_s: float):
        super().__init__()
        self.timeout_s = timeout_s
        self.last_body = b""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout_s)
        response = super().request(*args, **kwargs)
        self.last_body = response.content
        return response


def _client(settings: FetchSettings) -> arxiv.Client:
    client = arxiv.Client(
        page_size=1, delay_seconds=settings.delay_s, num_retries=settings.num_retries
    )
    client.query_url_format = settings.api_url + "?{}"
    client._session = _TimeoutSession(settings.timeout_s)
    return client


def _read_feed(body: bytes) -> ET.Element:
    """The root of a whole Atom feed; raise LookupError for anything else (a feed cut off
    halfway, a web page)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise LookupError(f"the feed is cut off or not XML ({exc})") from None
    if root.tag != f"{ATOM}feed":
        raise LookupError(f"the answer is not an Atom feed but <{root.tag}>")
    return root


def query_arxiv(arxiv_id: str, settings: FetchSettings) -> dict[str, Any]:
    """Ask the arXiv API for one paper; raise NoSuchPaper when arXiv has none of that id,
    LookupError (or a network error) when it cannot tell.

    An answer counts only when the whole feed is well-formed XML and its entry carries what
    every real record has: an id, a title, at least one author, an abstract and a published
    date. A feed cut off halfway would otherwise give a record with a truncated abstract and no
    authors, which would be cached as if arXiv had said it. arXiv answers an id it has not
    given out with a complete feed of no entries; anything else without an entry (a web page,
    say) is no answer."""
    search = arxiv.Search(id_list=[arxiv_id], max_results=1)
    client = _client(settings)
    results = list(client.results(search))
    feed = _read_feed(client._session.last_body)
    if not results and feed.find(f"{ATOM}entry") is None:
        raise NoSuchPaper("arXiv has no such paper (its answer listed none)")
    if not results:
        raise LookupError("the feed's entry could not be read")
    result = results[0]
    short_id = result.get_short_id()
    if bare_arxiv_id(short_id) != bare_arxiv_id(arxiv_id):
        raise LookupError(f"the feed answered with another paper ({short_id})")
    missing = [name for name, value in (("title", result.title.strip()),
                                        ("author", result.authors),
                                        ("abstract", result.summary.strip()),
                                        ("published date", result.published)) if not value]
    if missing:
        raise LookupError(f"the entry lacks its {', '.join(missing)}")
    return {
        "origin": "arxiv",
        "arxiv_id": arxiv_id,
        "version_id": short_id,
        "title": " ".join(result.title.split()),
        "authors": [author.name for author in result.authors],
        "abstract": " ".join(result.summary.split()),
        "categories": list(result.categories),
        "primary_category": result.primary_category,
        "published": result.published.date().isoformat(),
        "updated": result.updated.date().isoformat(),
        "pdf_url": result.pdf_url,
        "abs_url": arxiv_abs_url(bare_arxiv_id(arxiv_id)),
        "doi": result.doi or None,
        "journal_ref": result.journal_ref or None,
        "comment": result.comment or None,
    }


def _words(title: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", title.lower()))


def find_arxiv_id(title: str, settings: FetchSettings) -> str | None:
    """The arXiv id of the paper with this title (compared word for word, case and punctuation
    aside), or None when arXiv has none; raise ArxivUnreachable, naming the error, when arXiv
    cannot be asked or its answer cannot be read."""
    words = _words(title)
    if not words:
        return None
    search = arxiv.Search(query=f'ti:"{words}"', max_results=5)
    client = _client(settings)
    try:
        for result in client.results(search):
            if _words(result.title) == words:
                return bare_arxiv_id(result.get_short_id())
        _read_feed(client._session.last_body)  # no match only if arXiv's answer was whole
    except FETCH_ERRORS as exc:
        raise ArxivUnreachable(f"{type(exc).__name__}: {exc}") from None
    return None


def offline_metadata(fallback: dict[str, Any], reason: str) -> dict[str, Any]:
    """The metadata the entry itself carries (`Paper.fallback_metadata()`), marked as such."""
    arxiv_id = fallback["arxiv_id"]
    return {
        "origin": "offline",
        "reason": reason,
        "arxiv_id": arxiv_id,
        "version_id": arxiv_id,
        "title": fallback["title"],
        "authors": list(fallback["authors"]),
        "abstract": None,
        "categories": [],
        "primary_category": None,
        "published": fallback["published"],
        "updated": fallback["published"],
        "pdf_url": f"https://arxiv.org/pdf/{arxiv_id}",
        "abs_url": fallback["url"],
        "doi": None,
        "journal_ref": None,
        "comment": None,
    }


def _download_pdf(url: str, dest: Path, settings: FetchSettings) -> None:
    response = _TimeoutSession(settings.timeout_s).get(url)
    response.raise_for_status()
    write_bytes_atomic(dest, response.content)


def fetch_metadata(
    fallback: dict[str, Any],
    out: str | Path,
    settings: FetchSettings,
    retry_token: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fetch one paper's metadata into `out` (JSON); fall back to the entry when arXiv fails."""
    arxiv_id = fallback["arxiv_id"]
    started = time.time()
    reached = True  # whether a request reached arXiv, which then asks for a pause
    try:
        meta = query_arxiv(arxiv_id, settings)
        log(f"fetched {arxiv_id} from {settings.api_url} in {time.time() - started:.1f}s")
    except FETCH_ERRORS as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log(f"arXiv unavailable for {arxiv_id}, using the entry's own fields: {reason}")
        meta = offline_metadata(fallback, reason)
        # no connection was made (offline, or the name does not resolve): nothing to pause for
        reached = not isinstance(exc, requests.ConnectionError)
    if settings.download_pdf and meta["origin"] == "arxiv" and meta["pdf_url"]:
        pdf = Path(out).with_suffix(".pdf")
        try:
            _download_pdf(meta["pdf_url"], pdf, settings)
            meta["pdf_path"] = str(pdf)
            log(f"downloaded {meta['pdf_url']} to {pdf}")
        except requests.RequestException as exc:
            log(f"PDF download failed, continuing without it: {type(exc).__name__}: {exc}")
    now = dt.datetime.now(dt.UTC)
    meta["fetched_at"] = now.isoformat(timespec="seconds")
    meta["retry_token"] = retry_token
    write_json_atomic(out, meta)
    # arXiv asks for a pause between requests. Fetch jobs run one at a time (the arxiv_api
    # resource), so each that reached it pauses before handing the API to the next.
    if reached:
        time.sleep(settings.delay_s)
    return meta
