from __future__ import annotations

import json
import socket
import time

import pytest
from conftest import entry

from digestlab.fetch import (
    ArxivUnreachable,
    FetchSettings,
    NoSuchPaper,
    fetch_metadata,
    find_arxiv_id,
    query_arxiv,
)
from digestlab.papers import Paper
from digestlab.workflow import retry_token


def fallback(arxiv_id="2405.12981"):
    return Paper.model_validate(
        entry("cla", source={"arxiv": arxiv_id})
    ).fallback_metadata()


def settings(server, **kw) -> FetchSettings:
    return FetchSettings(**{"api_url": server.url, "timeout_s": 1, "num_retries": 0,
                            "delay_s": 0} | kw)


def test_fetch_writes_arxiv_metadata(fake_arxiv, tmp_path):
    out = tmp_path / "2405.12981.json"
    meta = fetch_metadata(fallback(), out, settings(fake_arxiv), log=lambda _: None)
    assert json.loads(out.read_text()) == meta
    assert meta["origin"] == "arxiv"
    assert meta["title"].startswith("Reducing Transformer")
    assert meta["authors"] == ["William Brandon", "Mayank Mishra"]
    assert meta["abstract"] == "We share keys and values between adjacent layers."
    assert meta["categories"] == ["cs.LG", "cs.CL"] and meta["primary_category"] == "cs.LG"
    assert meta["published"] == "2024-05-21"
    assert meta["pdf_url"] == f"{fake_arxiv.base_url}/pdf/2405.12981v1"
    assert "pdf_path" not in meta and not out.with_suffix(".pdf").exists()  # off by default
    assert "id_list=2405.12981" in fake_arxiv.requests[0]


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_fetch_pauses_for_arxiv_only_when_a_request_reached_it(fake_arxiv, tmp_path):
    # arXiv asks for 3 s between requests; offline, no request reaches it, and the next
    # fetch job need not wait (eight of them held a smoke run up by 24 s)
    offline = FetchSettings(api_url=f"http://127.0.0.1:{closed_port()}/api/query",
                            timeout_s=1, num_retries=0, delay_s=2)
    started = time.monotonic()
    meta = fetch_metadata(fallback(), tmp_path / "a.json", offline, log=lambda _: None)
    assert meta["origin"] == "offline" and time.monotonic() - started < 1
    started = time.monotonic()
    fetch_metadata(fallback(), tmp_path / "b.json", settings(fake_arxiv, delay_s=0.5),
                   log=lambda _: None)
    assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize("mode", ["404", "429", "500", "503", "slow", "malformed", "html",
                                  "drop"])
def test_failures_fall_back_to_the_entry(fake_arxiv, tmp_path, mode):
    fake_arxiv.mode = mode
    logged = []
    out = tmp_path / "m.json"
    started = time.monotonic()
    meta = fetch_metadata(fallback(), out, settings(fake_arxiv), log=logged.append)
    assert time.monotonic() - started < 2.5  # the 1 s timeout bounds it (the slow server: 3 s)
    assert meta["origin"] == "offline"
    assert meta["title"] == "Cross-Layer Attention"
    assert meta["authors"] == ["William Brandon"]
    assert "using the entry's own fields" in logged[-1]
    assert json.loads(out.read_text())["reason"]


@pytest.mark.parametrize("cut", [0.2, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99])
def test_a_feed_cut_off_anywhere_falls_back_and_says_why(fake_arxiv, tmp_path, cut):
    fake_arxiv.mode, fake_arxiv.cut = "truncated", cut
    logged = []
    meta = fetch_metadata(fallback(), tmp_path / "m.json", settings(fake_arxiv),
                          log=logged.append)
    assert meta["origin"] == "offline", meta
    assert meta["authors"] == ["William Brandon"]  # never worse than the entry's own fields
    assert "cut off" in meta["reason"] and "cut off" in logged[-1]


def test_an_entry_without_authors_is_not_taken_for_a_record(fake_arxiv, tmp_path):
    paper = fake_arxiv.papers["2405.12981"]
    fake_arxiv.papers = fake_arxiv.papers | {"2405.12981": paper | {"authors": []}}
    meta = fetch_metadata(fallback(), tmp_path / "m.json", settings(fake_arxiv),
                          log=lambda _: None)
    assert meta["origin"] == "offline" and "lacks its author" in meta["reason"]


def test_unreachable_server_falls_back(tmp_path):
    unreachable = FetchSettings(api_url=f"http://127.0.0.1:{closed_port()}/api/query",
                                timeout_s=1, num_retries=0, delay_s=0)
    meta = fetch_metadata(fallback(), tmp_path / "m.json", unreachable, log=lambda _: None)
    assert meta["origin"] == "offline" and "ConnectionError" in meta["reason"]


def test_unknown_id_falls_back(fake_arxiv, tmp_path):
    meta = fetch_metadata(fallback("2301.99999"), tmp_path / "m.json", settings(fake_arxiv),
                          log=lambda _: None)
    assert meta["origin"] == "offline"


def test_interrupted_write_leaves_the_old_file(fake_arxiv, tmp_path, monkeypatch):
    out = tmp_path / "m.json"
    out.write_text('{"origin": "arxiv", "title": "old"}')
    monkeypatch.setattr("digestlab.io.os.replace", lambda *a: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):
        fetch_metadata(fallback(), out, settings(fake_arxiv), log=lambda _: None)
    assert json.loads(out.read_text())["title"] == "old"
    assert list(tmp_path.iterdir()) == [out]


def test_retry_token_changes_once_an_offline_record_is_old(fake_arxiv, tmp_path):
    out = tmp_path / "m.json"
    assert retry_token(out, 60) == ""  # nothing fetched yet
    fake_arxiv.mode = "500"
    fetch_metadata(fallback(), out, settings(fake_arxiv), retry_token="", log=lambda _: None)
    assert retry_token(out, 60) == ""  # young offline record: no rerun
    later = time.time() + 61 * 60
    token = retry_token(out, 60, now=later)
    assert token.startswith("retry:")  # old offline record: the param changes, Snakemake reruns
    fake_arxiv.mode = "ok"
    fetch_metadata(fallback(), out, settings(fake_arxiv), retry_token=token, log=lambda _: None)
    assert retry_token(out, 60, now=later + 3600) == token  # online now: stable, no more reruns


def test_pdf_is_downloaded_beside_the_metadata_when_asked(fake_arxiv, tmp_path):
    out = tmp_path / "2405.12981.json"
    meta = fetch_metadata(fallback(), out, settings(fake_arxiv, download_pdf=True),
                          log=lambda _: None)
    assert out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert meta["pdf_path"] == str(out.with_suffix(".pdf"))


def test_an_empty_feed_means_arxiv_has_no_such_paper(fake_arxiv):
    with pytest.raises(NoSuchPaper):
        query_arxiv("2405.99999", settings(fake_arxiv))


@pytest.mark.parametrize("mode", ["html", "malformed", "500"])
def test_an_answer_that_is_no_feed_is_not_taken_for_no_such_paper(fake_arxiv, mode):
    fake_arxiv.mode = mode
    with pytest.raises(Exception) as caught:
        query_arxiv("2405.12981", settings(fake_arxiv))
    assert not isinstance(caught.value, NoSuchPaper)


@pytest.mark.parametrize(("mode", "says"), [
    ("500", "HTTPError"), ("malformed", "cut off or not XML"), ("html", "not an Atom feed"),
    ("truncated", "cut off")])
def test_a_title_search_tells_no_match_from_no_answer(fake_arxiv, mode, says):
    title = "Reducing transformer key-value cache size with cross-layer attention!"
    assert find_arxiv_id(title, settings(fake_arxiv)) == "2405.12981"  # case and marks aside
    assert find_arxiv_id("A title arXiv does not hold", settings(fake_arxiv)) is None
    fake_arxiv.mode = mode
    with pytest.raises(ArxivUnreachable, match=says):
        find_arxiv_id("A title arXiv does not hold", settings(fake_arxiv))


def test_a_title_search_of_an_unreachable_server_says_so():
    unreachable = FetchSettings(api_url=f"http://127.0.0.1:{closed_port()}/api/query",
                                timeout_s=1, num_retries=0, delay_s=0)
    with pytest.raises(ArxivUnreachable, match="ConnectionError"):
        find_arxiv_id("Any title", unreachable)
