"""What the switchboard says, in Italian and English: the prompts are the `ivr` catalogue of
cases/translations (cases/i18n.py); menus (categories) come from config."""

from __future__ import annotations

import re
from datetime import date

from babel.dates import format_date

from cases.i18n import words

# Spoken words that choose a menu option (folded: lower case, no accents).
SPEECH = {
    "report": ("segnal", "problema", "guasto", "report", "problem"),
    "status": ("stato", "pratica", "status", "case"),
    "operator": ("operator", "persona", "parlare", "agent", "someone"),
    "english": ("english", "inglese"),
    "yes": ("si", "conferm", "giusto", "esatto", "yes", "correct", "confirm"),
    "no": ("no", "ripet", "sbagliat", "repeat", "again"),
    "open_status": ("mia", "nove", "my", "nine"),
}


# What XML 1.0 cannot carry (control characters, lone surrogates, U+FFFE/U+FFFF): a caller's
# words or keys are read back inside TwiML, which must stay a well-formed document.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def prompt(lang: str, key: str, **values: str) -> str:
    """What the switchboard says for `key`, from the `ivr` catalogue (cases/translations)."""
    clean = {k: _NOT_XML.sub(" ", str(v)) for k, v in values.items()}
    return words("ivr", lang, key, clean)


def spoken_date(day: date, lang: str) -> str:
    """'2 marzo 2026', 'March 2, 2026': the locale's own month names (CLDR, through Babel)."""
    return format_date(day, "MMMM d, y" if lang == "en" else "d MMMM y", locale=lang)


def digits_of(year: int, number: int, lang: str) -> str:
    """2026/0000123 read digit by digit: '2, 0, 2, 6, barra, 1, 2, 3'."""
    parts = [*str(year), prompt(lang, "slash"), *str(number)]
    return ", ".join(parts)
