"""Logging set-up: one format, and a filter that masks any phone number that slips into a log."""

from __future__ import annotations

import logging
import re

from cases.phone import mask_phone

# A phone number in any format a log line may carry it: international (+39..., also
# URL-encoded as %2B39...), or Italian national, a mobile (3xx xxx xxxx) or a landline
# (0 and a digit other than 0, 6 to 11 digits in all), with or without spaces, dots or dashes between the groups.
# Not a number that follows a letter, digit, '/' or '-' (protocol numbers: 2026/0000123,
# 2026-0000123) or is followed by one.
_PHONE = re.compile(
    r"(?:(?<![\w/=])\+|%2[Bb])\d{7,15}\b"
    r"|(?<![\w/\-.,:])(?:3\d{2}[ .\-]?\d{3}[ .\-]?\d{3,4}|0[1-9]\d{0,2}[ .\-]?\d{5,8})(?![\w/\-])"
)
# Secrets that travel in URLs and headers: the status page's token (?t=), API keys, bearer
# tokens. Their values never reach a log.
_SECRET = re.compile(
    r"(?P<name>[?&](?:t|token|api_key|apikey|key|access_token)=|Bearer\s+)(?P<value>[^&\s\"'<>]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with every phone number masked and every token or key replaced."""
    text = _SECRET.sub(lambda m: m.group("name") + "[redacted]", text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


class MaskPhones(logging.Filter):
    """Safety net on every log line (the access log's too): callers mask numbers themselves;
    this catches the ones they forgot, in any format, and redacts tokens and keys."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = redact(msg)
        if masked != msg:
            record.msg, record.args = masked, None
        return True


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(isinstance(f, MaskPhones) for h in root.handlers for f in h.filters):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskPhones())
    root.addHandler(handler)
    root.setLevel(level)
