"""UI strings in every language of the site, from one Babel catalog per language.

The catalogs (`digestlab/locale/<lang>/LC_MESSAGES/messages.po`) hold the strings of the page
templates and of the figures; msgids are English. They are compiled in memory when first used.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).parent / "locale"
SOURCE_LANGUAGE = "en"  # msgids are English


@cache
def translations(lang: str) -> NullTranslations:
    """The UI strings of `lang`, compiled in memory from its .po catalog."""
    po = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
    if lang == SOURCE_LANGUAGE and not po.exists():
        return NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)

