"""Inputs parsed at the edge, into values the rest of the code can trust: whole numbers that
fit the register's 64-bit ids, dates the calendar arithmetic can move a day past, JSON
documents without lone surrogates, integers past 64 bits or nesting past any real client.
Each refuses what it cannot represent with an Invalid that names the field (a 400), so no
view needs its own try/except. No Flask here; the URL converter below is plain Werkzeug."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from werkzeug.routing import IntegerConverter

from cases.errors import Invalid

INT64 = 2**63 - 1  # the largest id or count a column holds (SQLite and PostgreSQL bigint)
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(9998, 12, 31)  # a day either side still exists
MAX_DEPTH = 32  # no client of ours nests its JSON deeper than a few levels


def whole_number(value: str, name: str, lo: int = 0, hi: int = INT64) -> int:
    """A whole number in [lo, hi] written in ASCII digits ('²' and '٣' are digits to
    str.isdigit, not to us), with an optional '-' when lo < 0."""
    text = value.strip()
    digits = text[1:] if text.startswith("-") and lo < 0 else text
    if not digits or len(digits) > 19 or not (digits.isascii() and digits.isdigit()):
        raise Invalid(f"'{name}' must be a whole number")
    n = int(text)
    if not lo <= n <= hi:
        raise Invalid(f"'{name}' must be between {lo} and {hi}")
    return n


def day(value: str, name: str) -> date:
    """A date as YYYY-MM-DD between 1900 and 9998 (the day after and before still exist)."""
    try:
        when = date.fromisoformat(value.strip())
    except ValueError:
        raise Invalid(f"'{name}' must be a date as YYYY-MM-DD") from None
    if not FIRST_DAY <= when <= LAST_DAY:
        raise Invalid(f"'{name}' must be between {FIRST_DAY} and {LAST_DAY}")
    return when


def json_document(raw: bytes | str) -> Any:
    """A JSON document every part of which can be stored: text that is valid Unicode (JSON's
    "\\ud800" escape makes a lone surrogate, which no database encodes), integers of at most
    64 bits, at most MAX_DEPTH levels (a deeper one exhausts Python's recursion)."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise Invalid(f"the JSON body nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise Invalid("the body is not valid JSON") from None
    _check(data, 0)
    return data


def _check(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise Invalid(f"the JSON body nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _text(value)
    elif isinstance(value, bool) or value is None or isinstance(value, float):
        return
    elif isinstance(value, int):
        if not -INT64 - 1 <= value <= INT64:
            raise Invalid("a number in the JSON body is too large")
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _text(key)
            _check(item, depth + 1)


def _text(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("the JSON body holds text that is not valid Unicode") from None


class IdConverter(IntegerConverter):
    """`<int:...>` in every URL: a number past 64 bits matches no route (a 404), instead of
    reaching the database as one it cannot hold."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", INT64)
        super().__init__(map, *args, **kwargs)
