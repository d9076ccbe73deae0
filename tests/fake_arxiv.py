"""A fake arXiv API on loopback that answers in arXiv's Atom format, or fails on request."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape

ENTRY = """<entry>
  <id>http://arxiv.org/abs/{id}v1</id>
  <updated>2024-05-21T17:59:46Z</updated>
  <published>2024-05-21T17:59:46Z</published>
  <title>{title}</title>
  <summary>  {abstract}
  </summary>
  {authors}
  <arxiv:comment>12 pages</arxiv:comment>
  <link href="http://arxiv.org/abs/{id}v1" rel="alternate" type="text/html"/>
  <link title="pdf" href="{pdf_base}/pdf/{id}v1" rel="related" type="application/pdf"/>
  <arxiv:primary_category term="cs.LG" scheme="http://arxiv.org/schemas/atom"/>
  <category term="cs.LG" scheme="http://arxiv.org/schemas/atom"/>
  <category term="cs.CL" scheme="http://arxiv.org/schemas/atom"/>
</entry>"""

FEED = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/"
      xmlns:arxiv="http://arxiv.org/schemas/atom">
  <title>arXiv Query</title>
  <id>http://arxiv.org/api/fake</id>
  <updated>2024-05-22T00:00:00-04:00</updated>
  <opensearch:totalResults>{n}</opensearch:totalResults>
  <opensearch:startIndex>0</opensearch:startIndex>
  <opensearch:itemsPerPage>1</opensearch:itemsPerPage>
  {entries}
</feed>"""


def atom_feed(papers: dict[str, dict], ids: list[str], pdf_base: str) -> bytes:
    """An arXiv API answer listing the known papers among `ids`."""
    entries = []
    for arxiv_id in ids:
        paper = papers.get(arxiv_id)
        if paper is None:
            continue
        authors = "\n  ".join(
            f"<author><name>{escape(a)}</name></author>" for a in paper["authors"]
        )
        entries.append(ENTRY.format(id=arxiv_id, pdf_base=pdf_base, title=escape(paper["title"]),
                                    abstract=escape(paper["abstract"]), authors=authors))
    return FEED.format(n=len(entries), entries="\n".join(entries)).encode()


class FakeArxiv:
    """Serves `papers` until stopped; `mode` picks the behaviour: ok, an HTTP status ("404",
    "429", "500", "503"), slow, malformed, html (a web page with status 200), truncated (the
    feed cut after `cut` of its bytes) or drop (the connection closed before any answer)."""

    def __init__(self, papers: dict[str, dict]):
        self.papers = papers
        self.mode = "ok"
        self.cut = 0.5
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the stdlib's name)
                fake.requests.append(self.path)
                if fake.mode.isdigit():
                    self.send_error(int(fake.mode))
                    return
                if fake.mode == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fake.mode == "slow":
                    time.sleep(3)
                if self.path.startswith("/pdf/"):
                    body = b"%PDF-1.4 fake"
                    self.send_response(200)
                    self.send_header("Content-Type", "application/pdf")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                query = parse_qs(urlparse(self.path).query)
                ids = query.get("id_list", [""])[0].split(",")
                title = query.get("search_query", [""])[0]
                if title.startswith("ti:"):  # a title search: the papers whose title matches
                    words = title[3:].strip('"')
                    ids = [i for i, p in fake.papers.items()
                           if " ".join(re.findall(r"[a-z0-9]+", p["title"].lower())) == words]
                body = (b"<feed><entry>not arXiv's format" if fake.mode == "malformed"
                        else b"<html><body>Service busy</body></html>" if fake.mode == "html"
                        else atom_feed(fake.papers, ids, fake.base_url))
                if fake.mode == "truncated":
                    body = body[: int(len(body) * fake.cut)]
                self.send_response(200)
                self.send_header("Content-Type", "application/atom+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # Stopping waits for the serving loop to look up: every 50 ms rather than the default
        # 500, which cost a test using the server half a second at its end.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/api/query"

    def __enter__(self) -> FakeArxiv:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
