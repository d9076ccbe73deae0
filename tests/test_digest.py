"""The plain-text digest: every shape a person typing it produces is read into its entries, and
whatever could not be placed is reported rather than lost inside another entry's note."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from digestlab.cli import import_digest
from digestlab.digest import DigestError, parse_digest

# An abstract as long as arXiv's (they run to 1,000 characters and more): an English paragraph
# this short before the commentary (300 characters) is read as commentary.
ABSTRACT = ("Caching keys and values speeds up decoding but takes memory that grows with the "
            "context and the batch. We let adjacent layers share one set of keys and values, "
            "which halves the cache again on top of multi-query attention, and we train models "
            "from scratch at several sizes to show that the perplexity given up is small against "
            "what the smaller cache buys at serving time.")

# The digest: the second entry's tags are glued together.
GLUED = f"""\
2024-05-22
You Only Cache Once: Decoder-Decoder Architectures for Language Models
(Yutao Sun, Li Dong)
https://arxiv.org/abs/2405.05254
디코더를 두 단계로 나눠 KV 캐시를 한 번만 저장합니다.
#efficiency
SirLLM: Streaming Infinite Retentive LLM
(Yao Yao, Zuchao Li, Hai Zhao)
https://arxiv.org/abs/2405.12528
엔트로피가 높은 토큰의 KV 캐시만 남기는 방법.
#efficiency#streaming
Reducing Transformer Key-Value Cache Size with Cross-Layer Attention
(William Brandon, Mayank Mishra)
https://arxiv.org/abs/2405.12981
{ABSTRACT}
레이어 사이에서 KV 캐시를 나눠 씁니다.
#efficiency
Phi-3 Technical Report
https://arxiv.org/abs/2404.14219
Phi-3 Small, Medium 모델이 공개됐군요.
#llm
"""
GLUED_ENTRIES = [
    ("You Only Cache Once: Decoder-Decoder Architectures for Language Models", "2405.05254",
     ["efficiency"]),
    ("SirLLM: Streaming Infinite Retentive LLM", "2405.12528", ["efficiency", "streaming"]),
    ("Reducing Transformer Key-Value Cache Size with Cross-Layer Attention", "2405.12981",
     ["efficiency"]),
    ("Phi-3 Technical Report", "2404.14219", ["llm"]),
]


def entries(digest) -> list[tuple[str, str | None, list[str]]]:
    return [(item.title, item.arxiv_id, item.tags) for item in digest.items]


def messages(digest) -> list[str]:
    return [str(problem) for problem in digest.problems]


def assert_apart(digest) -> None:
    """No entry's abstract or commentary holds another entry's title or URL."""
    for item in digest.items:
        text = "\n".join([item.abstract or "", *item.commentary])
        for other in digest.items:
            if other is not item:
                assert other.title not in text, (item.title, other.title)
                assert not other.url or other.url not in text, (item.title, other.url)


def test_glued_tags_close_an_entry_like_spaced_ones():
    spaced = GLUED.replace("#efficiency#", "#efficiency #")
    for digest in (parse_digest(GLUED), parse_digest(spaced)):
        assert digest.date == dt.date(2024, 5, 22)
        assert entries(digest) == GLUED_ENTRIES
        assert [item.line for item in digest.items] == [2, 7, 12, 18]
        assert digest.items[1].commentary == ["엔트로피가 높은 토큰의 KV 캐시만 남기는 방법."]
        assert digest.items[2].authors == ["William Brandon", "Mayank Mishra"]
        assert digest.items[2].abstract == ABSTRACT
        assert digest.problems == []
        assert_apart(digest)


def test_glued_tags_on_the_last_entry():
    digest = parse_digest(GLUED.replace("#llm\n", "#llm#efficiency\n"))
    assert entries(digest) == GLUED_ENTRIES[:3] + [
        ("Phi-3 Technical Report", "2404.14219", ["llm", "efficiency"])]
    assert digest.problems == []


@pytest.mark.parametrize(("tags_lines", "tags"), [
    ("#alignment #rlhf", ["alignment", "rlhf"]),
    ("#alignment#rlhf", ["alignment", "rlhf"]),
    ("#alignment, #rlhf", ["alignment", "rlhf"]),
    ("#alignment,#rlhf;#llm", ["alignment", "rlhf", "llm"]),
    ("  #alignment\t#rlhf  ", ["alignment", "rlhf"]),
    ("#alignment\n#rlhf", ["alignment", "rlhf"]),
    ("#alignment\n\n#rlhf #alignment", ["alignment", "rlhf"]),
    ("＃alignment ＃rlhf", ["alignment", "rlhf"]),  # a Korean keyboard's full-width '#'
    ("Tags: #alignment #rlhf", ["alignment", "rlhf"]),
    ("태그: #efficient-training", ["efficient-training"]),
    ("#정렬 #rlhf", ["정렬", "rlhf"]),
])
def test_every_shape_of_tags_line(tags_lines, tags):
    digest = parse_digest(f"2024-05-22\nSPO: Sequential Alignment\n(Xingzhou Lou)\n최적화.\n"
                          f"{tags_lines}\nPhi-3\nPhi-3 모델.\n#llm\n")
    assert entries(digest) == [("SPO: Sequential Alignment", None, tags), ("Phi-3", None, ["llm"])]
    assert digest.items[0].commentary == ["최적화."]
    assert digest.problems == []


@pytest.mark.parametrize(("url", "arxiv_id"), [
    ("https://arxiv.org/abs/2405.12981", "2405.12981"),
    ("http://arxiv.org/abs/2405.12981", "2405.12981"),
    ("https://www.arxiv.org/abs/2405.12981", "2405.12981"),
    ("https://arxiv.org/abs/2405.12981v2", "2405.12981v2"),
    ("https://arxiv.org/abs/2405.12981/", "2405.12981"),
    ("https://arxiv.org/pdf/2405.12981", "2405.12981"),
    ("https://arxiv.org/pdf/2405.12981.pdf", "2405.12981"),
    ("http://www.arxiv.org/pdf/2405.12981v3.pdf", "2405.12981v3"),
    ("https://arxiv.org/html/2405.12981v1", "2405.12981v1"),
    ("https://export.arxiv.org/abs/2405.12981", "2405.12981"),
    ("https://arxiv.org/abs/2405.12981?context=cs", "2405.12981"),
    ("https://arxiv.org/abs/hep-th/9901001", "hep-th/9901001"),
    ("https://arxiv.org/pdf/hep-th/9901001v1.pdf", "hep-th/9901001v1"),
    ("https://arxiv.org/abs/math.GT/0309136", "math.GT/0309136"),
    ("https://arxiv.org/abs/0706.0001", "0706.0001"),
    ("arxiv.org/abs/2405.12981", "2405.12981"),
    ("<https://arxiv.org/abs/2405.12981>", "2405.12981"),
    ("arXiv:2405.12981", "2405.12981"),
    ("https://example.org/a-note", None),
    ("https://transformer-circuits.pub/2024/scaling-monosemanticity/index.html", None),
])
def test_every_form_of_arxiv_url(url, arxiv_id):
    digest = parse_digest(f"2024-05-22\nCross-Layer Attention\n{url}\n메모.\n#efficiency\n")
    assert entries(digest) == [("Cross-Layer Attention", arxiv_id, ["efficiency"])]
    assert digest.items[0].url.startswith(("https://", "http://"))
    assert digest.items[0].commentary == ["메모."] and digest.problems == []


def test_an_arxiv_url_without_a_real_id_is_reported():
    digest = parse_digest("2024-05-22\nCross-Layer Attention\nhttps://arxiv.org/abs/2405.1298\n"
                          "메모.\n#efficiency\n")
    assert entries(digest) == [("Cross-Layer Attention", None, ["efficiency"])]
    assert messages(digest) == ["line 3: https://arxiv.org/abs/2405.1298 holds no arXiv id that "
                                "can exist; the paper is looked up by its title instead"]


def test_wrapped_titles_and_authors():
    digest = parse_digest("""\
2024년 5월 22일 (수)
Reducing Transformer Key-Value Cache Size with
Cross-Layer Attention
(William Brandon, Mayank Mishra, Aniruddha
Nrusimha, Rameswar Panda,
Jonathan Ragan Kelly)
https://arxiv.org/abs/2405.12981
레이어 공유.
#efficiency
SPO: Multi-Dimensional Preference Sequential Alignment
With Implicit Reward
Modeling
https://arxiv.org/abs/2405.12739
다각적인 Preference 최적화.
#alignment
SirLLM:
Streaming Infinite Retentive LLM
스트리밍 LLM.
#efficiency
Maximizing Training Throughput Using PyTorch FSDP
(Team PyTorch at IBM, and Team PyTorch at Meta)
FSDP를 깎고 있군요.
#efficient-training
Phi-3 Technical Report: A Highly Capable
Language Model Locally on Your Phone
작은 모델입니다.
#llm
""")
    assert entries(digest) == [
        ("Reducing Transformer Key-Value Cache Size with Cross-Layer Attention", "2405.12981",
         ["efficiency"]),
        ("SPO: Multi-Dimensional Preference Sequential Alignment With Implicit Reward Modeling",
         "2405.12739", ["alignment"]),
        ("SirLLM: Streaming Infinite Retentive LLM", None, ["efficiency"]),
        ("Maximizing Training Throughput Using PyTorch FSDP", None, ["efficient-training"]),
        ("Phi-3 Technical Report: A Highly Capable Language Model Locally on Your Phone", None,
         ["llm"]),
    ]
    assert digest.items[0].authors == ["William Brandon", "Mayank Mishra", "Aniruddha Nrusimha",
                                       "Rameswar Panda", "Jonathan Ragan Kelly"]
    assert digest.items[3].authors == ["Team PyTorch at IBM", "Team PyTorch at Meta"]
    assert [item.commentary for item in digest.items] == [
        ["레이어 공유."], ["다각적인 Preference 최적화."], ["스트리밍 LLM."],
        ["FSDP를 깎고 있군요."], ["작은 모델입니다."]]
    assert digest.problems == []
    assert_apart(digest)


def test_parts_missing():
    digest = parse_digest("""\
2024-05-22
No Authors Here
https://arxiv.org/abs/2405.05254
저자 없이 URL만 있습니다.
#efficiency
No URL Here
(Ada Lovelace)
URL 없이 저자만 있습니다.
#llm
Neither Authors Nor URL
제목과 코멘트만 있습니다.
#llm
No Abstract Nor Commentary
(Alan Turing)
https://arxiv.org/abs/2405.12981
#efficiency
Only A Title
#llm
""")
    assert entries(digest) == [("No Authors Here", "2405.05254", ["efficiency"]),
                               ("No URL Here", None, ["llm"]),
                               ("Neither Authors Nor URL", None, ["llm"]),
                               ("No Abstract Nor Commentary", "2405.12981", ["efficiency"]),
                               ("Only A Title", None, ["llm"])]
    assert [item.authors for item in digest.items] == [[], ["Ada Lovelace"], [], ["Alan Turing"],
                                                       []]
    assert [item.commentary for item in digest.items] == [
        ["저자 없이 URL만 있습니다."], ["URL 없이 저자만 있습니다."], ["제목과 코멘트만 있습니다."],
        [], []]
    assert all(item.abstract is None for item in digest.items)
    assert digest.problems == []


def test_crlf_bom_lone_cr_blank_and_separator_lines():
    text = ("\ufeff2024-05-22\r\n\r\n\r\nYou Only Cache Once\r\n(Yutao Sun)\r\n\r\n"
            "https://arxiv.org/abs/2405.05254\r\n\r\n디코더를 나눕니다.\r\n\r\n두 번째 문단.\r\n"
            "#efficiency\r\n\r\n---\r\n* * *\r\nCross-Layer Attention\rhttps://arxiv.org/abs/"
            "2405.12981\r레이어 공유.\r#efficiency\r\n\r\n")
    digest = parse_digest(text)
    assert entries(digest) == [("You Only Cache Once", "2405.05254", ["efficiency"]),
                               ("Cross-Layer Attention", "2405.12981", ["efficiency"])]
    assert [item.line for item in digest.items] == [4, 16]  # as an editor numbers them
    assert digest.items[0].commentary == ["디코더를 나눕니다.", "두 번째 문단."]
    assert digest.items[0].authors == ["Yutao Sun"]
    assert digest.items[1].commentary == ["레이어 공유."] and digest.problems == []


@pytest.mark.parametrize("date_line", ["2024년 5월 22일", "2024년5월22일", "2024-05-22",
                                       "2024-5-22", "2024.05.22", "2024. 5. 22.", "2024/05/22",
                                       "2024년 5월 22일 (수)"])
def test_date_lines(date_line):
    assert parse_digest(f"{date_line}\nPhi-3\n메모.\n#llm\n").date == dt.date(2024, 5, 22)


@pytest.mark.parametrize(("text", "says"), [
    ("", "the digest is empty"),
    ("\n \n\ufeff", "the digest is empty"),
    ("Yesterday\nA paper\n#llm\n", "line 1: expected the digest's date"),
    ("2024년 13월 1일\nA paper\n#llm\n", "line 1: expected the digest's date"),
])
def test_a_digest_without_its_date_cannot_be_read(text, says):
    with pytest.raises(DigestError, match=f"^{says}"):
        parse_digest(text)


def test_a_tag_in_the_middle_of_the_commentary_is_not_a_tags_line():
    digest = parse_digest("""\
2024-05-22
Cross-Layer Attention
https://arxiv.org/abs/2405.12981
see #efficiency 쪽 이야기와 비슷합니다. C# 코드와 #1 순위, https://example.org/page#anchor
#efficiency
Phi-3
Phi-3 모델.
#llm
""")
    assert entries(digest) == [("Cross-Layer Attention", "2405.12981", ["efficiency"]),
                               ("Phi-3", None, ["llm"])]
    assert digest.items[0].commentary == [
        "see #efficiency 쪽 이야기와 비슷합니다. C# 코드와 #1 순위, https://example.org/page#anchor"]
    assert messages(digest) == ["line 4: the commentary of 'Cross-Layer Attention' holds "
                                "#efficiency, kept as text: a tags line holds nothing but #tags"]


def test_english_and_korean_commentary_and_wrapped_abstracts():
    wrapped = ABSTRACT.replace(" context and", "\ncontext and").replace(" multi-query",
                                                                      "\nmulti-query")
    yoco = ("A decoder-decoder architecture caches key-value pairs only once: a self-decoder "
            "encodes the context with efficient attention, and a cross-decoder reuses its one "
            "cache in every layer, so memory and prefill time drop by an order of magnitude "
            "for long contexts while the language modelling loss stays close to a Transformer's "
            "of the same size.")
    digest = parse_digest(f"""\
2024-05-22
Cross-Layer Attention
(William Brandon)
{wrapped}
레이어 사이에서 KV 캐시를 나눠 씁니다.
English remark in the middle, then Korean again.
한국어 코멘트.
#efficiency
You Only Cache Once
https://arxiv.org/abs/2405.05254
{yoco.replace(" a self-decoder", chr(10) + "a self-decoder")}
Commentary in English, on two lines
of text.
#efficiency
SirLLM
(Yao Yao)
{ABSTRACT}

The commentary, after a blank line.
#efficiency
SPO
(Xingzhou Lou)
A short English remark is commentary, not an abstract.
짧은 한국어 코멘트.
#alignment
""")
    assert entries(digest) == [("Cross-Layer Attention", None, ["efficiency"]),
                               ("You Only Cache Once", "2405.05254", ["efficiency"]),
                               ("SirLLM", None, ["efficiency"]),
                               ("SPO", None, ["alignment"])]
    assert digest.items[0].abstract == ABSTRACT
    assert digest.items[0].commentary == ["레이어 사이에서 KV 캐시를 나눠 씁니다.",
                                          "English remark in the middle, then Korean again.",
                                          "한국어 코멘트."]
    assert digest.items[1].abstract == yoco
    assert digest.items[1].commentary == ["Commentary in English, on two lines", "of text."]
    assert digest.items[2].abstract == ABSTRACT
    assert digest.items[2].commentary == ["The commentary, after a blank line."]
    assert digest.items[3].abstract is None
    assert digest.items[3].commentary == ["A short English remark is commentary, not an "
                                          "abstract.", "짧은 한국어 코멘트."]
    assert digest.problems == []
    assert_apart(digest)


def test_an_entry_that_lacks_its_tags_line_is_split_from_the_next():
    digest = parse_digest("""\
2024-05-22
You Only Cache Once
(Yutao Sun, Li Dong)
https://arxiv.org/abs/2405.05254
디코더를 나눕니다.
Reducing Transformer Key-Value Cache Size with
Cross-Layer Attention
(William Brandon, Mayank Mishra)
레이어 공유.
SirLLM: Streaming Infinite Retentive LLM
https://arxiv.org/abs/2405.12528v1
스트리밍 LLM.
#efficiency
SPO: Sequential Alignment
(Xingzhou Lou)
https://arxiv.org/abs/2405.12739
최적화입니다. #alignment #rlhf
Phi-3 Technical Report
(Marah Abdin)
Phi-3 모델.
#llm
""")
    assert entries(digest) == [
        ("You Only Cache Once", "2405.05254", []),
        ("Reducing Transformer Key-Value Cache Size with Cross-Layer Attention", None, []),
        ("SirLLM: Streaming Infinite Retentive LLM", "2405.12528v1", ["efficiency"]),
        ("SPO: Sequential Alignment", "2405.12739", ["alignment", "rlhf"]),
        ("Phi-3 Technical Report", None, ["llm"])]
    assert [item.commentary for item in digest.items] == [
        ["디코더를 나눕니다."], ["레이어 공유."], ["스트리밍 LLM."], ["최적화입니다."],
        ["Phi-3 모델."]]
    assert digest.items[1].authors == ["William Brandon", "Mayank Mishra"]
    assert messages(digest) == [
        "line 2: 'You Only Cache Once' has no #tags line; imported without tags",
        "line 6: the commentary of 'You Only Cache Once' holds what reads as another entry (a "
        "title and authors); 'Reducing Transformer Key-Value Cache Size with Cross-Laye...' is "
        "read as an entry of its own",
        "line 6: 'Reducing Transformer Key-Value Cache Size with Cross-Laye...' has no #tags "
        "line; imported without tags",
        "line 10: the commentary of 'Reducing Transformer Key-Value Cache Size with Cross-Laye..."
        "' holds what reads as another entry (a title and an arXiv URL); 'SirLLM: Streaming "
        "Infinite Retentive LLM' is read as an entry of its own",
        "line 17: the tags at the end of this line (#alignment #rlhf) are read as a tags line"]
    assert_apart(digest)


def test_the_last_entry_without_tags():
    with_url = parse_digest(GLUED.replace("#llm\n", ""))
    assert entries(with_url) == GLUED_ENTRIES[:3] + [("Phi-3 Technical Report", "2404.14219", [])]
    assert messages(with_url) == [
        "line 18: 'Phi-3 Technical Report' has no #tags line; imported without tags"]
    after_sentence = parse_digest(GLUED.replace("공개됐군요.\n#llm\n", "공개됐군요. #llm\n"))
    assert entries(after_sentence) == GLUED_ENTRIES
    assert after_sentence.items[3].commentary == ["Phi-3 Small, Medium 모델이 공개됐군요."]
    assert messages(after_sentence) == [
        "line 20: the tags at the end of this line (#llm) are read as a tags line"]
    after_words = parse_digest(GLUED.replace("공개됐군요.\n#llm\n", "공개됐군요 #llm\n"))
    assert entries(after_words) == GLUED_ENTRIES
    assert after_words.items[3].commentary == ["Phi-3 Small, Medium 모델이 공개됐군요"]
    assert messages(after_words) == ["line 18: 'Phi-3 Technical Report' has no #tags line; the "
                                     "tags at the end of its last line are taken (#llm)"]
    bare = parse_digest("2024-05-22\nPhi-3\n#llm\nA paper\nsome words\n")
    assert entries(bare) == [("Phi-3", None, ["llm"])]
    assert [(p.line, p.skipped) for p in bare.problems] == [(4, True)]
    assert messages(bare) == ["line 4: 'A paper' has no #tags line, authors or URL; not "
                              "imported (end it with its #tags line)"]


def test_what_cannot_be_placed_is_reported_and_the_rest_read():
    digest = parse_digest("""\
2024-05-22
#llm
https://arxiv.org/abs/2405.05254
제목 없이 URL로 시작합니다.
#efficiency
(Ada Lovelace, Alan Turing)
저자로 시작합니다.
#llm
Cross-Layer Attention
(William Brandon, Mayank
레이어 공유.
#efficiency
2024-05-23
Phi-3
Phi-3 모델.
#llm
""")
    assert entries(digest) == [("", "2405.05254", ["efficiency"]),
                               ("Cross-Layer Attention", None, ["efficiency"]),
                               ("Phi-3", None, ["llm"])]
    assert digest.items[1].authors == ["William Brandon", "Mayank"]
    assert digest.items[1].commentary == ["레이어 공유."]
    assert [(str(p), p.skipped) for p in digest.problems] == [
        ("line 2: tags before any paper (#llm); ignored", True),
        ("line 3: an entry without a title (it starts with its URL); the title is taken from "
         "arXiv", False),
        ("line 6: an entry without a title or an arXiv URL (it starts with its authors or URL); "
         "not imported", True),
        ("line 10: the authors' parenthesis is never closed; only this line is taken for the "
         "authors", False),
        ("line 13: a second date line; ignored (import each day's digest by itself)", True)]


def test_a_title_alone_after_a_missing_tags_line_is_reported():
    # Without authors or a URL, the next paper cannot be told from the commentary: it is said.
    digest = parse_digest("""\
2024-05-22
Mapping the Mind of a Large Language Model
(Adly Templeton, Tom Conerly)
https://transformer-circuits.pub/2024/scaling-monosemanticity/index.html
Claude 3 Sonnet 분석 리포트.
Phi-3
Phi-3 모델이 공개됐군요.
#llm
A Blog Post
https://example.org/post
좋은 글입니다.
Another Blog
https://example.org/another
#llm
""")
    assert [item.title for item in digest.items] == ["Mapping the Mind of a Large Language Model",
                                                     "A Blog Post"]
    assert messages(digest) == [
        "line 6: 'Phi-3', above Korean text in the body of 'Mapping the Mind of a Large "
        "Language Model', reads as a title; if another paper starts there, end this one with "
        "its #tags line",
        "line 12: 'Another Blog', above a URL in the body of 'A Blog Post', reads as a title; if "
        "another paper starts there, end this one with its #tags line"]


def test_a_remark_in_parentheses_is_not_taken_for_authors():
    digest = parse_digest("""\
2024-05-22
Cross-Layer Attention
https://arxiv.org/abs/2405.12981
(참고) 레이어 공유.
Similar to YOCO
(https://arxiv.org/abs/2405.05254)
(this is a remark, not a list of names.)
#efficiency
""")
    assert entries(digest) == [("Cross-Layer Attention", "2405.12981", ["efficiency"])]
    assert digest.items[0].authors == []
    assert digest.items[0].commentary == ["(참고) 레이어 공유.", "Similar to YOCO",
                                          "(https://arxiv.org/abs/2405.05254)",
                                          "(this is a remark, not a list of names.)"]
    assert digest.problems == []


# Every combination of the ways each part of an entry is written, between two fixed entries.
TITLES = {"one line": ["Cross-Layer Attention for Key-Value Caches"],
          "wrapped after a connector": ["Cross-Layer Attention for", "Key-Value Caches"],
          "wrapped after a colon": ["CLA:", "Cross-Layer Attention for Key-Value Caches"],
          "wrapped anywhere": ["Cross-Layer Attention for Key-Value", "Caches"]}
AUTHORS = {"none": [], "one line": ["(William Brandon, Mayank Mishra)"],
           "wrapped": ["(William Brandon,", "Mayank", "Mishra)"]}
URLS = {"none": ([], None), "abs": (["https://arxiv.org/abs/2405.12981v2"], "2405.12981v2"),
        "pdf": (["http://www.arxiv.org/pdf/2405.12981.pdf"], "2405.12981"),
        "old style": (["arxiv.org/abs/hep-th/9901001/"], "hep-th/9901001"),
        "elsewhere": (["https://example.org/cla"], None)}
ABSTRACTS = {"none": [], "one line": [ABSTRACT],
             "wrapped": ABSTRACT.replace(" We let", "\nWe let").split("\n")}
TAG_LINES = {"spaced": ["#efficiency #llm"], "glued": ["#efficiency#llm"],
             "commas": ["#efficiency, #llm"], "two lines": ["#efficiency", "#llm"],
             "absent, at the line's end": None}


def test_every_combination_of_the_parts_of_an_entry():
    for (title, author, url, abstract, tags, blank) in itertools.product(
            TITLES, AUTHORS, URLS, ABSTRACTS, TAG_LINES, (False, True)):
        if (title, author, url) == ("wrapped anywhere", "none", "none") and abstract != "none":
            continue  # nothing tells the title's second line from the abstract's first
        gap = [""] if blank else []
        commentary = "레이어 사이에서 KV 캐시를 나눠 씁니다."
        closing = TAG_LINES[tags]
        lines = ["2024년 5월 22일", *gap, "You Only Cache Once", "https://arxiv.org/abs/2405.05254",
                 "디코더를 나눕니다.", "#efficiency", *gap, *TITLES[title], *gap, *AUTHORS[author],
                 *URLS[url][0], *ABSTRACTS[abstract], *gap,
                 *([commentary] if closing else [commentary + " #efficiency #llm"]),
                 *(closing or []), *gap, "Phi-3", "Phi-3 모델.", "#llm", *gap]
        shape = f"{title=} {author=} {url=} {abstract=} {tags=} {blank=}"
        digest = parse_digest("\n".join(lines))
        assert entries(digest) == [
            ("You Only Cache Once", "2405.05254", ["efficiency"]),
            ("Cross-Layer Attention for Key-Value Caches" if title != "wrapped after a colon"
             else "CLA: Cross-Layer Attention for Key-Value Caches", URLS[url][1],
             ["efficiency", "llm"]),
            ("Phi-3", None, ["llm"])], shape
        cla = digest.items[1]
        assert cla.authors == (["William Brandon", "Mayank Mishra"] if author != "none"
                               else []), shape
        assert cla.abstract == (" ".join(ABSTRACTS[abstract]) or None), shape
        assert cla.commentary == [commentary], shape
        glued_on = lines.index(commentary + " #efficiency #llm") + 1 if not closing else 0
        assert messages(digest) == ([] if closing else [
            f"line {glued_on}: the tags at the end of this line (#efficiency #llm) are read as "
            "a tags line"]), shape
        assert_apart(digest)


SEED = ROOT.parent / "shared" / "seed" / "digest-2024-05-22.txt"


@pytest.mark.skipif(not SEED.exists(), reason="the seed digest lives beside the repository")
def test_the_whole_seed_digest_is_read():
    date, items, problems = parse_digest(SEED.read_text(encoding="utf-8"))
    assert date == dt.date(2024, 5, 22)
    assert [len(i.authors) for i in items] == [26, 0, 2, 5, 6, 3]
    assert [i.tags for i in items] == [["interpretability"], ["llm"], ["efficient-training"],
                                       ["efficiency"], ["alignment", "rlhf"], ["efficiency"]]
    assert [i.abstract is not None for i in items] == [False, False, False, True, True, True]
    assert items[0].url.startswith("https://transformer-circuits.pub/")
    assert all(i.commentary for i in items) and items[1].title == "Phi-3"
    assert [len(i.commentary) for i in items] == [2, 1, 1, 2, 2, 1] and problems == []


# The importer: each problem one line on stderr, the rest imported, the exit status telling.

@pytest.fixture
def config(workspace, fake_arxiv, monkeypatch):
    """The workspace's config, run from its root; the fake arXiv knows the YOCO paper."""
    config = yaml.safe_load((workspace / "config" / "config.yaml").read_text())
    config |= yaml.safe_load((workspace / "config" / "test.yaml").read_text())
    fake_arxiv.papers = fake_arxiv.papers | {"2405.05254": {
        "title": "You Only Cache Once: Decoder-Decoder Architectures for Language Models",
        "authors": ["Yutao Sun", "Li Dong"], "abstract": "A decoder-decoder."}}
    monkeypatch.chdir(workspace)
    return config


def test_import_finds_every_entry_of_the_glued_digest(config, capsys):
    Path("digest.txt").write_text(GLUED, encoding="utf-8")
    assert import_digest("digest.txt", config, dry_run=True) == 0
    said = capsys.readouterr()
    assert "would write 3 of 4 papers" in said.out  # the fourth: cla.yaml already holds it
    assert "cla.yaml already holds 2405.12981; skipped" in said.out
    assert "sirllm-streaming-infinite-retentive-llm.yaml" in said.out
    assert said.err == ""


def test_import_reports_what_it_cannot_place_and_imports_the_rest(config, capsys):
    path = Path("digest.txt")
    path.write_text("2024-05-22\n#llm\nhttps://arxiv.org/abs/2405.05254\n메모.\n#efficiency\n"
                    "A Blog Post\nhttps://example.org/post\n좋은 글.\n#llm\nA paper\nsome words\n",
                    encoding="utf-8")
    assert import_digest(path, config) == 1
    said = capsys.readouterr()
    assert said.err.splitlines() == [
        "digest.txt: line 2: tags before any paper (#llm); ignored",
        "digest.txt: line 3: an entry without a title (it starts with its URL); the title is "
        "taken from arXiv",
        "digest.txt: line 10: 'A paper' has no #tags line, authors or URL; not imported (end it "
        "with its #tags line)",
        "digest.txt: 2 parts of the digest not imported (named above); fix the digest and "
        "import it again"]
    assert "wrote 2 of 2 papers" in said.out
    yoco = yaml.safe_load(Path("papers/you-only-cache-once-decoder-decoder.yaml")
                          .read_text(encoding="utf-8"))
    assert yoco["title"].startswith("You Only Cache Once") and yoco["note"]["ko"] == "메모."
    blog = yaml.safe_load(Path("papers/a-blog-post.yaml").read_text(encoding="utf-8"))
    assert blog["source"] == {"url": "https://example.org/post"} and blog["tags"] == ["llm"]


def test_import_without_a_title_or_an_arxiv_record_writes_nothing(config, capsys, fake_arxiv):
    fake_arxiv.mode = "500"
    path = Path("digest.txt")
    path.write_text("2024-05-22\nhttps://arxiv.org/abs/2405.05254\n메모.\n#efficiency\n",
                    encoding="utf-8")
    assert import_digest(path, config) == 1
    said = capsys.readouterr()
    assert said.err.splitlines()[1] == ("digest.txt: line 2: an entry without a title, and "
                                        "arXiv gave none; not written")
    assert "wrote 0 of 1 papers" in said.out


def test_short_english_commentary_an_untagged_entry_and_a_title_opening_a_parenthesis():
    digest = parse_digest("""\
2024-07-12
FlashAttention-3: Fast and Accurate Attention with Asynchrony and Low-precision
(Jay Shah, Ganesh Bikshandi, Ying Zhang)
https://arxiv.org/abs/2407.08608
H100 only, FP8 support, 1.5-2.0x faster than FA2.
Hopper의 비동기 기능을 적극 활용했네요.
#efficiency
Phi-3
Phi-3 Small, Medium 모델 공개.

Mixtral of Experts
Sparse MoE with 8 experts per layer, top-2 routing.
오픈 모델 중 최고.
#llm
(Self-)Rewarding Language Models
(Weizhe Yuan, Richard Yuanzhe Pang,
 Xian Li, Jason Weston)
https://arxiv.org/abs/2401.10020
자기 보상.
#alignment
""")
    flash, phi, rewarding = digest.items
    # an English line before the Korean, too short for an abstract, stays in the note
    assert flash.abstract is None and flash.commentary[0].startswith("H100 only")
    # without a tags line, authors or a URL, nothing proves a second paper starts at Mixtral,
    # but the reader says where one may
    assert phi.commentary[1] == "Mixtral of Experts"
    assert messages(digest) == [
        "line 11: 'Mixtral of Experts', above the rest of its paragraph in the body of 'Phi-3', "
        "reads as a title; if another paper starts there, end this one with its #tags line"]
    # a parenthesis closed inside the line opens a title, not a list of authors
    assert rewarding.title == "(Self-)Rewarding Language Models"
    assert rewarding.authors == ["Weizhe Yuan", "Richard Yuanzhe Pang", "Xian Li", "Jason Weston"]
    assert rewarding.arxiv_id == "2401.10020"


def test_an_authors_own_parentheses_keep_the_list_of_authors():
    digest = parse_digest("2024-05-22\nA Paper\n(Ada Lovelace (Analytical Engine), Alan Turing)\n"
                          "https://arxiv.org/abs/2405.12981\n메모.\n#llm\n")
    (item,) = digest.items
    assert item.title == "A Paper" and item.authors == ["Ada Lovelace (Analytical Engine)",
                                                        "Alan Turing"]
