"""SMS encoding arithmetic: the GSM 03.38 (3GPP TS 23.038) 7-bit alphabet and segment counts.

A text made only of GSM-7 characters travels in 7-bit septets: 160 in a single SMS, 153 per
segment once it is split (the user data header takes the rest). Characters of the extension
table are sent as ESC + character, so they cost two septets. Any other character forces the
whole text to UCS-2: 70 UTF-16 code units in a single SMS, 67 per segment when split.
"""

from __future__ import annotations

from math import ceil

# The default alphabet, in code order 0x00-0x7F; 0x1B (ESC, the escape to the extension table)
# is left out because it is not a character of its own.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)

# The extension table: form feed, ^ { } \ [ ~ ] | and the euro sign; each costs two septets.
GSM7_EXT: frozenset[str] = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE = 160
GSM7_MULTI = 153
UCS2_SINGLE = 70
UCS2_MULTI = 67


def is_gsm7(text: str) -> bool:
    """True when every character of the text is in the GSM-7 default alphabet or its extension."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXT for ch in text)


def septets(text: str) -> int:
    """The GSM-7 length of a text (extension characters count twice); the text must be GSM-7."""
    if not is_gsm7(text):
        raise ValueError("the text has characters outside the GSM-7 alphabet")
    return sum(2 if ch in GSM7_EXT else 1 for ch in text)


def ucs2_units(text: str) -> int:
    """The UCS-2/UTF-16 length of a text: characters outside the BMP take two code units."""
    return len(text.encode("utf-16-le")) // 2


def segments(text: str) -> int:
    """How many SMS segments the text takes; an empty text still takes one."""
    if is_gsm7(text):
        n, single, multi = septets(text), GSM7_SINGLE, GSM7_MULTI
    else:
        n, single, multi = ucs2_units(text), UCS2_SINGLE, UCS2_MULTI
    return 1 if n <= single else ceil(n / multi)
