"""Markdown pages for the site, in every language, from entries, arXiv metadata and results.

One set of jinja2 templates serves both languages; UI strings come from the Babel catalog of each
language (`digestlab/locale/<lang>/LC_MESSAGES/messages.po`). Text from outside (arXiv titles,
abstracts, author names) passes the `md` filter, which escapes it for HTML and for Markdown, so
it can neither open a tag nor make a link or attribute. The entry's own notes, which the digest's
author writes in Markdown, reach a page as HTML that `digestlab/sanitize.py` made and cleaned;
every page then passes its allow-list once more as MkDocs writes it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from itertools import groupby
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from babel.dates import format_date
from babel.numbers import format_decimal
from feedgen.feed import FeedGenerator

from digestlab.claims import LEVEL, SCHEMA_VERSION, VERDICTS, Claim
from digestlab.i18n import translations
from digestlab.io import read_json, write_bytes_atomic, write_text_atomic
from digestlab.methods import Row, links
from digestlab.papers import (
    LANGUAGES,
    Paper,
    arxiv_abs_url,
    bare_arxiv_id,
    load_tags,
    paper_key,
    plain_text,
    read_paper,
    resolve_related,
)
from digestlab.sanitize import note_html, note_text
from digestlab.site import BIBLIOGRAPHY, FEED, FILTERS_CSS, PAGES

TEMPLATES_DIR = Path(__file__).parent / "templates"


def number(value: Any, lang: str = "en") -> str:
    """A measured number for display: four significant digits, grouped thousands."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return format_decimal(value, locale=lang)
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return format_decimal(float(f"{value:.4g}"), format="#,##0.####", locale=lang)
        return f"{value:.3e}"
    return str(value)


# Characters Python-Markdown (with its tables extension) gives a meaning and lets a backslash undo.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|])")


def markdown_text(value: Any) -> markupsafe.Markup:
    """Plain text for a Markdown page: HTML-escaped, Markdown syntax backslash-escaped."""
    return markupsafe.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", str(value)))


def yaml_scalar(value: Any) -> markupsafe.Markup:
    """A front-matter value: a JSON string with every character beyond ASCII escaped is a YAML
    scalar that no character can end early (YAML breaks lines at U+2028 too, and forbids C1
    controls, which JSON would leave alone)."""
    return markupsafe.Markup(json.dumps(value, ensure_ascii=True))


def fenced(text: str, lang: str = "") -> markupsafe.Markup:
    """A fenced code block whose fence is longer than any run of backticks in `text`."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return markupsafe.Markup(f"{fence}{lang}\n{text}\n{fence}")


@cache
def environment(lang: str) -> jinja2.Environment:
    """The jinja2 environment for one language."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.install_gettext_translations(translations(lang), newstyle=True)
    env.filters["number"] = lambda value: number(value, lang)
    env.filters["md"] = markdown_text
    env.filters["yaml"] = yaml_scalar
    env.filters["fenced"] = fenced
    env.filters["note"] = note_html
    env.filters["date"] = lambda value: format_date(value, format="long", locale=lang)
    # a value the same in every language, or one per language
    env.filters["local"] = lambda value: value[lang] if isinstance(value, dict) else value
    env.globals.update(lang=lang, verdicts=VERDICTS, level=LEVEL,
                       templates=set(env.list_templates()))
    return env


@dataclass
class MethodView:
    """A method one entry's reproduction measured (a method of its methods.json, rows and
    decided claims typed), with the entries its credit reaches."""

    method: dict[str, Any]
    measured_in: Paper
    scale: str
    reference: dict[str, Any] | None  # the experiment's reference method, when it is another
    is_reference: bool  # whether it is the reference method itself
    credited_to: list[Paper]  # entries whose page shows this method
    named_by: set[str]  # those of them that name it in `measured_as`

    @property
    def paper_url(self) -> str:
        ref = self.method["paper"]
        return ref if ref.startswith(("http://", "https://")) else arxiv_abs_url(ref)

    @property
    def paper_label(self) -> str:
        """arXiv:<id>, doi:<doi>, or the host of another address."""
        ref = self.method["paper"]
        if not ref.startswith(("http://", "https://")):
            return f"arXiv:{ref}"
        host, _, path = ref.split("://", 1)[1].partition("/")
        return f"doi:{path}" if host in ("doi.org", "dx.doi.org") else host

    @property
    def measured(self) -> bool:
        return bool(self.method["rows"])

    @property
    def own(self) -> bool:
        """Whether it is the measuring entry's own paper's method."""
        return paper_key(self.method["paper"]) == paper_key(
            self.measured_in.arxiv_id or self.measured_in.url)

    def headline(self) -> tuple[Row, Row | None] | None:
        """The method's first row, and the reference method's row that measured the same
        quantity under the same setting, or else its first of that quantity (None when this is
        the reference, or the reference did not measure it)."""
        rows = self.method["rows"]
        if not rows:
            return None
        theirs = None
        if self.reference is not None:
            same = [r for r in self.reference["rows"] if r.quantity == rows[0].quantity]
            theirs = next((r for r in same if r.key == rows[0].key), same[0] if same else None)
        return rows[0], theirs

    @property
    def paper_entries(self) -> list[Paper]:
        """The entries of the paper the method comes from (not those that only name it)."""
        return [e for e in self.credited_to if e.id not in self.named_by]

    def tags(self) -> list[str]:
        """The measuring entry's tags, then those of its paper's entries, each once."""
        found = list(self.measured_in.tags)
        for entry in self.paper_entries:
            found += [t for t in entry.tags if t not in found]
        return found


def read_methods(path: str | Path) -> dict[str, Any]:
    """A result's methods (results/<paper>/methods.json), rows and decided claims typed."""
    measured = read_claims_json(path)
    for method in measured["methods"]:
        method["rows"] = [Row.model_validate(r) for r in method["rows"]]
        method["decided"] = [Claim.model_validate(c) for c in method["decided"]]
    return measured


def method_views(measured: dict[str, dict[str, Any]], papers: dict[str, Paper]
                 ) -> list[MethodView]:
    """Every method of `measured` (measuring entry id -> its read methods.json), credited to
    the entries of `papers` as digestlab.methods.links says."""
    found = links(papers, {paper: (m["experiment"], m["methods"])
                           for paper, m in measured.items()})
    views = []
    for paper, result in measured.items():
        by_id = {m["id"]: m for m in result["methods"]}
        reference = by_id.get(result["reference"])
        for method in result["methods"]:
            mine = [link for link in found
                    if link.measured_in == paper and link.method == method["id"]]
            views.append(MethodView(
                method=method, measured_in=papers[paper], scale=result["scale"],
                reference=reference if reference is not method else None,
                is_reference=reference is method,
                credited_to=[papers[link.entry] for link in mine],
                named_by={link.entry for link in mine if link.explicit}))
    return views


@dataclass
class PaperView:
    """Everything a page says about one paper."""

    paper: Paper
    meta: dict[str, Any] | None  # resources/arxiv/<id>.json, when the entry is on arXiv
    result: dict[str, Any] | None  # results/<id>/metrics.json, when it has a reproduction
    credits: list[MethodView] = field(default_factory=list)  # its methods measured elsewhere
    measures: list[MethodView] = field(default_factory=list)  # what its reproduction measured

    @property
    def title(self) -> str:
        return self.meta["title"] if self.meta else self.paper.title

    @property
    def authors(self) -> list[str]:
        return self.meta["authors"] if self.meta else list(self.paper.authors)

    @property
    def online(self) -> bool:
        return bool(self.meta) and self.meta["origin"] == "arxiv"

    def tag_labels(self, tags: dict[str, dict[str, str]], lang: str) -> list[str]:
        """The entry's tags as labels of `lang`."""
        return [tags[tag][lang] for tag in self.paper.tags]

    def links(self) -> list[tuple[str, str]]:
        """(label, URL) pairs: the paper itself, its PDF, then the entry's own links."""
        links = [("arXiv" if self.paper.arxiv_id else "web", self.paper.url)]
        if self.meta and self.meta.get("pdf_url"):
            links.append(("PDF", self.meta["pdf_url"]))
        return links + list(self.paper.links.items())

    def related(self, papers: dict[str, Paper], metadata: dict[str, dict[str, Any]]
                ) -> list[tuple[str, str | None, str]]:
        """(title, arXiv id, target) for each related work: an entry's page when the digest has
        it, arXiv otherwise, titled from `metadata` (bare arXiv id -> fetched metadata) when the
        fetch had one."""
        related = []
        for ref, entry in resolve_related(self.paper, papers):
            if entry is not None:
                related.append((entry.title, None, f"{entry.id}.md"))
            else:
                title = (metadata.get(bare_arxiv_id(ref)) or {}).get("title")
                related.append((title, ref, arxiv_abs_url(ref)))
        return related

    @property
    def findings(self) -> list[Claim]:
        """The result's claims (checks of the implementation left out): those of this paper,
        and those of other papers whose methods the reproduction measured."""
        claims = self.result["claims"] if self.result else []
        return [c for c in claims if c.kind == "finding"]

    @property
    def credited_claims(self) -> list[Claim]:
        """This paper's claims decided in other entries' reproductions (an entry that only
        names a method in `measured_as` is not its paper, and counts none)."""
        return [c for credit in self.credits if self.paper.id not in credit.named_by
                for c in credit.method["decided"] if c.kind == "finding"]

    def verdict_counts(self) -> dict[str, int]:
        """Verdicts of the claims this entry counts: those its reproduction decided and those of
        its paper decided elsewhere."""
        claims = self.findings + self.credited_claims
        return {v: sum(c.verdict == v for c in claims) for v in VERDICTS}

    def bibtex(self) -> str:
        """A BibTeX entry: an arXiv e-print, or the entry's own address."""
        meta = self.meta or {}
        year = (meta.get("published") or self.paper.published.isoformat())[:4]
        first = _ascii_word(self.authors[0].split()[-1]) if self.authors else "anon"
        word = next((_ascii_word(w) for w in self.title.split() if len(_ascii_word(w)) > 3), "")
        arxiv_id = self.paper.arxiv_id
        fields = {
            "title": "{" + _bibtex_escape(self.title) + "}",
            "author": " and ".join(_bibtex_escape(a) for a in self.authors),
            "year": year,
            "eprint": bare_arxiv_id(arxiv_id) if arxiv_id else "",
            "archivePrefix": "arXiv" if arxiv_id else "",
            "primaryClass": meta.get("primary_category") or "",
            "url": arxiv_abs_url(arxiv_id) if arxiv_id else self.paper.url,
        }
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items() if v)
        return f"@misc{{{first}{year}{word},\n{body}\n}}"


def _ascii_word(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _bibtex_escape(text: str) -> str:
    return re.sub(r"([{}&%$#_])", r"\\\1", text)


def first_paragraph(markdown: str) -> str:
    """The first paragraph of a note as plain text, for the home page's cards (their CSS shows
    the first lines) and the feed: its Markdown rendered, sanitized, and only the text kept."""
    return note_text(markdown.strip().split("\n\n", 1)[0])


def digest_order(view: PaperView) -> tuple:
    """Newest digest first; within a digest, its own order (`digest_position`), then the entries
    without one, by title."""
    paper = view.paper
    return (-paper.digest_date.toordinal(), paper.digest_position is None,
            paper.digest_position or 0, paper.title.casefold())


class StaleResult(ValueError):
    """A metrics.json written by code whose claims records this code cannot read."""


def read_claims_json(path: str | Path) -> dict[str, Any]:
    """A JSON file holding claims records (metrics.json, methods.json), refused when they are of
    another schema than this code reads."""
    data = read_json(path)
    schema = data.get("claims_schema", 1)
    if schema != SCHEMA_VERSION:
        raise StaleResult(f"{path}: its claims are of schema {schema} and this code reads "
                          f"{SCHEMA_VERSION}; rerun the reproduction (snakemake --cores all "
                          f"--forcerun reproduce)")
    return data


def read_result(metrics: str | Path) -> dict[str, Any]:
    """A result with its claims as typed records (digestlab.claims.Claim)."""
    result = read_claims_json(metrics)
    result["claims"] = [Claim.model_validate(c) for c in result["claims"]]
    return result


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A paper's metadata (resources/arxiv/<id>.json) with its text made plain: arXiv's title,
    authors and abstract may hold what no page, front matter or feed can carry."""
    meta = read_json(path)
    for key in ("title", "abstract"):
        if isinstance(meta.get(key), str):
            meta[key] = plain_text(meta[key], one_line=key == "title")
    meta["authors"] = [plain_text(str(a)) for a in meta.get("authors") or []]
    return meta


def load_view(entry: str | Path, arxiv: str | Path | None, metrics: str | Path | None) -> PaperView:
    """Read one paper's entry, metadata and result."""
    return PaperView(
        paper=read_paper(entry),
        meta=read_metadata(arxiv) if arxiv else None,
        result=read_result(metrics) if metrics else None,
    )


def render(template: str, lang: str, **context: Any) -> str:
    """Render one template in one language."""
    return environment(lang).get_template(template).render(**context)


def with_methods(views: list[PaperView], papers: dict[str, Paper],
                 methods: dict[str, str | Path]) -> list[MethodView]:
    """Attach to each view the methods credited to its paper and those its reproduction
    measured (`methods`: measuring entry id -> its methods.json); return every method."""
    measured = method_views({paper: read_methods(path) for paper, path in methods.items()},
                            papers)
    for view in views:
        view.credits = [m for m in measured if view.paper in m.credited_to]
        view.measures = [m for m in measured if m.measured_in.id == view.paper.id]
    return measured


def render_paper_pages(
    entry: str | Path,
    tags: str | Path,
    arxiv: str | Path | None,
    metrics: str | Path | None,
    out: dict[str, str | Path],
    related_entries: list[str | Path] = (),
    related_arxiv: list[str | Path] = (),
    methods: list[str | Path] = (),
    linked_entries: list[str | Path] = (),
) -> None:
    """Write one paper's page in every language; `related_entries` name the related entries,
    `related_arxiv` the fetched metadata of related papers the digest does not hold, `methods`
    the methods.json of the results that measured this paper's methods or that are its own,
    `linked_entries` the entries at the other end of those methods' credits."""
    view = load_view(entry, arxiv, metrics)
    vocabulary = load_tags(tags)
    papers = {Path(p).stem: read_paper(p) for p in related_entries}
    linked = {Path(p).stem: read_paper(p) for p in linked_entries} | {view.paper.id: view.paper}
    with_methods([view], linked, {Path(m).parent.name: m for m in methods})
    metadata = {bare_arxiv_id(m["arxiv_id"]): m for m in map(read_metadata, related_arxiv)}
    for lang in LANGUAGES:
        text = render("paper.md.j2", lang, view=view, tags=vocabulary, papers=papers,
                      related_metadata=metadata)
        write_text_atomic(out[lang], text)


def render_site_pages(
    entries: list[str | Path],
    tags: str | Path,
    arxiv: dict[str, str | Path],
    metrics: dict[str, str | Path],
    out_dir: str | Path,
    methods: dict[str, str | Path] | None = None,
) -> None:
    """Write the home, results, methods and tags pages and the Atom feed of every language,
    and the whole catalogue in BibTeX. `arxiv`, `metrics` and `methods` map paper ids to their
    metadata, results and methods.json files."""
    views = []
    for entry in entries:
        paper_id = Path(entry).stem
        views.append(load_view(entry, arxiv.get(paper_id), metrics.get(paper_id)))
    views.sort(key=digest_order)
    measured = with_methods(views, {v.paper.id: v.paper for v in views}, methods or {})
    by_date = [(day, list(group)) for day, group in groupby(views, lambda v: v.paper.digest_date)]
    vocabulary = load_tags(tags)
    # every claim in every result, for the dashboard
    claims = [dashboard_row(v, c) for v in views for c in v.findings]
    claim_tags = {tag: n for tag in vocabulary if (n := sum(tag in t for *_, t in claims))}
    # every method measured anywhere, for the methods index, its reproduction's order kept
    order = {v.paper.id: i for i, v in enumerate(views)}
    methods_index = sorted((m for m in measured if m.measured),
                           key=lambda m: order[m.measured_in.id])
    method_tags = {tag: n for tag in vocabulary
                   if (n := sum(tag in m.tags() for m in methods_index))}
    tag_counts = {tag: n for tag in vocabulary if (n := sum(tag in v.paper.tags for v in views))}
    filter_ids = ["tag-all", *(f"tag-{t}" for t in claim_tags), "verdict-all",
                  *(f"verdict-{v}" for v in VERDICTS)]
    method_filter_ids = ["tag-all", *(f"tag-{t}" for t in method_tags)]
    for lang in LANGUAGES:
        context = dict(
            views=views, by_date=by_date, tags=vocabulary, first_paragraph=first_paragraph,
            claims=claims, claim_tags=claim_tags, filter_ids=filter_ids, tag_counts=tag_counts,
            methods=methods_index, method_tags=method_tags, method_filter_ids=method_filter_ids,
        )
        for page in PAGES:
            text = render(f"{page}.md.j2", lang, **context)
            write_text_atomic(Path(out_dir) / lang / f"{page}.md", text)
        write_bytes_atomic(Path(out_dir) / lang / FEED, atom_feed(views, vocabulary, lang))
    # the filters of the results and methods tables: a <style> in the page would not pass the
    # site's allow-list
    write_text_atomic(Path(out_dir) / FILTERS_CSS, render(
        "filters.css.j2", LANGUAGES[0], claim_tags=claim_tags | method_tags,
        filter_ids=list(dict.fromkeys(filter_ids + method_filter_ids))))
    bibliography = "\n".join(v.bibtex() for v in sorted(views, key=lambda v: v.paper.id))
    write_text_atomic(Path(out_dir) / BIBLIOGRAPHY, bibliography)


def dashboard_row(view: PaperView, claim: Claim
                  ) -> tuple[PaperView, Claim, MethodView | None, list[str]]:
    """A claim as the dashboard lists it: the reproduction that decided it, the method measured
    there whose paper it is a claim of when that is not the reproduced paper, and the tags it
    is filtered by (both papers')."""
    credit = next((m for m in view.measures
                   if not m.own and claim.id in m.method["claims"]), None)
    return view, claim, credit, credit.tags() if credit else list(view.paper.tags)


def claim_count(view: PaperView, lang: str) -> str:
    """One sentence counting the verdicts of the claims an entry counts, or nothing when it
    counts none."""
    counts = view.verdict_counts()
    if not sum(counts.values()):
        return ""
    text = translations(lang)
    names = {"reproduced": text.gettext("Reproduced"),
             "not_reproduced": text.gettext("Not reproduced"),
             "inconclusive": text.gettext("Inconclusive"),
             "not_testable": text.gettext("Not testable")}
    parts = ", ".join(f"{names[v]} {number(n, lang)}" for v, n in counts.items() if n)
    return text.gettext("Claims decided in this digest: %(counts)s.") % {"counts": parts}


def atom_feed(views: list[PaperView], tags: dict[str, dict[str, str]], lang: str) -> bytes:
    """An Atom feed of the digest's entries in language `lang`, newest digest first. Its links
    are relative to the feed, which lies beside the language's home page."""
    feed = FeedGenerator()
    feed.id(f"tag:digestlab,2024:{lang}")
    feed.title(translations(lang).gettext("digestlab: paper notes with reproductions"))
    feed.language(lang)
    feed.link(href=FEED, rel="self")
    feed.link(href="./", rel="alternate")
    days = [dt.datetime.combine(v.paper.digest_date, dt.time(), dt.UTC) for v in views]
    feed.updated(max(days, default=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)))
    for view, day in zip(views, days, strict=True):
        entry = feed.add_entry(order="append")
        entry.id(f"tag:digestlab,{view.paper.digest_date.isoformat()}:{view.paper.id}")
        entry.title(view.title)
        entry.link(href=f"papers/{view.paper.id}/")
        entry.published(day)
        entry.updated(day)
        for author in view.authors[:20]:
            entry.author(name=author)
        for tag in view.paper.tags:
            entry.category(term=tag, label=tags[tag][lang])
        summary = first_paragraph(getattr(view.paper.note, lang))
        if decided := claim_count(view, lang):
            summary += " " + decided
        entry.summary(summary)
    return feed.atom_str(pretty=True)
