"""The reader's site, built from every entry under papers/ with smoke-scale results: its pages'
structure and links, and (marked `browser`) what a reader does with it in Debian's headless
Chromium, driven by Playwright. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, open_page, serve, site_skeleton, visit

from digestlab.experiments import DEFAULT_PACKAGES
from digestlab.fetch import offline_metadata
from digestlab.figures import draw_figures
from digestlab.io import read_json, write_json_atomic
from digestlab.methods import credit, declared_links
from digestlab.papers import LANGUAGES, read_paper, resolve_related
from digestlab.render import render_paper_pages, render_site_pages
from digestlab.site import broken_links, build_site

TAGS = ROOT / "config" / "tags.yaml"
ARTIFACTS = ROOT / "test-artifacts"
RELATED_TITLE = "Efficient Streaming Language Models with Attention Sinks"
# the digest's entries, and entries for papers whose methods its reproductions measure
CREDITED = sorted((ROOT / "tests" / "entries").glob("*.yaml"))
ENTRIES = sorted((ROOT / "papers").glob("*.yaml")) + CREDITED


@pytest.fixture(scope="session")
def built_site(smoke_runs, tmp_path_factory) -> Path:
    """The site of every entry under papers/ and of the three entries of tests/entries (papers
    whose methods the reproductions measure as baselines), with the smoke-scale result of each
    reproduction, as the workflow's render stage builds it (arXiv offline, but one related
    paper's title fetched)."""
    root = site_skeleton(tmp_path_factory.mktemp("site"))
    papers = {path.stem: read_paper(path) for path in ENTRIES}
    path_of = {path.stem: path for path in ENTRIES}
    related = root / "related.json"
    related.write_text(json.dumps({"origin": "arxiv", "arxiv_id": "2309.17453",
                                   "title": RELATED_TITLE}))
    arxiv, metrics, methods = {}, {}, {}
    for path in ENTRIES:
        paper = papers[path.stem]
        if paper.arxiv_id:
            arxiv[paper.id] = root / "arxiv" / f"{paper.id}.json"
            arxiv[paper.id].parent.mkdir(exist_ok=True)
            arxiv[paper.id].write_text(json.dumps(
                offline_metadata(paper.fallback_metadata(), "the tests are offline")))
        if paper.reproduction:
            result, _ = smoke_runs(paper.reproduction.experiment)
            metrics[paper.id] = result / "a" / "metrics.json"
            methods[paper.id] = root / "methods" / f"{paper.id}" / "methods.json"
            methods[paper.id].parent.mkdir(parents=True)
            write_json_atomic(methods[paper.id],
                              credit(read_json(metrics[paper.id]), DEFAULT_PACKAGES))
            draw_figures(paper.reproduction.experiment, result / "a" / "figures",
                         root / "notes" / "assets" / "figures" / paper.id)
    links = declared_links(papers, DEFAULT_PACKAGES)
    for path in ENTRIES:
        paper = papers[path.stem]
        measuring = {link.measured_in for link in links if link.entry == paper.id}
        linked = measuring | {link.entry for link in links if link.measured_in == paper.id}
        render_paper_pages(
            path, TAGS, arxiv.get(paper.id), metrics.get(paper.id),
            {lang: root / "notes" / lang / "papers" / f"{paper.id}.md" for lang in LANGUAGES},
            related_entries=[path_of[e.id] for _, e in resolve_related(paper, papers) if e],
            related_arxiv=[related] if "2309.17453" in paper.related else [],
            methods=[methods[p] for p in sorted(measuring | ({paper.id} & set(methods)))],
            linked_entries=[p for p in ENTRIES if p.stem in linked])
    render_site_pages(ENTRIES, TAGS, arxiv, metrics, root / "notes", methods=methods)
    build_site(root / "mkdocs.yml", root / "notes", root / "site", keep_papers=list(papers),
               tags=TAGS)
    return root / "site"


def test_every_link_of_the_built_site_leads_somewhere(built_site):
    # build_site refuses a site with a broken link; this checks the check saw every page
    assert len(list(built_site.rglob("*.html"))) > 20
    assert broken_links(built_site) == []


def test_the_link_check_finds_missing_files_anchors_and_links_out_of_the_site(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text('<h2 id="x">x</h2>')
    (tmp_path / "index.html").write_text(
        '<a href="a/">ok</a> <a href="a/#x">ok</a> <a href="https://example.org/">out</a>'
        '<a href="/a/">ok</a> <a href="a/#y">no anchor</a> <img src="b.svg">'
        '<a href="/other/a/">outside</a> <a href="../up/">above</a>')
    assert broken_links(tmp_path) == [
        "index.html: a/#y (no such anchor)", "index.html: b.svg",
        "index.html: /other/a/", "index.html: ../up/"]
    assert "index.html: /a/ (outside the site)" in broken_links(tmp_path, base_path="/sub/")


def test_home_page_has_one_card_per_entry_in_digest_order_and_no_raw_markup(built_site):
    order = [p.stem for p in sorted((ROOT / "papers").glob("*.yaml"),
                                    key=lambda p: read_paper(p).digest_position)]
    # entries without a place in their digest follow, by title
    order += [p.stem for p in sorted(CREDITED, key=lambda p: read_paper(p).title.casefold())]
    for home in (built_site / "index.html", built_site / "en" / "index.html"):
        html = home.read_text(encoding="utf-8")
        cards = html[html.index('<div class="grid cards">'):]
        cards = cards[:cards.index("</div>")]
        assert re.findall(r'<li>\s*<p><strong><a href="papers/([^/"]+)/"', cards) == order
        assert "&lt;span" not in html and "{ .dl-summary }" not in html and "<pre" not in cards
        assert html.count('class="dl-summary"') == len(order)
        assert 'href="feed.xml"' in html and "digestlab.bib" in html


def test_feeds_and_bibliography_list_every_entry(built_site):
    entries = len(ENTRIES)
    for lang, feed in (("ko", built_site / "feed.xml"), ("en", built_site / "en" / "feed.xml")):
        xml = feed.read_text(encoding="utf-8")
        assert xml.count("<entry>") == entries and f'xml:lang="{lang}"' in xml
        assert '<link href="papers/sirllm/"/>' in xml
    bib = (built_site / "assets" / "digestlab.bib").read_text(encoding="utf-8")
    assert bib.count("@misc{") == entries and "eprint = {2405.12981}" in bib


def test_paper_page_shows_related_titles_figures_and_the_command_that_reruns_it(built_site):
    for page, caption in ((built_site / "papers" / "sirllm" / "index.html", "정책별 캐시"),
                          (built_site / "en" / "papers" / "sirllm" / "index.html",
                           "Grocery recall against the cache size")):
        html = page.read_text(encoding="utf-8")
        assert RELATED_TITLE in html and "arXiv:2309.17453" in html
        text = re.sub(r"<[^>]+>", "", html)  # the command is highlighted, token by token
        assert "snakemake --cores all results/sirllm/metrics.json" in text
        assert html.count("<figcaption>") == 4 and caption in html
        assert all(alt for alt in re.findall(r'<img alt="([^"]*)" src="[^"]*figures/', html))
        assert "<summary>" in html and "BibTeX" in html  # the citation, folded


# --- in a browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(built_site):
    """The built site over HTTP on loopback, as a reader's browser gets it."""
    with serve(built_site) as url:
        yield url


@pytest.mark.browser
def test_reader_switches_language_and_back(browser, server):
    page = open_page(browser)
    visit(page, f"{server}/papers/sirllm/")
    assert page.locator("html").get_attribute("lang") == "ko"
    page.hover(".md-header__option .md-select")
    page.click("a.md-select__link[hreflang=en]")
    page.wait_for_load_state("networkidle")
    assert page.url == f"{server}/en/papers/sirllm/"
    assert page.locator("html").get_attribute("lang") == "en"
    page.hover(".md-header__option .md-select")
    page.click("a.md-select__link[hreflang=ko]")
    page.wait_for_load_state("networkidle")
    assert page.url == f"{server}/papers/sirllm/"
    assert page.problems == []


@pytest.mark.browser
def test_reader_goes_from_home_to_a_tag_to_a_paper_with_its_claims_and_figures(browser, server):
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_page(browser)
    visit(page, f"{server}/")
    page.screenshot(path=ARTIFACTS / "home-ko.png", full_page=True)
    page.click(".md-tabs a:text-is('태그')")
    page.wait_for_load_state("networkidle")
    page.click("a.dl-tag:has-text('효율 ·')")
    assert page.url.endswith("#tag:효율") or page.url.endswith("#tag:%ED%9A%A8%EC%9C%A8")
    page.click("article a:text-is('SirLLM: Streaming Infinite Retentive LLM')")
    page.wait_for_load_state("networkidle")
    assert page.url == f"{server}/papers/sirllm/"
    claims = page.locator("p.dl-claim")
    assert claims.count() == 3 and claims.locator(".dl-verdict").count() == 3
    figures = page.locator("figure.dl-figure img")
    assert figures.count() == 4
    for i in range(figures.count()):
        figure = figures.nth(i)
        assert figure.get_attribute("alt") and figure.get_attribute("src").endswith(".ko.svg")
        assert figure.evaluate("img => img.complete && img.naturalWidth > 0")
    page.screenshot(path=ARTIFACTS / "paper-ko.png", full_page=True)
    visit(page, f"{server}/en/papers/sirllm/")
    page.screenshot(path=ARTIFACTS / "paper-en.png", full_page=True)
    assert page.problems == []


def search(page, query: str) -> list[str]:
    """The addresses of the results a search box gives for `query`."""
    page.click("input.md-search__input")
    page.fill("input.md-search__input", query)
    page.keyboard.press("End")  # the theme searches on key events
    page.wait_for_selector(".md-search-result__item", timeout=10_000)
    return page.locator(".md-search-result__item > a").evaluate_all(
        "links => links.map(a => a.href.split(/[?#]/)[0])")  # less the highlight query


@pytest.mark.browser
def test_search_finds_a_korean_stem_inside_a_sentence_and_english_words_on_english_pages(
        browser, server):
    note = read_paper(ROOT / "papers" / "sirllm.yaml").note
    assert "캐시에" in note.ko and "entropy" in note.en  # a stem with its particle; a word
    page = open_page(browser)
    visit(page, f"{server}/")
    found = search(page, "캐시")
    assert f"{server}/papers/sirllm/" in found
    assert not any("/en/" in url for url in found)
    visit(page, f"{server}/en/")
    found = search(page, "entropy")
    assert f"{server}/en/papers/sirllm/" in found
    assert all(url.startswith(f"{server}/en/") for url in found)
    assert page.problems == []


@pytest.mark.browser
def test_pages_read_and_the_dashboard_filters_without_javascript(browser, server):
    page = open_page(browser, javascript=False)
    visit(page, f"{server}/en/results/")
    rows = page.locator(".dl-dashboard tbody tr")
    total = rows.count()
    assert total > 5

    def shown() -> list[str]:
        return [rows.nth(i).get_attribute("class") for i in range(total)
                if rows.nth(i).is_visible()]

    assert len(shown()) == total
    page.click("label[for=dl-verdict-not_reproduced]")
    assert shown() and all("dl-verdict-not_reproduced" in c for c in shown())
    page.click("label[for=dl-tag-efficiency]")
    assert all("dl-tag-efficiency" in c and "dl-verdict-not_reproduced" in c for c in shown())
    page.click("label[for=dl-verdict-all]")
    page.click("label[for=dl-tag-all]")
    assert len(shown()) == total
    # a claim whose premise is absent has a filter of its own, and says which premise
    page.click("label[for=dl-verdict-not_testable]")
    untestable = [rows.nth(i) for i in range(total) if rows.nth(i).is_visible()]
    assert untestable and all("premise missing" in row.inner_text() for row in untestable)
    page.click("label[for=dl-verdict-all]")
    visit(page, f"{server}/papers/spo/")
    assert page.locator("p.dl-claim .dl-verdict").first.is_visible()
    assert page.locator("figure.dl-figure img").evaluate(
        "img => img.complete && img.naturalWidth > 0")
    assert page.problems == []


# papers whose methods a reproduction measures: (entry, measuring entry, method, a claim of the
# paper decided there or None)
MEASURED_ELSEWHERE = (
    ("streaming-llm", "sirllm", "StreamingLLM", "sinks-keep-perplexity"),
    ("deepseek-v2", "cross-layer-attention", "MLA", None),
    ("safe-rlhf", "spo", "Safe RLHF (Lagrangian)", None),
)


@pytest.mark.browser
@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_paper_measured_in_another_reproduction_shows_its_rows_and_claims_and_links_back(
        browser, server, lang):
    page = open_page(browser, javascript=False)  # the section is the page's own HTML
    root = f"{server}/" if lang == "ko" else f"{server}/{lang}/"
    heading = {"ko": "이 다이제스트에서 측정한 결과", "en": "Measured in this digest"}[lang]
    for entry, measuring, method, claim in MEASURED_ELSEWHERE:
        page.goto(f"{root}papers/{entry}/")  # "load": without JavaScript nothing comes later
        section = page.locator("#measured-in-this-digest")
        assert section.is_visible() and section.inner_text().startswith(heading)
        rows = page.locator("article table tbody tr")
        assert rows.count() >= 1
        first = rows.first.locator("td")
        assert re.search(r"\d", first.nth(2).inner_text())  # a measured number
        claims = page.locator("p.dl-claim")
        assert claims.count() == (1 if claim else 0)
        if claim:
            assert claims.first.locator(".dl-verdict").is_visible()
        # the measuring page, at its list of methods, links back to this one
        page.click(f"article h3 a[href$='{measuring}/#methods-measured']")
        page.wait_for_load_state()
        assert page.url == f"{root}papers/{measuring}/#methods-measured"
        back = page.locator(f"#methods-measured ~ ul a[href$='{entry}/#measured-in-this-digest']")
        assert back.count() == 1 and method in back.locator("xpath=ancestor::li").inner_text()
    page.screenshot(path=ARTIFACTS / f"measured-{lang}.png", full_page=True)
    assert page.problems == []


@pytest.mark.browser
@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_methods_index_lists_every_measured_method_and_filters_by_tag(browser, server, lang):
    page = open_page(browser, javascript=False)
    visit(page, f"{server}/methods/" if lang == "ko" else f"{server}/{lang}/methods/")
    rows = page.locator(".dl-dashboard tbody tr")
    names = [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())]
    for entry, measuring, method, _ in MEASURED_ELSEWHERE:
        row = rows.nth(next(i for i, name in enumerate(names) if name.startswith(method)))
        assert row.locator(f"a[href='../papers/{entry}/']").count() == 1
        assert row.locator(f"a[href='../papers/{measuring}/#methods-measured']").count() == 1
    page.click("label[for=dl-tag-alignment]")
    shown = [i for i in range(rows.count()) if rows.nth(i).is_visible()]
    assert shown and all("dl-tag-alignment" in rows.nth(i).get_attribute("class") for i in shown)
    assert any(names[i].startswith("Safe RLHF") for i in shown)
    assert not any(names[i].startswith("StreamingLLM") for i in shown)
    page.screenshot(path=ARTIFACTS / f"methods-{lang}.png", full_page=True)
    assert page.problems == []


def test_the_dashboard_counts_a_claim_under_its_paper_and_the_reproduction_that_decided_it(
        built_site):
    for results in (built_site / "results" / "index.html",
                    built_site / "en" / "results" / "index.html"):
        html = results.read_text(encoding="utf-8")
        row = next(r for r in html.split("<tr ") if "sirllm" in r and "streaming-llm" in r)
        assert "dl-tag-llm" in row and "dl-tag-efficiency" in row  # both papers' tags
    feed = (built_site / "en" / "feed.xml").read_text(encoding="utf-8")
    streaming = feed[feed.index("<title>Efficient Streaming"):]
    assert "Claims decided in this digest:" in streaming[:streaming.index("</entry>")]
