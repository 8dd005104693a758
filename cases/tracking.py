"""The citizen's view of a case (the status page behind the link in their SMS).

What the page may show is decided here, not in the template: with the case's token, the public
timeline, office, responsible person, due date and the citizen's own text; without it (or with a
wrong one), only status and office. Never the phone number, internal notes or staff e-mails.

Which municipality a protocol belongs to: protocol numbers restart per municipality, and one
deployment (one PUBLIC_BASE_URL) may serve several. The token in the SMS link identifies the
case on its own; without it the `m` query parameter names the municipality, and when it is
missing the deployment's only municipality, or the only one holding that number, is used; if
several do, the page asks the citizen to pick (status and office are public information).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cases.config import Municipality
from cases.errors import Invalid, NotFound
from cases.i18n import words
from cases.models import Case, CaseEvent, Status
from cases.notify import Ctx, local_date, local_datetime, office_name, status_label
from cases.protocol import parse_protocol, url_protocol
from cases.workflow import action_label

LANGUAGES = ("it", "en")
MAX_TOKEN = 64  # tokens are 22 characters; anything much longer is not one of ours

# History entries the citizen reads in words of their own (track.po, "event_<action>"); the
# others keep the name staff read (history.po).
CITIZEN_WORDED = ("register", "citizen_message", "master_closed", "note")
# Which history events the citizen sees, and whether their note is addressed to the citizen.
# Public events (the ones that text the citizen) plus the automatic routing, the office's
# resolution and the annulment, whose notes are internal and stay hidden.
_SHOWN: dict[str, bool] = {
    "register": False,  # the text is shown once, as "what you sent"
    "assign": False,
    "take": False,
    "note": True,  # only public notes reach here (filtered below)
    "resolve": False,
    "close": True,  # the reply
    "reopen": False,
    "duplicate": False,
    "not_competent": True,  # the reply
    "master_closed": True,  # the master's reply
    "citizen_message": True,  # the citizen's own words
    "annul": False,
}
_ALWAYS_SHOWN = frozenset({"register", "assign", "resolve", "annul"})  # public or not


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the public history: local date-time, localized label, optional text."""

    at: str
    label: str
    note: str = ""


@dataclass(frozen=True)
class PublicView:
    """Everything the status page shows; `full` is False without the case's token."""

    protocol: str
    url_protocol: str
    municipality: str
    municipality_code: str
    language: str
    status: str
    status_label: str
    office: str
    full: bool
    registered: str = ""
    responsible: str = ""
    due: str = ""
    closed: str = ""
    annulled: str = ""
    text: str = ""
    photos: int = 0
    reply: str = ""
    master: str = ""
    timeline: list[TimelineEntry] = field(default_factory=list)


@dataclass(frozen=True)
class Located:
    """The case a tracking request points at, and whether it proved it holds the token."""

    case: Case
    muni: Municipality
    full: bool
    wrong_token: bool = False


class Ambiguous(Exception):
    """Several municipalities have this protocol number and nothing says which one is meant."""

    def __init__(self, choices: list[Municipality]):
        super().__init__("several municipalities have this protocol number")
        self.choices = choices


def locate(
    s: Session,
    munis: Sequence[Municipality],
    protocol: str,
    token: str | None,
    municipality: str | None = None,
) -> Located:
    """The case for /track/{protocol}; NotFound for a malformed or unknown number.

    Tokens are compared with hmac.compare_digest against each candidate (at most one per
    municipality), so the comparison itself says nothing about how close a guess was.
    """
    try:
        year, number = parse_protocol(protocol)
    except Invalid:
        raise NotFound(f"not a protocol number: {protocol[:40]!r}") from None
    by_code = {m.code: m for m in munis}
    if municipality is not None and municipality not in by_code:
        raise NotFound(f"unknown municipality {municipality[:40]!r}")
    q = select(Case).where(Case.year == year, Case.number == number)
    q = q.where(Case.municipality.in_([municipality] if municipality else list(by_code)))
    candidates = list(s.scalars(q.order_by(Case.id)))
    if not candidates:
        raise NotFound(f"no case {url_protocol(year, number)}")
    if token:
        given = token.encode()[:MAX_TOKEN]
        for case in candidates:
            if hmac.compare_digest(case.track_token.encode(), given):
                return Located(case, by_code[case.municipality], full=True)
    wrong = bool(token)
    if len(candidates) == 1:
        case = candidates[0]
        return Located(case, by_code[case.municipality], full=False, wrong_token=wrong)
    raise Ambiguous([by_code[c.municipality] for c in candidates])


def pick_language(asked: str | None, case_language: str | None, accepted: str | None) -> str:
    """`?lang=`, else the case's language, else the browser's preference, else Italian."""
    for lang in (asked, case_language, accepted):
        if lang in LANGUAGES:
            return lang
    return "it"


def _local(ctx: Ctx, when: datetime | None, with_time: bool = True) -> str:
    if when is None:
        return ""
    return local_datetime(ctx, when) if with_time else local_date(ctx, when)


def _label(event: CaseEvent, lang: str) -> str:
    if event.action in CITIZEN_WORDED:
        return words("track", lang, f"event_{event.action}", {})
    return action_label(event.action, lang)


def _timeline(ctx: Ctx, case: Case, lang: str) -> list[TimelineEntry]:
    out = []
    for e in case.events:
        if e.action not in _SHOWN or not (e.public or e.action in _ALWAYS_SHOWN):
            continue
        label = _label(e, lang)
        if e.action == "assign":
            label = f"{label}: {office_name(ctx.muni, (e.data or {}).get('office'), lang)}"
        elif e.action == "duplicate" and (e.data or {}).get("master"):
            label = f"{label}: {e.data['master']}"
        note = e.note if _SHOWN[e.action] else ""
        out.append(TimelineEntry(at=_local(ctx, e.at), label=label, note=note))
    return out


def responsible(ctx: Ctx, case: Case, lang: str) -> str:
    """The person responsible (L. 241/1990 art. 8): the operator holding the case, else its office."""
    if case.assignee is not None:
        return case.assignee.display_name
    office = office_name(ctx.muni, case.office, lang)
    return (
        f"{office} (non ancora affidata a un operatore)"
        if lang == "it"
        else (f"{office} (not yet given to an operator)")
    )


def public_view(ctx: Ctx, case: Case, *, full: bool, language: str) -> PublicView:
    """What the citizen's status page shows for this case, in `language`."""
    lang = language if language in LANGUAGES else "it"
    reduced = PublicView(
        protocol=case.protocol,
        url_protocol=url_protocol(case.year, case.number),
        municipality=ctx.muni.name,
        municipality_code=ctx.muni.code,
        language=lang,
        status=case.status,
        status_label=status_label(case.status, lang),
        office=office_name(ctx.muni, case.office, lang),
        full=False,
    )
    if not full:
        return reduced
    closing = next(
        (
            e
            for e in reversed(case.events)
            if e.action in ("close", "not_competent", "master_closed")
        ),
        None,
    )
    master = ""
    if case.status == Status.DUPLICATE and case.master is not None:
        master = case.master.protocol
    open_ = case.status not in (Status.CLOSED, Status.NOT_COMPETENT, Status.ANNULLED)
    return replace(
        reduced,
        full=True,
        registered=_local(ctx, case.registered_at),
        responsible=responsible(ctx, case, lang),
        due=_local(ctx, case.due_at, with_time=False) if open_ else "",
        closed=_local(ctx, case.closed_at) if case.closed_at and not open_ else "",
        annulled=_local(ctx, case.annulled_at),
        text=case.original_text,
        photos=sum(1 for a in case.attachments if a.kind == "photo" and a.state != "rejected"),
        reply=closing.note if closing is not None and not open_ else "",
        master=master,
        timeline=_timeline(ctx, case, lang),
    )
