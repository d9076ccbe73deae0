"""The one way text from outside the project becomes HTML, and the allow-list every page's HTML
passes.

A note is Markdown its author writes; a title or an abstract comes from an entry or from arXiv.
Neither may carry script into a reader's browser, however it is spelt: raw HTML, a
`javascript:` link written with entities or control characters, an attribute list, an SVG
handler. So a note is rendered here with a fixed set of Markdown extensions (no attribute lists,
no Markdown inside HTML) and passed through nh3, an allow-list sanitizer built on a real HTML5
parser: only the tags, attributes and URL schemes listed below survive, and everything else is
dropped, whatever its spelling. The site's pages then pass a second allow-list as MkDocs writes
them (`page_html`, called from `digestlab/mkdocs_hooks.py`), wide enough for what our templates
and Material's Markdown extensions make, and still without event handlers, the theme's `data-`
attributes, styles other than a cell's alignment and a shading colour, or links and sources
that are not http(s), mail or relative. The guarantee is these lists, not a list of forbidden
spellings; `digestlab check` refusing raw HTML in notes is only a courtesy to their author.
(What reaches front matter, which MkDocs reads before any of this, is escaped to ASCII by
`digestlab.render.yaml_scalar`, and arXiv's text is made plain by `papers.plain_text`.)
"""

from __future__ import annotations

import html as html_entities

import markdown
import markupsafe
import nh3

# What a note may use: paragraphs, emphasis, links, lists, quotes, code, tables and footnotes.
NOTE_EXTENSIONS = ("tables", "fenced_code", "footnotes", "sane_lists")
NOTE_TAGS = {
    "a", "blockquote", "br", "code", "del", "div", "em", "h3", "h4", "h5", "h6", "hr", "li",
    "ol", "p", "pre", "s", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr",
    "ul",
}
NOTE_ATTRIBUTES = {
    "a": {"href", "title"},
    "li": {"id"},  # a footnote, for its back-link
    "sup": {"id"},  # a footnote reference
    "td": {"style"},  # only its text-align survives (see NOTE_STYLES)
    "th": {"style"},
}
NOTE_CLASSES = {"div": {"footnote"}, "a": {"footnote-ref", "footnote-backref"}}

# What the site's own pages hold besides: headings and their permalinks, admonitions and
# details, figures, highlighted code, the results table's filters.
PAGE_TAGS = NOTE_TAGS | {
    "abbr", "b", "dd", "details", "dl", "dt", "figcaption", "figure", "h1", "h2", "i", "img",
    "input", "kbd", "label", "mark", "small", "span", "summary", "tfoot",
}
PAGE_ATTRIBUTES = {
    "*": {"class", "id", "title", "lang"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "loading"},
    "input": {"type", "name", "value", "checked", "aria-label"},
    "label": {"for"},
    "details": {"open"},
    "span": {"style"},
    "td": {"style"},
    "th": {"style"},
    "ol": {"start"},
}
URL_SCHEMES = {"http", "https", "mailto"}  # and relative URLs, which have none
NOTE_STYLES = {"text-align"}  # a table cell's, from the tables extension
PAGE_STYLES = NOTE_STYLES | {"background-color"}  # the feature browser's shading


def note_html(text: str) -> markupsafe.Markup:
    """A note's Markdown as HTML that holds only what NOTE_TAGS and NOTE_ATTRIBUTES allow."""
    html = markdown.markdown(text, extensions=list(NOTE_EXTENSIONS), output_format="html")
    return markupsafe.Markup(nh3.clean(
        html, tags=NOTE_TAGS, attributes=NOTE_ATTRIBUTES, allowed_classes=NOTE_CLASSES,
        url_schemes=URL_SCHEMES, filter_style_properties=NOTE_STYLES, link_rel=None,
    ))


def note_text(text: str) -> str:
    """A note's Markdown as plain text on one line: rendered as `note_html` does, every tag
    then dropped and every entity decoded."""
    return " ".join(html_entities.unescape(nh3.clean(note_html(text), tags=set())).split())


def page_html(html: str) -> str:
    """A page's content as MkDocs rendered it, with only what the PAGE_ lists allow."""
    return nh3.clean(
        html, tags=PAGE_TAGS, attributes=PAGE_ATTRIBUTES, url_schemes=URL_SCHEMES,
        filter_style_properties=PAGE_STYLES, link_rel=None, strip_comments=True,
    )
