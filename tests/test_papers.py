from __future__ import annotations

import datetime as dt
import os

import pytest
import yaml
from conftest import ROOT, entry, write_entry

from digestlab.experiments import experiment_exists
from digestlab.papers import (
    Paper,
    PaperError,
    bare_arxiv_id,
    is_arxiv_id,
    load_papers,
    load_tags,
    resolve_related,
)

TAGS = load_tags(ROOT / "config" / "tags.yaml")


def known_experiment(name: str) -> bool:
    return experiment_exists(name)


def problems(papers_dir) -> list[str]:
    with pytest.raises(PaperError) as info:
        load_papers(papers_dir, TAGS, known_experiment)
    return info.value.problems


def test_shipped_entries_are_valid():
    papers = load_papers(ROOT / "papers", TAGS, known_experiment)
    assert set(papers) == {"scaling-monosemanticity", "phi-3", "fsdp-torch-compile",
                           "cross-layer-attention", "spo", "sirllm"}
    assert all(str(p.digest_date) == "2024-05-22" for p in papers.values())


def test_valid_entry_loads_with_its_fields(tmp_path):
    write_entry(tmp_path, entry("cla", related=["2405.05254"], links={"code": "https://x.org"}))
    paper = load_papers(tmp_path, TAGS, known_experiment)["cla"]
    assert paper.arxiv_id == "2405.12981"
    assert paper.url == "https://arxiv.org/abs/2405.12981"
    assert paper.reproduction is None


DROP = object()


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"title": DROP}, "title", "missing required field"),
        ({"tags": "efficiency"}, "tags", "list"),
        ({"tags": ["efficiency", "quantum"]}, "tags[1]", "allowed: alignment, efficiency"),
        ({"source": {"arxiv": "2405.1298x"}}, "source.arxiv", "not an arXiv id"),
        ({"source": {"arxiv": 2405.12981}}, "source.arxiv", "in quotes"),
        ({"source": {}}, "source", "exactly one of 'arxiv' or 'url'"),
        ({"id": "Bad_Id"}, "id", "not a slug"),
        ({"reproduction": {"experiment": "nope"}}, "reproduction.experiment", "unknown experiment"),
        ({"published": "May 2024"}, "published", "2024-05-22"),
        ({"note": {"ko": "노트"}}, "note.en", "missing required field"),
        ({"note": {"ko": "a", "en": "b", "fr": "c"}}, "note.fr", "allowed: ko, en"),
        ({"tagz": ["llm"]}, "tagz", "unknown field"),
        ({"links": {"code": "javascript:alert(1)"}}, "links.code", "not an http(s) URL"),
        ({"source": {"url": "https://x.org/a b"}}, "source.url", "not an http(s) URL"),
        ({"related": ["not-an-entry"]}, "related[0]", "neither an arXiv id nor the id"),
    ],
)
def test_bad_field_is_named_with_file_and_what_is_allowed(tmp_path, change, field, says):
    data = {k: v for k, v in (entry("cla") | change).items() if v is not DROP}
    path = write_entry(tmp_path, data, name="cla")
    found = problems(tmp_path)
    assert len(found) >= 1
    line = next(p for p in found if f": {field}:" in p)
    assert line.startswith(f"{path}: {field}: ")
    assert says in line


def test_id_must_equal_file_name(tmp_path):
    write_entry(tmp_path, entry("cla"), name="other")
    assert problems(tmp_path) == [
        f"{tmp_path / 'other.yaml'}: id: 'cla' must equal the file name 'other'"
    ]


def test_repeated_id_names_both_files(tmp_path):
    write_entry(tmp_path, entry("aaa", source={"url": "https://a.org"}))
    write_entry(tmp_path, entry("aaa", source={"url": "https://b.org"}), name="bbb")
    found = problems(tmp_path)
    assert any("bbb.yaml: id: 'aaa' is already used by" in p and "aaa.yaml" in p for p in found)


def test_repeated_arxiv_id_is_reported(tmp_path):
    write_entry(tmp_path, entry("one"))
    write_entry(tmp_path, entry("two", source={"arxiv": "2405.12981v2"}))
    assert any("two.yaml: source.arxiv:" in p and "one.yaml" in p for p in problems(tmp_path))


def test_unparsable_yaml_names_the_line(tmp_path):
    (tmp_path / "broken.yaml").write_text("id: broken\ntags: [a, b\nnote: x\n")
    (line,) = problems(tmp_path)
    assert line.startswith(f"{tmp_path / 'broken.yaml'}: (file): not valid YAML at line")


def test_every_problem_of_every_file_is_listed(tmp_path):
    write_entry(tmp_path, entry("one", tags=["nope"]))
    write_entry(tmp_path, entry("two", source={"arxiv": "12"}, title=""))
    (tmp_path / "notes.txt").write_text("stray")
    found = problems(tmp_path)
    assert len(found) == 4
    assert any("notes.txt" in p for p in found)


@pytest.mark.parametrize("good", ["2405.12981", "2405.12981v2", "0704.0001", "hep-th/9901001",
                                  "quant-ph/0201082v1", "math.GT/0309136"])
def test_arxiv_ids_of_both_shapes_are_accepted(good):
    assert is_arxiv_id(good)


@pytest.mark.parametrize("bad", ["2405.129", "2405.12981v", "hep-th/99", "arXiv:2405.12981", "0"])
def test_malformed_arxiv_ids_are_rejected(bad):
    assert not is_arxiv_id(bad)


@pytest.mark.parametrize(("arxiv_id", "exists"), [
    ("0000.0000", False),  # no year-month zero
    ("2413.12345", False),  # month 13
    ("0703.0001", False),  # new-style ids start in April 2007
    ("1412.1234", True), ("1412.12345", False),  # four digits after the dot until 2014
    ("1501.12345", True), ("1501.1234", False),  # five from 2015
    ("2405.00000", False),  # no paper zero
    ("hep-th/9107001", False), ("hep-th/9108001", True),  # old style from August 1991
    ("hep-th/0703999", True), ("hep-th/0704001", False),  # to March 2007
    ("hep-th/9901000", False),
])
def test_arxiv_ids_must_fit_the_scheme_of_their_era(arxiv_id, exists):
    assert is_arxiv_id(arxiv_id) is exists


@pytest.mark.parametrize(("arxiv_id", "exists"), [
    ("2612.12345", True), ("2612.12345v3", True),  # this month
    ("2701.00001", False), ("9912.12345", False),  # next month; December 2099
])
def test_arxiv_ids_stop_at_the_current_month(arxiv_id, exists):
    assert is_arxiv_id(arxiv_id, today=dt.date(2026, 12, 31)) is exists


def test_an_id_from_the_future_is_refused_without_a_date_given():
    assert not is_arxiv_id("9912.12345")
    this_month = dt.datetime.now(dt.UTC).strftime("%y%m")
    assert is_arxiv_id(f"{this_month}.00001")


def test_an_impossible_id_is_named_with_its_field(tmp_path):
    write_entry(tmp_path, entry("one", source={"arxiv": "0000.0000"}))
    (line,) = problems(tmp_path)
    assert line.startswith(f"{tmp_path / 'one.yaml'}: source.arxiv: '0000.0000' is not an arXiv")


@pytest.mark.parametrize(("text", "field", "says"), [
    ("published: 2024-13-45\n", "published", "valid date"),  # month 13: not from the loader
    ("published: 2024-02-30\n", "published", "valid date"),
    ("digest_date: !!timestamp 2024-99-01\n", "digest_date", "valid date"),
    ("title: One\ntitle: Two\n", "(file)", "the key 'title' is given twice"),
    ("related: &r [a, b]\nlinks: *r\n", "(file)", "aliases (*name) are not allowed"),
])
def test_what_yaml_would_turn_into_objects_or_drop_is_named_in_one_line(tmp_path, text, field,
                                                                          says):
    path = write_entry(tmp_path, entry("one"))
    kept = "\n".join(line for line in path.read_text().splitlines()
                     if not line.startswith(text.split(":")[0] + ":"))
    path.write_text(kept + "\n" + text)
    (line,) = problems(tmp_path)
    assert line.startswith(f"{path}: {field}: ") and says in line, line
    assert "Traceback" not in line and "\n" not in line


def test_unquoted_dates_still_load_as_dates(tmp_path):
    path = write_entry(tmp_path, entry("one"))
    path.write_text(path.read_text().replace("'2024-05-21'", "2024-05-21"))
    assert "published: 2024-05-21\n" in path.read_text()
    paper = load_papers(tmp_path, TAGS, known_experiment)["one"]
    assert paper.published.isoformat() == "2024-05-21"


@pytest.mark.parametrize(("versioned", "bare"), [
    ("2405.12981v2", "2405.12981"), ("2405.12981", "2405.12981"),
    ("quant-ph/0201082v1", "quant-ph/0201082"), ("hep-th/9901001", "hep-th/9901001"),
])
def test_bare_arxiv_id_drops_only_the_version(versioned, bare):
    assert bare_arxiv_id(versioned) == bare


def paper(paper_id: str, **fields) -> Paper:
    return Paper.model_validate(entry(paper_id, **fields))


def test_related_references_resolve_by_entry_id_or_any_version_of_its_arxiv_id():
    papers = {
        "cla": paper("cla"),  # the source of arXiv 2405.12981
        "web": paper("web", source={"url": "https://example.org/w"}),
        "old": paper("old", source={"arxiv": "hep-th/9901001v3"}),
    }
    here = paper("here", source={"url": "https://example.org/h"},
                 related=["web", "2405.12981v2", "hep-th/9901001", "2309.17453"])
    assert resolve_related(here, papers) == [
        ("web", papers["web"]),
        ("2405.12981v2", papers["cla"]),
        ("hep-th/9901001", papers["old"]),
        ("2309.17453", None),
    ]


def test_related_entry_missing_from_the_given_papers_resolves_to_none():
    here = paper("here", source={"url": "https://example.org/h"}, related=["cla", "2405.12981"])
    assert resolve_related(here, {}) == [("cla", None), ("2405.12981", None)]


def _valid_text() -> str:
    return yaml.safe_dump(entry("one"), allow_unicode=True, sort_keys=False)


def _with(**fields) -> bytes:
    return yaml.safe_dump(entry("one", **fields), allow_unicode=True, sort_keys=False).encode()


def _without(*path: str) -> bytes:
    data = entry("one")
    node = data
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode()


# (what is wrong, the file's bytes, the field each problem line must name)
MALFORMED = [
    ("title of the wrong type", _with(title=123), "title"),
    ("authors as one string", _with(authors="Ada Lovelace"), "authors"),
    ("no authors", _with(authors=[]), "authors"),
    ("an empty author", _with(authors=[""]), "authors[0]"),
    ("no tags", _with(tags=[]), "tags"),
    ("tags as one string", _with(tags="efficiency"), "tags"),
    ("an unknown tag", _with(tags=["efficiency", "astrology"]), "tags[1]"),
    ("no note", _without("note"), "note"),
    ("no English note", _without("note", "en"), "note.en"),
    ("a null note", _with(note={"ko": None, "en": "x"}), "note.ko"),
    ("a third language", _with(note={"ko": "가", "en": "a", "fr": "b"}), "note.fr"),
    ("an extra field", _with(rating=5), "rating"),
    ("no source", _without("source"), "source"),
    ("both arxiv and url", _with(source={"arxiv": "2405.12981", "url": "https://x.org"}),
     "source"),
    ("an arXiv id written as a number", _valid_text().replace("'2405.12981'", "2405.12981")
     .encode(), "source.arxiv"),
    ("an arXiv id no paper can have", _with(source={"arxiv": "0000.0000"}), "source.arxiv"),
    ("a javascript link", _with(links={"code": "javascript:alert(1)"}), "links.code"),
    ("related as one string", _with(related="2405.12981"), "related"),
    ("an impossible date", _valid_text().replace("'2024-05-21'", "2024-13-45").encode(),
     "published"),
    ("a date in words", _with(published="yesterday"), "published"),
    ("a date as a number", _with(digest_date=20240522), "digest_date"),
    ("an id that climbs out", _with(id="../../etc/passwd"), "id"),
    ("an absolute id", _with(id="/tmp/one"), "id"),
    ("an id with capitals and spaces", _with(id="Cross Layer"), "id"),
    ("an unknown experiment", _with(reproduction={"experiment": "astrology"}),
     "reproduction.experiment"),
    ("a huge title", _with(title="x" * 600), "title"),
    ("a script in a note", _with(note={"ko": "좋은 글 <script>alert(1)</script>", "en": "x"}),
     "note.ko"),
    ("an event handler in a note", _with(note={"ko": "가", "en": '<img src=x onerror="a()">'}),
     "note.en"),
    ("a javascript link in a note", _with(note={"ko": "가", "en": "[x](javascript:alert(1))"}),
     "note.en"),
    ("a huge note", _with(note={"ko": "가" * 30_000, "en": "a"}), "note.ko"),
    ("a file too large to be an entry", _valid_text().encode() + b"# " + b"x" * 300_000,
     "(file)"),
    ("a key given twice", (_valid_text() + "title: Again\n").encode(), "(file)"),
    ("an alias bomb", b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a]\n"
     b"c: [*b, *b, *b, *b, *b, *b, *b]\n", "(file)"),
    ("nesting a parser cannot follow", b"title: " + b"[" * 5000 + b"]" * 5000, "(file)"),
    ("a tab for indentation", _valid_text().replace("  ko:", "\tko:").encode(), "(file)"),
    ("bytes that are not UTF-8", _valid_text().encode().replace(b"Cross", b"Cr\xff\xfess"),
     "(file)"),
    ("a list, not a mapping", b"- id: one\n- title: x\n", "(file)"),
    ("an empty file", b"", "(file)"),
    ("a Python object tag", b"title: !!python/object/apply:os.system [echo hi]\n", "(file)"),
    ("an unclosed bracket", b"id: one\ntags: [efficiency\n", "(file)"),
]


@pytest.mark.parametrize(("what", "content", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_each_malformed_entry_gets_one_line_per_problem_naming_file_and_field(
        tmp_path, what, content, field):
    path = tmp_path / "one.yaml"
    path.write_bytes(content)
    found = problems(tmp_path)
    assert found, what
    for line in found:
        assert "\n" not in line and "Traceback" not in line
        assert line.startswith(f"{path}: "), line
    assert any(line.startswith(f"{path}: {field}: ") for line in found), found


def test_a_byte_order_mark_and_html_in_the_text_are_read_as_the_person_wrote_them(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + _with(title="<script>alert(1)</script> & <b>x</b>"))
    paper = load_papers(tmp_path, TAGS, known_experiment)["one"]
    assert paper.title == "<script>alert(1)</script> & <b>x</b>"  # escaped when rendered


@pytest.mark.parametrize(("field", "fields", "said"), [
    # a line separator would end the title's line in a page's front matter
    ("title", {"title": "A title\u2028--- [x](https://evil.example){ .md-button }"},
     "holds U+2028 (a line break) at character 8; one line of text is allowed"),
    ("title", {"title": "Two\nlines"}, "holds U+000A (a line break)"),
    # characters XML cannot hold would stop every feed from being written
    ("authors[0]", {"authors": ["Ada\ufffeLovelace"]}, "holds U+FFFE (a character that is not"),
    ("note.en", {"note": {"ko": "노트", "en": "bell \x07 rings"}},
     "holds U+0007 (a control character) at character 6; text is allowed"),
    ("links.co\\u2029de.[key]", {"links": {"co\u2029de": "https://example.org"}},
     "holds U+2029"),
])
def test_text_no_page_front_matter_or_feed_can_carry_is_named(tmp_path, field, fields, said):
    path = write_entry(tmp_path, entry("one", **fields))
    (line,) = problems(tmp_path)
    assert line.startswith(f"{path}: {field}: ") and said in line, line


def test_a_note_keeps_its_line_breaks_and_tabs(tmp_path):
    note = "First line\n\n\tindented code\r\nlast"
    write_entry(tmp_path, entry("one", note={"ko": note, "en": note}))
    assert load_papers(tmp_path, TAGS, known_experiment)["one"].note.en == note


def test_notes_may_compare_with_angle_brackets_and_link_over_https(tmp_path):
    note = ("MFU < 57% and loss > 2; see [the post](https://example.org/a), "
            "<https://example.org/b> and `<tag>` code")
    write_entry(tmp_path, entry("one", note={"ko": note, "en": note.replace("`<tag>`", "")}))
    assert load_papers(tmp_path, TAGS, known_experiment)["one"].note.ko == note


def test_two_entries_claiming_one_id_are_both_named(tmp_path):
    write_entry(tmp_path, entry("one"))
    write_entry(tmp_path, entry("one", source={"arxiv": "2405.12982"}), name="copy")
    found = problems(tmp_path)
    assert any(p.startswith(f"{tmp_path / 'copy.yaml'}: id: ") for p in found)


def test_a_tag_that_cannot_name_a_page_or_a_filter_is_refused(tmp_path):
    tags = tmp_path / "tags.yaml"
    tags.write_text("Long Context:\n  ko: 긴 문맥\n  en: Long context\n", encoding="utf-8")
    with pytest.raises(PaperError) as caught:
        load_tags(tags)
    assert caught.value.problems == [
        f"{tags}: Long Context: a tag is lowercase letters, digits and dashes"]


@pytest.mark.parametrize("written", ["published:\n", "published: ''\n", "published: ~\n"])
def test_an_empty_date_is_named_as_empty(tmp_path, written):
    path = write_entry(tmp_path, entry("one"))
    kept = [line for line in path.read_text().splitlines() if not line.startswith("published:")]
    path.write_text("\n".join(kept) + "\n" + written)
    assert problems(tmp_path) == [
        f"{path}: published: empty (allowed: a date such as 2024-05-22)"]


def test_an_empty_list_field_is_named_as_empty(tmp_path):
    path = write_entry(tmp_path, entry("one", authors=None))
    assert problems(tmp_path) == [f"{path}: authors: empty"]


def test_a_link_to_a_file_outside_papers_is_named_for_what_it_is(tmp_path):
    papers, outside = tmp_path / "papers", tmp_path / "elsewhere"
    papers.mkdir()
    outside.mkdir()
    target = write_entry(outside, entry("one"))
    (papers / "one.yaml").symlink_to(target)
    assert problems(papers) == [
        f"{papers / 'one.yaml'}: (file): a symbolic link to {target}, outside {papers}/; "
        f"entries must be files in {papers}/, not links"]


def test_a_link_between_entries_is_refused_too(tmp_path):
    write_entry(tmp_path, entry("one"))
    (tmp_path / "two.yaml").symlink_to("one.yaml")  # relative, as `ln -s one.yaml two.yaml`
    assert problems(tmp_path) == [
        f"{tmp_path / 'two.yaml'}: (file): a symbolic link to one.yaml; "
        f"entries must be files in {tmp_path}/, not links"]


def test_a_dangling_link_is_named_as_dangling(tmp_path):
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "nowhere" / "gone.yaml")
    (tmp_path / "notes.txt").symlink_to("missing.txt")
    assert problems(tmp_path) == [
        f"{tmp_path / 'gone.yaml'}: (file): a dangling symbolic link (to "
        f"{tmp_path / 'nowhere' / 'gone.yaml'}); entries must be files in {tmp_path}/",
        f"{tmp_path / 'notes.txt'}: (file): a dangling symbolic link (to missing.txt); "
        f"entries must be files in {tmp_path}/"]


def test_a_folder_named_like_an_entry_is_named_as_a_folder(tmp_path):
    (tmp_path / "one.yaml").mkdir()
    assert os.path.isdir(tmp_path / "one.yaml")
    assert problems(tmp_path) == [
        f"{tmp_path / 'one.yaml'}: (file): a folder; only .yaml entry files belong in "
        f"{tmp_path}/"]
