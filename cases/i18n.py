"""The product's own words in Italian and English, from gettext catalogues.

A translator edits `cases/translations/<language>/LC_MESSAGES/<domain>.po`: `messages` holds
the console's words, `ivr` what the switchboard says, `track` the citizens' status page,
`status` the names of a case's statuses that citizens read (texts, calls, the status page),
`history` the names of the history's entries (the moves of `cases.workflow.MOVES`).
`pybabel extract` (the commands are in babel.cfg) finds every word the code and the templates ask for, and `pybabel update` adds the
new ones to each catalogue (tests/test_i18n.py fails while one lacks a word). The message ids
are keys (`login`, `spool_banner`), so that a change of wording in one language touches no
code; `{name}` placeholders are filled here. The catalogues are read from their .po files
when first needed (no compiled .mo files to keep in step). What a municipality words itself
(its SMS texts, categories) is its configuration, not these catalogues.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

CATALOGUES = Path(__file__).parent / "translations"
LANGUAGES = ("it", "en")
DEFAULT = "it"


@cache
def catalogue(language: str, domain: str = "messages") -> Translations:
    """The language's catalogue of `domain` (`messages`: the console's words; `ivr`: what the
    switchboard says), compiled in memory from its .po file (read once)."""
    with open(CATALOGUES / language / "LC_MESSAGES" / f"{domain}.po", "rb") as fh:
        compiled = io.BytesIO()
        write_mo(compiled, read_po(fh, locale=language))
    compiled.seek(0)
    return Translations(compiled)


def translate(language: str, key: str, **values: object) -> str:
    """The console's words for `key` in `language` (Italian for any other); a key missing
    from the catalogue shows itself, so a gap is visible, never a crash."""
    return words("messages", language, key, values)


def words(domain: str, language: str, key: str, values: Mapping[str, object]) -> str:
    """`key` from the catalogue of `domain` in `language`, its placeholders filled."""
    text = catalogue(language if language in LANGUAGES else DEFAULT, domain).gettext(key)
    return text.format(**values) if values else text


def plural(domain: str, language: str, singular: str, plural: str, n: int) -> str:
    """The form of `singular`/`plural` for `n` by the language's own plural rule (CLDR)."""
    return catalogue(language if language in LANGUAGES else DEFAULT, domain).ngettext(
        singular, plural, n
    )


def N_(key: str) -> str:
    """Mark `key` for the catalogues where it is written, to be translated where it is shown
    (a menu entry, a column heading): `pybabel extract -k N_` finds it."""
    return key
