"""What an inbound text means: keyword, status query, explicit new case, or free text."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from cases.config import Sms

_PUNCT = re.compile(r"[\s.,;:!?¡¿\"'()\[\]-]+")
_BARE_PROTOCOL = re.compile(r"^\s*(?:\d{4}\s*[/\-.]\s*)?\d{1,7}\s*$")


class Kind(enum.StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    STATUS = "status"
    NEW = "new"  # explicitly a new case (NUOVA ...)
    TEXT = "text"  # a report or a follow-up


@dataclass(frozen=True)
class Intent:
    kind: Kind
    text: str = ""  # the report text, or the protocol number asked about
    keyword: str = ""
    english: bool = False


def _word(body: str) -> str:
    return _PUNCT.sub(" ", body).strip().upper()


def parse(body: str, rules: Sms, opt_out_type: str = "") -> Intent:
    """Classify a text. Keywords count only as the whole message (as the provider does)."""
    text = (body or "").strip()
    whole = _word(text)
    provider = opt_out_type.strip().upper()
    if provider in ("STOP", "START", "HELP"):  # Advanced Opt-Out already decided
        kind = {"STOP": Kind.OPT_OUT, "START": Kind.OPT_IN, "HELP": Kind.HELP}[provider]
        return Intent(kind, keyword=whole or provider)
    for words, kind in (
        (rules.stop_words, Kind.OPT_OUT),
        (rules.start_words, Kind.OPT_IN),
        (rules.help_words, Kind.HELP),
    ):
        if whole in {w.upper() for w in words}:
            return Intent(kind, keyword=whole, english=whole in {"STOP", "START", "HELP"})
    first, _, rest = text.partition(" ")
    head = _word(first)
    if head in {w.upper() for w in rules.status_words} and rest.strip():
        return Intent(Kind.STATUS, rest.strip()[:40], keyword=head, english=head == "STATUS")
    if _BARE_PROTOCOL.match(text):
        return Intent(Kind.STATUS, text.strip(), keyword="")
    if head in {w.upper() for w in rules.new_words}:
        return Intent(Kind.NEW, rest.strip(), keyword=head, english=head == "NEW")
    return Intent(Kind.TEXT, text)
