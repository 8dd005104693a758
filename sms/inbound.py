"""Inbound texts: one function decides what a text means and what the register does with it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    false,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy import case as sql_case
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from cases.db import Base, built
from cases.errors import Invalid
from cases.models import Case, InboundKind, InboundMessage, OutboxMessage
from cases.notify import Ctx, office_name, queue_text, render, render_text, status_label
from cases.optout import opted_out_query, set_opt_out
from cases.phone import InvalidPhone, mask_phone, normalise_phone
from cases.protocol import parse_protocol, protocol_year
from cases.registration import NewAttachment, Precondition, register
from cases.services import add_citizen_message, find_case, latest_open_case_query
from sms.intent import Intent, Kind, parse

log = logging.getLogger(__name__)
MAX_MEDIA = 10


@dataclass(frozen=True)
class Inbound:
    """The provider's fields we use; everything else in the form is ignored."""

    sid: str
    from_: str
    to: str
    body: str = ""
    media: list[tuple[str, str]] = field(default_factory=list)  # (url, content type)
    opt_out_type: str = ""
    # when it reached us, if it waited in a host's spool while the register was away
    received_at: datetime | None = None


@dataclass
class Outcome:
    kind: InboundKind
    reply: str | None
    case: Case | None = None
    replayed: bool = False


def _status_reply(
    s: Session, ctx: Ctx, phone: str, asked: str, lang: str
) -> tuple[str, Case | None]:
    try:
        year, number = parse_protocol(asked, protocol_year(ctx.now, ctx.muni.tz))
        case = find_case(s, ctx, f"{year}/{number}")
        shown = f"{year}/{number:07d}"
    except Invalid:
        case, shown = None, asked[:20]
    if case is None:
        return render_text(ctx, "sms_status_unknown", lang, protocol=shown), None
    if case.phone == phone:
        return render(ctx, "sms_status_own", case), case
    # Someone else's case: status and office only, nothing about the reporter or the text.
    other = render_text(
        ctx,
        "sms_status_other",
        lang,
        protocol=case.protocol,
        status=status_label(case.status, lang),
        office=office_name(ctx.muni, case.office, lang),
    )
    return other, None


@dataclass(frozen=True)
class _Known:
    """What the register already knows about this text and its sender, and what the text is
    therefore to do (`decision`: an InboundKind value, or "replayed")."""

    decision: str
    seen_kind: str | None
    seen_reply: str | None
    last_language: str | None
    opted_out: bool
    recent: int
    open_case_id: int | None


REPLAYED = "replayed"  # the provider sent this text again: same answer, nothing new


@cache
def _looked_up() -> Select[Any]:
    """The sender's look-up, one row: the replay record, the language of their last case,
    opt-out, their texts in the last minute, their open case in the follow-up window."""
    muni, phone = bindparam("muni", type_=String), bindparam("phone", type_=String)
    seen = select(InboundMessage.kind, InboundMessage.reply).where(
        InboundMessage.provider_sid == bindparam("sid")
    )
    return select(
        seen.with_only_columns(InboundMessage.kind).scalar_subquery().label("seen_kind"),
        seen.with_only_columns(InboundMessage.reply).scalar_subquery().label("seen_reply"),
        select(Case.language)
        .where(Case.municipality == muni, Case.phone == phone)
        .order_by(Case.id.desc())
        .limit(1)
        .scalar_subquery()
        .label("last_language"),
        opted_out_query(muni, phone).label("opted_out"),
        select(func.count())
        .select_from(InboundMessage)
        .where(
            InboundMessage.municipality == muni,
            InboundMessage.from_phone == phone,
            InboundMessage.received_at > bindparam("minute_ago", type_=DateTime(timezone=True)),
        )
        .scalar_subquery()
        .label("recent"),
        latest_open_case_query(
            muni, phone, bindparam("followup_since", type_=DateTime(timezone=True))
        )
        .with_only_columns(Case.id)
        .scalar_subquery()
        .label("open_case_id"),
    )


def _decision(k: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[str]:
    """What a text does, decided here only, from the look-up and the text's intent: a retry
    is answered as before; keywords act whatever else; a flood is only stored; help and
    status answer; a text follows up the sender's open case (unless NUOVA) or opens one."""
    intent = bindparam("intent", type_=String)
    return sql_case(
        (k.seen_kind.is_not(None), literal(REPLAYED)),
        (intent.in_([Kind.OPT_OUT.value, Kind.OPT_IN.value]), intent),
        (func.coalesce(k.recent, 0) >= bindparam("flood", type_=Integer), literal("flood")),
        (intent.in_([Kind.HELP.value, Kind.STATUS.value]), intent),
        (
            and_(~bindparam("new_anyway", type_=Boolean), k.open_case_id.is_not(None)),
            literal(InboundKind.FOLLOWUP.value),
        ),
        else_=literal(InboundKind.NEW_CASE.value),
    )


@cache
def _known_query() -> Select[Any]:
    """Built once: the look-up and its decision, with its values as parameters."""
    k = _looked_up().offset(0).subquery("looked")  # OFFSET: each look-up runs once
    return select(*k.c, _decision(k.c).label("decision"))


@cache
def _new_case_precondition() -> Precondition:
    """A text the decision makes a new case is registered in the statement that looks the
    sender up when the reply written beforehand is the one to send: the sender has not opted
    out, and the reply's language is the citizen's."""

    def holds(k: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[bool]:
        return and_(
            k.decision == InboundKind.NEW_CASE.value,
            func.coalesce(k.opted_out, false()).is_(false()),
            or_(
                bindparam("any_language", type_=Boolean),
                func.coalesce(k.last_language, bindparam("default_language", type_=String))
                == bindparam("language", type_=String),
            ),
        )

    return Precondition.of(_known_query(), holds)


def _lookup_values(ctx: Ctx, sid: str, phone: str, intent: Intent) -> dict[str, Any]:
    return {
        "sid": sid,
        "muni": ctx.muni.code,
        "phone": phone,
        "minute_ago": ctx.now - timedelta(minutes=1),
        "followup_since": ctx.now - timedelta(days=ctx.muni.sms.followup_days),
        "intent": intent.kind.value,
        "flood": ctx.muni.sms.flood_per_minute,
        "new_anyway": intent.kind == Kind.NEW,
    }


def _as_known(row: Mapping[Any, Any]) -> _Known:
    return _Known(
        row["decision"],
        row["seen_kind"],
        row["seen_reply"],
        row["last_language"],
        bool(row["opted_out"]),
        int(row["recent"] or 0),
        row["open_case_id"],
    )


def _known(s: Session, values: dict[str, Any]) -> _Known:
    """The look-up and its decision: one round trip, before anything is written."""
    return _as_known(s.execute(_known_query(), values).one()._mapping)


def handle_inbound(s: Session, ctx: Ctx, msg: Inbound) -> Outcome:
    """Store the text, act on it and commit (this is the text's one commit); returns the reply
    to send. A provider's retry racing in on another worker gets the answer that stands."""
    try:
        return _handle(s, ctx, msg)
    except IntegrityError:
        # The same MessageSid was stored meanwhile: its answer stands, nothing doubles.
        s.rollback()
        outcome = _handle(s, ctx, msg)
        if not outcome.replayed:
            raise
        return outcome


def _handle(s: Session, ctx: Ctx, msg: Inbound) -> Outcome:
    try:
        phone = normalise_phone(msg.from_, ctx.muni.country)
    except InvalidPhone as exc:
        # a retry of a stored text cannot get here: only normalised senders are stored
        raise Invalid(f"'From' is not a phone number we can answer: {exc}") from None
    if len(msg.media) > MAX_MEDIA:
        raise Invalid(f"at most {MAX_MEDIA} media per message")
    rules = ctx.muni.sms
    intent = parse(msg.body, rules, msg.opt_out_type)
    english = intent.english and "en" in ctx.muni.templates
    attachments = [NewAttachment("photo", url, ctype or None) for url, ctype in msg.media]
    values = _lookup_values(ctx, msg.sid, phone, intent)
    if intent.kind in (Kind.TEXT, Kind.NEW):
        # Most texts open a case: look up and register in one go, if nothing says otherwise.
        lang: str = "en" if english else ctx.muni.language
        when = values | {
            "any_language": english,
            "default_language": ctx.muni.language,
            "language": lang,
        }
        try:
            registered, looked_up = _new_case(
                s, ctx, msg, phone, intent.text, lang, attachments, False, when
            )
        except Invalid:  # not a case on its own (an empty text): may still follow one up
            known = _known(s, values)
        else:
            if registered is not None:
                return registered
            known = _as_known(looked_up)
    else:
        known = _known(s, values)
    if known.decision == REPLAYED:
        s.commit()  # nothing to write: the answer stands
        assert known.seen_kind is not None
        return Outcome(InboundKind(known.seen_kind), known.seen_reply or None, replayed=True)
    lang = "en" if english else known.last_language or ctx.muni.language
    kind = InboundKind(known.decision)
    case: Case | None = None
    reply: str | None = None
    if kind in (InboundKind.OPT_OUT, InboundKind.OPT_IN):
        out = kind == InboundKind.OPT_OUT
        set_opt_out(s, ctx, phone, out, f"keyword:{intent.keyword}"[:32])
        # The provider answers its own keywords (and drops ours); we answer the Italian ones.
        if intent.keyword not in {w.upper() for w in rules.provider_keywords}:
            reply = render_text(ctx, "sms_optout" if out else "sms_optin", lang)
        log.info("sms from %s: %s (%s)", mask_phone(phone), kind.value, intent.keyword)
    elif kind == InboundKind.FLOOD:
        if known.open_case_id is not None:
            case = s.get(Case, known.open_case_id)
        if known.recent == rules.flood_per_minute:  # one warning, then silence
            reply = render_text(ctx, "sms_flood", lang)
        log.warning(
            "sms flood from %s: %d texts in a minute; stored only",
            mask_phone(phone),
            known.recent + 1,
        )
    elif kind == InboundKind.HELP:
        reply = render_text(ctx, "sms_help", lang)
    elif kind == InboundKind.STATUS:
        reply, case = _status_reply(s, ctx, phone, intent.text, lang)
    elif kind == InboundKind.FOLLOWUP:
        assert known.open_case_id is not None  # the decision says so
        case = s.get(Case, known.open_case_id)
        assert case is not None
        add_citizen_message(s, ctx, case, intent.text, attachments)
        reply = render(ctx, "sms_followup", case)
    else:  # a new case, with a reply other than the one written beforehand (or none)
        outcome, _ = _new_case(s, ctx, msg, phone, intent.text, lang, attachments, known.opted_out)
        assert outcome is not None
        return outcome
    if known.opted_out and kind != InboundKind.OPT_IN:
        reply = None  # an opted-out citizen gets no text of any kind
    s.add(_stored(ctx, msg, phone, kind, case, lang, reply))
    s.commit()
    return Outcome(kind, reply, case)


def _stored(
    ctx: Ctx,
    msg: Inbound,
    phone: str,
    kind: InboundKind,
    case: Case | None,
    lang: str,
    reply: str | None,
) -> InboundMessage:
    """The row that keeps the text, what it meant and the answer (for the provider's
    retries)."""
    return built(
        InboundMessage,
        municipality=ctx.muni.code,
        provider_sid=msg.sid,
        from_phone=phone,
        to_phone=msg.to,
        body=msg.body,
        num_media=len(msg.media),
        received_at=msg.received_at or ctx.now,
        kind=kind.value,
        case_id=case.id if case else None,
        language=lang,
        reply=reply or "",
    )


def _new_case(
    s: Session,
    ctx: Ctx,
    msg: Inbound,
    phone: str,
    text: str,
    lang: str,
    attachments: list[NewAttachment],
    opted_out: bool,
    precondition: dict[str, Any] | None = None,
) -> tuple[Outcome | None, Mapping[str, Any]]:
    """Register the text as a case and commit it with the stored text and its reply at once
    (one statement on PostgreSQL: see cases.registration). With `precondition` (the values
    of the sender's look-up), only if `_new_case_precondition` holds: (None, the look-up)
    when it does not, and nothing is written."""

    def stored(case: Case) -> list[Base]:
        # An opted-out citizen gets no text of any kind.
        reply = None if opted_out else render(ctx, "registered", case)
        return [_stored(ctx, msg, phone, InboundKind.NEW_CASE, case, lang, reply)]

    done = register(
        s,
        ctx,
        linked=stored,
        commit=True,
        keep=False,  # the reply is all that is left to do
        when=(_new_case_precondition(), precondition) if precondition is not None else None,
        repeatable=True,
        channel="sms",
        text=text,
        phone=phone,
        language=lang,
        attachments=attachments,
        received_at=msg.received_at,
    )
    if not done.written:
        return None, done.looked_up
    (row,) = done.rows
    assert isinstance(row, InboundMessage)
    log.info("sms from %s registered as %s", mask_phone(phone), done.case.protocol)
    return Outcome(InboundKind.NEW_CASE, row.reply or None, done.case), done.looked_up


# ------------------------------------------------------------ while the register is away


def answer_while_away(ctx: Ctx, msg: Inbound) -> tuple[bool, str | None]:
    """What a text gets while the register cannot be reached: (keep it in the host's spool,
    the reply). Reports, follow-ups and opt-outs are kept and registered later, the number
    following by text; a status query is asked to try again; help needs no register."""
    rules = ctx.muni.sms
    intent = parse(msg.body, rules, msg.opt_out_type)
    lang = "en" if intent.english and "en" in ctx.muni.templates else ctx.muni.language
    if intent.kind == Kind.STATUS:
        return False, render_text(ctx, "sms_unavailable", lang)
    if intent.kind == Kind.HELP:
        return False, render_text(ctx, "sms_help", lang)
    if intent.kind in (Kind.OPT_OUT, Kind.OPT_IN):
        if intent.keyword in {w.upper() for w in rules.provider_keywords}:
            return True, None  # the provider answers its own keywords
        out = intent.kind == Kind.OPT_OUT
        return True, render_text(ctx, "sms_optout" if out else "sms_optin", lang)
    return True, render_text(ctx, "sms_spooled", lang)


def register_spooled(s: Session, ctx: Ctx, msg: Inbound) -> Outcome:
    """Register a text that waited in the spool, as if it had just arrived; the reply that
    carries its number (a new case's, or the case it follows up) is written to the outbox,
    once: run again for the same text, the register answers as to a provider's retry and the
    outbox refuses a second copy (`dedupe_key`). The text is committed here, the outbox row
    by the caller."""
    outcome = handle_inbound(s, ctx, msg)
    if outcome.kind not in (InboundKind.NEW_CASE, InboundKind.FOLLOWUP) or not outcome.reply:
        return outcome
    key = f"spool:sms:{msg.sid}"
    if s.scalar(select(OutboxMessage.id).where(OutboxMessage.dedupe_key == key)) is not None:
        return outcome
    case = outcome.case
    if case is None:  # a second try: the register answered as to a provider's retry
        case = s.get(
            Case,
            s.scalar(select(InboundMessage.case_id).where(InboundMessage.provider_sid == msg.sid)),
        )
    assert case is not None and case.phone is not None  # a new case or a follow-up has both
    template = "registered" if outcome.kind == InboundKind.NEW_CASE else "sms_followup"
    queue_text(s, ctx, case.phone, outcome.reply, template, case, case.language).dedupe_key = key
    return outcome
