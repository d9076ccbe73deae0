from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import ROOT, entry, write_entry

from digestlab.claims import (
    SCHEMA_VERSION,
    ClaimSpec,
    ComparisonSpec,
    PremiseSpec,
    TheirNumber,
    holm,
    our_bound,
    paper_bound,
)
from digestlab.experiments import ExperimentError
from digestlab.figures import draw_figures
from digestlab.i18n import translations
from digestlab.render import (
    StaleResult,
    number,
    render_paper_pages,
    render_site_pages,
    yaml_scalar,
)
from digestlab.site import SiteError, build_site

TAGS = ROOT / "config" / "tags.yaml"
PACKAGES = ("digestlab.experiments", "experiments_for_tests")


SMALL = ClaimSpec(
    id="c1", text={"ko": "평균이 작다", "en": "The mean is small"},
    comparisons={"r": ComparisonSpec(statistic="a | b", direction="<", space="log",
                                     bound=paper_bound(1.0, "§3.2, Table 1"))},
    theirs=TheirNumber(value=0.985, where="Table 1"))
SINK = ClaimSpec(
    id="c2", text={"ko": "싱크가 perplexity를 지킨다", "en": "Sinks keep perplexity"},
    comparisons={"near": ComparisonSpec(
        statistic="ppl ratio", direction="<", space="log",
        bound=our_bound(1.1, ko="10% 안이면 가깝다고 봅니다.", en="Within 10% counts as near."))},
    premises={"sink": PremiseSpec(
        text={"ko": "첫 토큰에 주의가 몰리는 헤드", "en": "a head that attends to the first token"},
        statistic={"ko": "첫 토큰 주의 / 균등", "en": "attention / uniform"}, direction=">=",
        bound=our_bound(2.0, ko="균등의 두 배입니다.", en="Twice uniform."))})
CHECK = ClaimSpec(
    id="c3", kind="property", text={"ko": "바이트가 절반이다", "en": "Bytes halve"},
    comparisons={"bytes": ComparisonSpec(statistic="bytes ratio", direction="=", rule="exact",
                                         bound=paper_bound(0.5, "§3"))})
CLAIMS = [
    SMALL.decide({"r": [1.02, 1.03, 1.025]}, "training seeds"),
    SINK.decide({"near": [1.01, 1.0, 1.02]}, "streams", {"sink": 0.88}, base_models=1),
    CHECK.decide({"bytes": 0.5}, "runs"),
]


@pytest.fixture
def paper_files(tmp_path):
    papers = tmp_path / "papers"
    papers.mkdir()
    path = write_entry(papers, entry("cla", tags=["efficiency", "llm"],
                                     reproduction={"experiment": "noisy_mean"}))
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({
        "origin": "arxiv", "title": "A <script>alert(1)</script> Title",
        "authors": ["Ada <b>L</b>", "Alex D'Amour"],
        "abstract": "Uses <img src=x onerror=alert(1)>.", "pdf_url": "https://arxiv.org/pdf/x",
        "published": "2024-05-21", "primary_category": "cs.LG",
    }))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({
        "experiment": "noisy_mean", "scale": "smoke", "device": "cpu", "seeds": [0, 1],
        "claims_schema": SCHEMA_VERSION,
        "claims": [c.model_dump(mode="json") for c in holm(CLAIMS)],
        "figures": ["f"], "reference": {}, "timing": {"wall_time_s": 1.5},
        "provenance": {"digestlab": "0.1.0", "git_commit": None, "python": "3.11"},
    }))
    return path, meta, metrics


def render_both(tmp_path, paper_files) -> dict[str, str]:
    path, meta, metrics = paper_files
    out = {lang: tmp_path / lang / "cla.md" for lang in ("ko", "en")}
    render_paper_pages(path, TAGS, meta, metrics, out)
    return {lang: p.read_text(encoding="utf-8") for lang, p in out.items()}


def test_paper_page_in_both_languages(tmp_path, paper_files):
    pages = render_both(tmp_path, paper_files)
    assert "한국어 노트입니다." in pages["ko"] and "An English note." not in pages["ko"]
    assert "An English note." in pages["en"] and "한국어 노트입니다." not in pages["en"]
    assert "재현 안 됨" in pages["ko"] and "Not reproduced" in pages["en"]
    assert "평균이 작다" in pages["ko"] and "The mean is small" in pages["en"]
    assert "2024년 5월 21일" in pages["ko"] and "May 21, 2024" in pages["en"]


def front_matter(page: str) -> dict:
    return yaml.safe_load(page.split("---\n")[1])


def test_tags_in_front_matter_use_each_languages_labels(tmp_path, paper_files):
    pages = render_both(tmp_path, paper_files)
    assert front_matter(pages["ko"])["tags"] == ["효율", "LLM"]
    assert front_matter(pages["en"])["tags"] == ["Efficiency", "LLM"]


def test_front_matter_is_ascii_so_no_character_ends_it_early():
    # YAML breaks lines at U+2028 and U+2029 too: escaped, they stay inside the value
    value = "A title\u2028--- [x](https://example.org){ .md-button }\u2029é\x85"
    text = yaml_scalar(value)
    assert text.isascii() and yaml.safe_load(f"title: {text}\n") == {"title": value}


def test_text_from_arxiv_is_escaped(tmp_path, paper_files):
    # The BibTeX block is code, which Markdown shows as it is; everything else must be escaped.
    page = re.sub(r"```bibtex.*?```", "", render_both(tmp_path, paper_files)["en"], flags=re.S)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<img" not in page and "&lt;img" in page
    assert "<b>" not in page and "Ada &lt;b&gt;L&lt;/b&gt;" in page
    assert "<script>alert(1)</script>" not in page
    # MkDocs puts the front-matter title into the page unescaped, so it is escaped here.
    assert 'title: "A &lt;script&gt;alert(1)&lt;/script&gt; Title"' in page


def test_claim_text_is_escaped_for_markdown(tmp_path, paper_files):
    page = render_both(tmp_path, paper_files)["en"]
    line = next(line for line in page.splitlines() if line.startswith("- a \\| b"))
    assert "a \\| b &lt; 1" in line


def test_each_claim_shows_the_papers_number_ours_the_interval_the_bounds_source_and_units(
        tmp_path, paper_files):
    pages = render_both(tmp_path, paper_files)
    en = pages["en"][pages["en"].index("The mean is small"):]
    block = en[:en.index("\n\n", en.index("- "))]
    assert "The paper: 0.985 (Table 1)" in block and "1.025 (90% interval [1.017, 1.033])" in block
    assert "(paper, §3\\.2, Table 1)" in block and "Replicated over: 3 training seeds" in block
    assert "dl-verdict--not_reproduced\">Not reproduced" in pages["en"]
    ko = pages["ko"][pages["ko"].index("평균이 작다"):]
    block = ko[:ko.index("\n\n", ko.index("- "))]
    assert "90% 구간" in block and "논문:" in block and "학습 시드 3개" in block
    # our bounds say why, in the page's language
    assert "Within 10% counts as near" in pages["en"] and "10% 안이면" in pages["ko"]
    assert "Within 10%" not in pages["ko"]


def test_a_claim_without_its_premise_reads_not_testable_with_the_premises_number(
        tmp_path, paper_files):
    pages = render_both(tmp_path, paper_files)
    assert "Not testable" in pages["en"] and "판정 불가" in pages["ko"]
    line = next(line for line in pages["en"].splitlines() if "not testable here" in line)
    assert "measured 0.88" in line and "&gt;= 2" in line
    assert "3 streams of one model" in pages["en"]
    # a statistic in words is shown in the page's language
    assert "첫 토큰 주의 / 균등" in pages["ko"] and "attention / uniform" not in pages["ko"]


def test_checks_of_the_implementation_are_shown_apart_and_never_counted(tmp_path, paper_files):
    page = render_both(tmp_path, paper_files)["en"]
    assert "Checks of the implementation" in page
    line = next(line for line in page.splitlines() if "Bytes halve" in line)
    assert "Holds" in line and "Reproduced" not in line


def test_holm_correction_is_stated_on_the_page(tmp_path, paper_files):
    page = render_both(tmp_path, paper_files)["en"]
    assert "Under Holm's correction" in page and "no verdict would change" in page


def test_a_result_of_an_older_claims_schema_is_refused_in_one_line(tmp_path, paper_files):
    path, meta, metrics = paper_files
    old = json.loads(metrics.read_text()) | {"claims_schema": 1}
    metrics.write_text(json.dumps(old))
    with pytest.raises(StaleResult, match="schema 1 .* rerun the reproduction"):
        render_both(tmp_path, paper_files)


def test_figures_and_bibtex_are_rendered(tmp_path, paper_files):
    pages = render_both(tmp_path, paper_files)
    assert "![f](../../assets/figures/cla/f.ko.svg)" in pages["ko"]
    page = pages["en"]
    assert "![f](../../assets/figures/cla/f.en.svg)\n<figcaption>f</figcaption>" in page
    assert '??? quote "Cite (BibTeX)"\n\n    ```bibtex\n    @misc{' in page  # folded, near the top
    assert "eprint = {2405.12981}" in page
    assert "Alex D'Amour" in page.split("```bibtex")[1]  # code is shown as it is, not escaped


def test_site_pages_list_the_digest_newest_first(tmp_path, paper_files):
    path, meta, metrics = paper_files
    write_entry(path.parent, entry("older", source={"url": "https://example.org/a"},
                                   title="Older paper", digest_date="2024-01-02"))
    (tmp_path / "res" / "cla").mkdir(parents=True)
    (tmp_path / "res" / "cla" / "metrics.json").write_text(metrics.read_text())
    (tmp_path / "arxiv").mkdir()
    (tmp_path / "arxiv" / "2405.12981.json").write_text(meta.read_text())
    render_site_pages(sorted(path.parent.glob("*.yaml")), TAGS,
                      {"cla": tmp_path / "arxiv" / "2405.12981.json"},
                      {"cla": tmp_path / "res" / "cla" / "metrics.json"}, tmp_path / "notes")
    home = (tmp_path / "notes" / "en" / "index.md").read_text()
    assert home.index("May 22, 2024") < home.index("January 2, 2024")
    assert "(papers/older.md)" in home
    ko_results = (tmp_path / "notes" / "ko" / "results.md").read_text()
    assert "# 재현 결과" in ko_results and "평균이 작다" in ko_results
    assert "<!-- material/tags -->" in (tmp_path / "notes" / "en" / "tags.md").read_text()
    for lang in ("ko", "en"):
        # a card's lines are indented under its list item; one at the margin ends the grid
        home = (tmp_path / "notes" / lang / "index.md").read_text()
        cards = home[home.index('<div class="grid cards"'):home.index("</div>")]
        lines = [line for line in cards.splitlines()[1:] if line.strip()]
        assert all(line.startswith(("-   ", "    ")) for line in lines), lines
        assert sum(line.startswith("    <span class=\"dl-count") for line in lines) == 1


def test_every_ui_string_is_translated_into_korean():
    from babel.messages.pofile import read_po

    with open(ROOT / "digestlab" / "locale" / "messages.pot", "rb") as f:
        template = [m.id for m in read_po(f) if m.id]
    ko = translations("ko")
    untranslated = [m for m in template if ko.gettext(m) == m]
    assert template and untranslated == []


def test_every_korean_string_takes_the_same_placeholders_as_its_english_one():
    # templates format every string with %, so there a stray % or a lost %(name)s breaks the
    # page; figure labels are not formatted
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    options = {"templates/**.j2": {"extensions": "jinja2.ext.i18n"}}
    in_templates = {msg[2] for msg in extract_from_dir(
        ROOT / "digestlab", [("templates/**.j2", "jinja2")], options_map=options)}
    with open(ROOT / "digestlab" / "locale" / "ko" / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = [m for m in read_po(f) if m.id in in_templates and m.string]
    assert catalog
    placeholder = re.compile(r"%\(\w+\)s")
    for m in catalog:
        assert sorted(set(placeholder.findall(m.string))) == sorted(
            set(placeholder.findall(m.id))), m.id
        m.string % {name: 1 for name in re.findall(r"%\((\w+)\)s", m.id)}  # a stray % raises


def test_templates_and_figures_use_only_strings_in_the_catalog_template():
    from babel.messages.extract import extract_from_dir

    method_map = [("templates/**.j2", "jinja2"), ("experiments/*/figures.py", "python"),
                  ("render.py", "python")]
    options = {"templates/**.j2": {"extensions": "jinja2.ext.i18n"}}
    found = {msg[2] for msg in extract_from_dir(ROOT / "digestlab", method_map,
                                                 options_map=options)}
    from babel.messages.pofile import read_po

    with open(ROOT / "digestlab" / "locale" / "messages.pot", "rb") as f:
        template = {m.id for m in read_po(f) if m.id}
    assert found == template, "run the pybabel extract command in digestlab/locale/babel.cfg"


@pytest.mark.parametrize(("value", "lang", "shown"), [
    (1234567, "en", "1,234,567"), (0.98765, "en", "0.9877"), (13.6, "ko", "13.6"),
    (float("nan"), "en", "–"), (2.5e-7, "en", "2.500e-07"),
])
def test_numbers_are_shown_with_four_significant_digits(value, lang, shown):
    assert number(value, lang) == shown


def test_home_page_cards_show_the_first_paragraph():
    from digestlab.render import first_paragraph

    note = "First one. Second one?\nStill first.\n\nNext paragraph."
    assert first_paragraph(note) == "First one. Second one? Still first."


def test_markdown_in_outside_text_cannot_make_links_or_attributes():
    from markdown import Markdown

    from digestlab.render import markdown_text

    hostile = "Don't [click](javascript:alert(1)) { onmouseover=alert(2) } <i>x</i>"
    md = Markdown(extensions=["attr_list", "md_in_html", "tables"])
    html = md.convert(f"# {markdown_text(hostile)}")
    assert "<a" not in html and "onmouseover=" not in html.split(">", 1)[0]
    assert "<i>" not in html
    assert "[click](javascript:alert(1))" in html and "{ onmouseover=alert(2) }" in html


def test_empty_digest_still_renders_every_page(tmp_path):
    render_site_pages([], TAGS, {}, {}, tmp_path)
    assert "papers/" in (tmp_path / "en" / "index.md").read_text()
    assert "# 재현 결과" in (tmp_path / "ko" / "results.md").read_text()


def test_related_arxiv_id_of_another_entry_links_to_its_page(tmp_path):
    papers = tmp_path / "papers"
    papers.mkdir()
    here = write_entry(papers, entry("here", source={"url": "https://example.org/x"},
                                     related=["2405.12981v2", "2309.17453"]))
    there = write_entry(papers, entry("there", title="The other entry"))
    out = {lang: tmp_path / f"{lang}.md" for lang in ("ko", "en")}
    render_paper_pages(here, TAGS, None, None, out, related_entries=[there])
    page = out["en"].read_text()
    assert "- [The other entry](there.md)" in page
    assert "- [arXiv:2309.17453](https://arxiv.org/abs/2309.17453)" in page  # no title fetched
    fetched = tmp_path / "2309.17453.json"
    fetched.write_text(json.dumps({"origin": "arxiv", "arxiv_id": "2309.17453",
                                   "title": "Attention Sinks [v1]"}))
    render_paper_pages(here, TAGS, None, None, out, related_entries=[there],
                       related_arxiv=[fetched])
    page = out["ko"].read_text()
    assert ("- [Attention Sinks \\[v1\\]](https://arxiv.org/abs/2309.17453) · arXiv:2309.17453"
            in page)


def test_entries_of_one_digest_follow_its_order_then_title(tmp_path):
    papers = tmp_path / "papers"
    papers.mkdir()
    for paper_id, position, title in (("pa", 2, "A"), ("pb", None, "B"), ("pc", 1, "C"),
                                      ("pd", None, "Able")):
        fields = {"digest_position": position} if position else {}
        write_entry(papers, entry(paper_id, title=title, source={"url": "https://x.org/"},
                                  **fields))
    render_site_pages(sorted(papers.glob("*.yaml")), TAGS, {}, {}, tmp_path / "notes")
    home = (tmp_path / "notes" / "en" / "index.md").read_text()
    assert re.findall(r"\]\(papers/(\w+)\.md\)", home) == ["pc", "pa", "pd", "pb"]


def test_bibtex_eprint_drops_the_arxiv_version(tmp_path):
    path = write_entry(tmp_path, entry("cla", source={"arxiv": "2405.12981v3"}))
    out = {lang: tmp_path / f"{lang}.md" for lang in ("ko", "en")}
    render_paper_pages(path, TAGS, None, None, out)
    page = out["en"].read_text()
    assert "eprint = {2405.12981}" in page and "eprint = {2405.12981v3}" not in page


def test_figures_are_drawn_in_every_language_and_replace_the_previous_ones(tmp_path):
    data = tmp_path / "figures"
    data.mkdir()
    (data / "data.json").write_text(json.dumps({"means": {"means": [0.1, -0.2], "bound": 1.0}}))
    out = tmp_path / "notes" / "figures" / "cla"
    out.mkdir(parents=True)
    (out / "gone.svg").write_text("<svg>old</svg>")
    drawn = draw_figures("noisy_mean", data, out, PACKAGES)
    assert sorted(drawn) == sorted(p.name for p in out.iterdir()) == ["means.en.svg",
                                                                       "means.ko.svg"]
    assert "검증 손실" in (out / "means.ko.svg").read_text()  # the label, from the catalog
    assert "validation loss" in (out / "means.en.svg").read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["cla"]


def test_figure_data_the_experiment_cannot_draw_is_refused_by_name(tmp_path):
    data = tmp_path / "figures"
    data.mkdir()
    (data / "data.json").write_text(json.dumps({"nope": {}}))
    with pytest.raises(ExperimentError, match="draws no figure named nope"):
        draw_figures("noisy_mean", data, tmp_path / "out", PACKAGES)
    assert not (tmp_path / "out").exists()


def test_failed_site_build_leaves_the_old_site_in_place(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("old site")
    (tmp_path / "notes").mkdir()
    stamp = tmp_path / "built"
    with pytest.raises(SiteError, match="mkdocs build --strict failed"):
        build_site(tmp_path / "missing.yml", tmp_path / "notes", site, keep_papers=[],
                   tags=TAGS, stamp=stamp)
    assert (site / "index.html").read_text() == "old site"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "site"]


def test_paper_page_names_the_base_models_a_result_stands_on(tmp_path, paper_files):
    path, meta, metrics = paper_files
    data = json.loads(metrics.read_text())
    data["provenance"]["bases"] = {"lm": {
        "file": "lm.pt", "sha256": "0123456789ab" + "f" * 52, "data_sha256": "abcdef" * 10 + "abcd",
        "train": {"items_seen": 1200000, "unit": "tok"}, "provenance": {"git_commit": "c0ffee"}}}
    metrics.write_text(json.dumps(data))
    pages = render_both(tmp_path, paper_files)
    ko = "기반 모델 `lm` `0123456789ab` · 학습 데이터 `abcdefabcdef`, 1,200,000 tok"
    assert ko in pages["ko"]
    assert "base model `lm` `0123456789ab` · training data `abcdefabcdef`" in pages["en"]
    assert "code `c0ffee`" in pages["en"]
