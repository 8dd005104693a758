"""Phone numbers: E.164 normalisation with libphonenumber, and masking for logs."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers


class InvalidPhone(ValueError):
    """Not a phone number we can store or text."""


@lru_cache(maxsize=4096)
def normalise_phone(raw: str, region: str = "IT") -> str:
    """Return the number in E.164 (+39...), accepting national and international forms.

    Remembered per process (a pure function; libphonenumber's parse costs ~0.1 ms and a text
    normalises its sender three times); a number that raises is not remembered."""
    if not raw or not raw.strip():
        raise InvalidPhone("empty phone number")
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"not a phone number: {mask_phone(raw)}") from exc
    if not phonenumbers.is_possible_number(parsed) or not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone(f"not a valid phone number: {mask_phone(raw)}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_mobile(e164: str) -> bool:
    """True when the number can receive texts (mobile, or a type libphonenumber cannot tell)."""
    try:
        kind = phonenumbers.number_type(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return False
    return kind in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


def mask_phone(raw: str | None) -> str:
    """+393331234567 -> +39*******567: enough to tell numbers apart in logs, not to call."""
    if not raw:
        return "-"
    s = raw.strip()
    if len(s) <= 4:
        return "*" * len(s)
    keep_head = 3 if s.startswith("+") else 0
    return s[:keep_head] + "*" * (len(s) - keep_head - 3) + s[-3:]
