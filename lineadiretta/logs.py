"""Logging set-up: one format, and a filter that masks any phone number that slips into a log."""

from __future__ import annotations

import logging
import re

from cases.phone import mask_phone

_PHONE = re.compile(r"(?<![\w/=])\+\d{7,15}\b")


class MaskPhones(logging.Filter):
    """Safety net: callers mask numbers themselves; this catches the ones they forgot."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = _PHONE.sub(lambda m: mask_phone(m.group(0)), msg)
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
