"""Registration: a contact becomes a case with its protocol number. Every channel registers
through `register`, and nothing else writes a new case.

`prepare_case` decides everything about the new case in memory (text, category, routing,
history, attachments). `register` gives it its number and writes it, with the rows that
belong to it: the citizen's confirmation text, and what the channel links to it (the stored
inbound text and the reply that carries the number, say). Who commits is the caller's
choice, said once, at the call:

- `commit=False`: in the caller's transaction, through the ORM. The caller's unit of work
  (an Open311 request, with its key's use) commits the case with its own rows; if it fails,
  the number is given back. The year's counter row stays locked until that commit.
- `commit=True`: the registration is the whole unit of work and commits here. On PostgreSQL
  that is ONE autocommitted statement (`cases.onestatement`): the counter row is locked only
  while PostgreSQL runs it and flushes its commit, with no Python and no round trip in
  between; elsewhere (SQLite) through the ORM, number, flush, commit. With `when` (a
  `Precondition`), the look-up that decides whether to register at all runs inside that
  same statement.

A statement that fails (a duplicate provider id, a check) consumes no number. Rows rendered
before the number is known print the provisional number 0 (a number that never exists, see
the `number_positive` check); the database puts the real one in place of its two printed
forms (2026/0000000 and the URL form 2026-0000000), in the columns each model names in
`PRINTS_NUMBER` only (never in what a citizen wrote).

Either way, when `register` returns the case and its rows are in the session with their ids
(committed, with `commit=True`; on the one-statement path with `keep=False` they are returned
in no session instead), and what a worker must take up after the commit (texts, photos) is noted
for `cases.handoff`.

The case, its history and its attachments are built as plain rows (`cases.db.built`: the
values put straight into the instances, no attribute events), not tracked one attribute at a
time: the registration writes them whole (an inbound text's own CPU: about a quarter less).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, select
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from cases import handoff
from cases.classifier import Classifier
from cases.config import Municipality
from cases.db import Base, built, direct_connections
from cases.errors import Invalid
from cases.models import (
    Attachment,
    Case,
    CaseEvent,
    Channel,
    OutboxMessage,
    Status,
    User,
    format_protocol,
)
from cases.notify import Ctx, citizen_text
from cases.onestatement import DOLLAR, Shape, json_row, statement
from cases.phone import InvalidPhone, normalise_phone
from cases.protocol import ensure_counter, next_number, protocol_year, url_protocol
from cases.workflow import Outcome, due_for, system_step

PROVISIONAL = 0  # the number a case has until the database gives it one; never a real one
MAX_TEXT = 10_000

_CLASSIFIERS: dict[int, tuple[Municipality, Classifier]] = {}


def classifier_for(muni: Municipality) -> Classifier:
    """Built once per loaded configuration (the config object is immutable)."""
    hit = _CLASSIFIERS.get(id(muni))
    if hit is None or hit[0] is not muni:
        hit = _CLASSIFIERS[id(muni)] = (muni, Classifier(muni.categories))
    return hit[1]


@dataclass(frozen=True)
class NewAttachment:
    kind: str
    source_url: str
    content_type: str | None = None
    duration_seconds: int | None = None


def prepare_case(
    ctx: Ctx,
    *,
    channel: Channel | str,
    text: str,
    phone: str | None = None,
    category: str | None = None,
    language: str | None = None,
    actor: User | None = None,
    attachments: list[NewAttachment] | None = None,
    address: str | None = None,
    lat: float | None = None,
    long: float | None = None,
    registration_data: dict[str, Any] | None = None,
    received_at: datetime | None = None,
    intake_key: str | None = None,
) -> Case:
    """A new case as registration will write it, with its history (registration, automatic
    routing) and attachments, in memory: no number yet, nothing in any session.

    The date is taken here and the number when it is written, in one step with no operator
    in between (art. 53). `registration_data` joins the registration event's (staff-only)
    data, e.g. who sent it. `received_at`: when the contact reached us, if it waited in a
    host's spool while the register was away (the registration's date stays its own);
    `intake_key`: what makes a second registration of the same contact fail (a spooled call's
    CallSid, an Open311 client's idempotency key).
    """
    try:
        channel = Channel(channel)
    except ValueError:
        raise Invalid(f"unknown channel {channel!r}") from None
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        raise Invalid(f"the text is longer than {MAX_TEXT} characters")
    if "\x00" in text or (address and "\x00" in address):
        # PostgreSQL cannot store it (SQLite would): refused the same on every backend
        raise Invalid("the text or address holds a NUL character")
    if not text and not attachments:
        raise Invalid("a case needs a text or an attachment")
    e164: str | None = None
    if phone:
        try:
            e164 = normalise_phone(phone, ctx.muni.country)
        except InvalidPhone as exc:
            raise Invalid(str(exc)) from None
    elif channel == Channel.SMS:
        raise Invalid("a text needs the sender's number")  # a withheld caller may still report
    if category is not None and ctx.muni.category(category) is None:
        raise Invalid(f"unknown category {category!r}")
    lang = language if language in ctx.muni.templates else ctx.muni.language

    suggestion = classifier_for(ctx.muni).classify(text) if text else None
    if (
        category is None
        and suggestion
        and suggestion.category
        and suggestion.confidence >= ctx.muni.classifier_threshold
    ):
        category = suggestion.category

    year = protocol_year(ctx.now, ctx.muni.tz)
    case = built(
        Case,
        municipality=ctx.muni.code,
        year=year,
        registered_at=ctx.now,
        channel=channel.value,
        phone=e164,
        original_text=text,
        registered_by=actor.id if actor else None,
        language=lang,
        category=category,
        suggested_category=suggestion.category if suggestion else None,
        suggestion_confidence=suggestion.confidence if suggestion else None,
        status=Status.RECEIVED.value,
        updated_at=ctx.now,
        track_token=secrets.token_urlsafe(16),
        address=address,
        lat=lat,
        long=long,
        received_at=received_at if received_at is not None and received_at < ctx.now else None,
        intake_key=intake_key,
    )
    case.due_at = due_for(ctx, case)
    history: list[CaseEvent] = []
    system_step(
        None,
        ctx,
        case,
        "register",
        Outcome(
            Status.RECEIVED,
            note="",
            public=True,
            data={
                **(registration_data or {}),  # first: the register's own keys win
                "channel": channel.value,
                "suggested": case.suggested_category,
                "confidence": case.suggestion_confidence,
                "by": actor.name if actor else None,
            },
        ),
        actor=actor,
        history=history,
    )
    route = ctx.muni.category(category)
    if route is not None and ctx.muni.auto_assign:
        case.office = route.office
        system_step(
            None,
            ctx,
            case,
            "assign",
            Outcome(
                Status.ASSIGNED,
                data={"office": route.office, "category": category, "automatic": True},
            ),
            history=history,
        )
    # Built, not tracked: the registration writes the rows whole (see `_written`).
    set_committed_value(case, "events", history)
    set_committed_value(case, "attachments", [_attachment(ctx, a) for a in attachments or []])
    return case


def _attachment(ctx: Ctx, a: NewAttachment) -> Attachment:
    return built(
        Attachment,
        kind=a.kind,
        source_url=a.source_url,
        content_type=a.content_type,
        duration_seconds=a.duration_seconds,
        created_at=ctx.now,
    )


def add_attachment(ctx: Ctx, case: Case, a: NewAttachment) -> Attachment:
    """An attachment to a registered case (in the session: the row goes with it)."""
    row = _attachment(ctx, a)
    case.attachments.append(row)
    return row


@dataclass(frozen=True)
class Precondition:
    """A look-up of one row that runs inside the registration's own statement, and the
    condition on that row under which the case is registered.

    Built once per shape (`of`): `statement` is a SELECT of `ok` (the condition) and the
    look-up's labelled columns, usable on every backend; on PostgreSQL its compiled text
    becomes the first part of the registration's statement, so that looking up and
    registering are one round trip.
    """

    statement: Select[Any]
    sql: str  # `statement` for PostgreSQL, with $1.. placeholders
    names: tuple[str, ...]  # the parameter behind each placeholder, in order
    compiled_in: tuple[tuple[str, Any], ...]  # values SQLAlchemy keeps itself (limits, lists)
    columns: tuple[str, ...]  # the look-up's labels

    @classmethod
    def of(
        cls,
        lookup: Select[Any],
        holds: Callable[[ReadOnlyColumnCollection[str, Any]], ColumnElement[bool]],
    ) -> Precondition:
        """`lookup`: one row of labelled columns; `holds(columns)`: the condition on them
        (NULL counts as not holding)."""
        k = lookup.offset(0).subquery("k")  # OFFSET: looked up once, not once per use
        statement = select(holds(k.c).label("ok"), *k.c)
        # IN lists and limits are expanded into the text; the caller's parameters stand at
        # None for that, and come with each registration
        compiled = statement.compile(dialect=DOLLAR)
        blank = {name: None for name, b in compiled.binds.items() if b.required}
        expanded = compiled.construct_expanded_state(blank)
        names = tuple(expanded.positiontup or ())
        own = expanded.parameters
        return cls(
            statement=statement,
            sql=expanded.statement,
            names=names,
            compiled_in=tuple((n, own[n]) for n in names if own.get(n) is not None),
            columns=tuple(k.c.keys()),
        )


@dataclass
class Registered:
    """What `register` did: `case` (written, unless `written` is False because the
    precondition did not hold), the rows linked to it, and the precondition's look-up."""

    case: Case
    rows: list[Base] = field(default_factory=list)
    looked_up: dict[str, Any] = field(default_factory=dict)
    written: bool = True


def register(
    s: Session,
    ctx: Ctx,
    *,
    confirm: bool = False,
    linked: Callable[[Case], list[Base]] | None = None,
    commit: bool = False,
    when: tuple[Precondition, dict[str, Any]] | None = None,
    repeatable: bool = False,
    keep: bool = True,
    **fields: Any,
) -> Registered:
    """Register a contact as a case (`fields` are `prepare_case`'s; Invalid if they do not
    make one, before any number is taken).

    `confirm`: the citizen's text that confirms the registration with the number (to the
    case's phone, if it has one). `linked(case)`: more rows that belong to the case, made once
    the case is numbered (or holds `PROVISIONAL`, on the one-statement path); their `case_id`
    is filled in. `commit`: who commits (see the module). `when` (`commit=True` only): the
    precondition and its parameters; when it does not hold nothing is written. `repeatable`:
    the linked rows make a second run of the same registration fail (a provider's unique
    message id), so a statement whose connection failed may be sent again. `keep=False`
    (`commit=True` only): the caller does nothing more with the case in this session, so the
    written rows are returned as they are, in no session (on PostgreSQL: attaching them costs
    a text about a tenth of its CPU).
    """
    case = prepare_case(ctx, **fields)

    def rows(case: Case) -> list[Base]:
        own: list[Base] = []
        if confirm and case.phone:
            own.append(citizen_text(ctx, case, "registered"))
        return own + (linked(case) if linked else [])

    if not commit:
        if when is not None:
            raise ValueError("a precondition needs commit=True")
        return Registered(case, _written(s, case, rows))
    if s.new or s.dirty or s.deleted:
        raise RuntimeError("register(commit=True) commits: flush or commit other work first")
    if s.get_bind().dialect.name == "postgresql":
        return _in_one_statement(s, case, rows, when, repeatable, keep)
    looked: dict[str, Any] = {}
    if when is not None:
        pre, values = when
        looked = s.execute(pre.statement, values).one()._asdict()
        if not looked.pop("ok"):
            s.commit()
            return Registered(case, [], looked, written=False)
    made = _written(s, case, rows)
    s.commit()
    return Registered(case, made, looked)


def _written(s: Session, case: Case, linked: Callable[[Case], list[Base]]) -> list[Base]:
    """The ORM path: the case numbered and flushed, then its history, attachments and linked
    rows added with its id (prepared untracked, they are not the case's to cascade)."""
    events, attachments = list(case.events), list(case.attachments)
    set_committed_value(case, "events", [])
    set_committed_value(case, "attachments", [])
    write_case(s, case)
    rows = linked(case)
    for row in [*events, *attachments, *rows]:
        row.case_id = case.id  # type: ignore[attr-defined]
    s.add_all([*events, *attachments, *rows])
    set_committed_value(case, "events", events)
    set_committed_value(case, "attachments", attachments)
    return rows


def case_by_intake_key(s: Session, muni: Municipality, key: str) -> Case | None:
    """The case a contact's `intake_key` registered, if it was (a retry, a race, a crash)."""
    return s.scalar(select(Case).where(Case.municipality == muni.code, Case.intake_key == key))


def write_case(s: Session, case: Case) -> None:
    """Number a prepared case and flush it in the caller's transaction (the ORM path). The
    number is taken last: the counter row stays locked from there to the commit, so
    everything that can be prepared without it is prepared before."""
    s.add(case)
    with s.no_autoflush:
        case.number = next_number(s, case.municipality, case.year)
    s.flush()


def _printed(year: int, number: int) -> tuple[str, str]:
    return format_protocol(year, number), url_protocol(year, number)


def _in_one_statement(
    s: Session,
    case: Case,
    linked: Callable[[Case], list[Base]],
    when: tuple[Precondition, dict[str, Any]] | None,
    repeatable: bool,
    keep: bool,
) -> Registered:
    pre, values = when if when is not None else (None, {})
    case.number = PROVISIONAL
    rows = linked(case)
    events, attachments = list(case.events), list(case.attachments)
    provisional = _printed(case.year, PROVISIONAL)
    params: list[Any] = []
    if pre is not None:
        compiled_in = dict(pre.compiled_in)
        params.extend(values[n] if n in values else compiled_in[n] for n in pre.names)
    params += [case.municipality, case.year]
    shape = Shape(
        precondition=pre.sql if pre is not None else None,
        looked_up=len(pre.columns) if pre is not None else 0,
        case=json_row(params, case, ("number",)),
        events=tuple(json_row(params, e) for e in events),
        attachments=tuple(json_row(params, a) for a in attachments),
        linked=tuple(
            json_row(params, r, numbered=_numbered(r), provisional=provisional) for r in rows
        ),
    )

    if s.in_transaction():
        s.commit()  # end the read transaction: the statement commits on its own
    bind = s.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    direct = direct_connections(engine)
    sql = statement(shape)
    got = direct.fetchone(sql, params, repeatable=repeatable)
    looked = _looked_up(pre, got)
    if pre is not None and not got[0]:
        return Registered(case, [], looked, written=False)
    if got is None or (pre is not None and got[1 + shape.looked_up] is None):
        # the first registration of the year: the counter row is missing
        with engine.begin() as conn:
            ensure_counter(conn, case.municipality, case.year)
        got = direct.fetchone(sql, params, repeatable=repeatable)
        looked = _looked_up(pre, got)
        if pre is not None and not got[0]:
            return Registered(case, [], looked, written=False)
    # What the database wrote, in memory too, as loaded values (nothing for a session to
    # write): the ids, the number, and the texts that print it.
    ids = iter(got[1 + shape.looked_up :] if pre is not None else got)
    case_id = case.__dict__["id"] = next(ids)
    case.__dict__["number"] = next(ids)
    final = _printed(case.year, case.number)
    for obj in [case, *events, *attachments, *rows]:
        if obj is not case:
            obj.__dict__.update(id=next(ids), case_id=case_id)
        if keep:
            make_transient_to_detached(obj)  # as if loaded, history and attachments too
    for r in rows:
        for key in _numbered(r):
            v = r.__dict__.get(key)
            if isinstance(v, str):
                for old, new in zip(provisional, final, strict=True):
                    v = v.replace(old, new)
                r.__dict__[key] = v
    if keep:
        s.add(case)
        s.add_all(rows)
    for obj in [*attachments, *rows]:
        if isinstance(obj, Attachment | OutboxMessage):
            handoff.note(s, obj)
    return Registered(case, rows, looked)


def _numbered(row: Base) -> tuple[str, ...]:
    """The row's text columns that print the case's number (rendered from templates)."""
    return getattr(type(row), "PRINTS_NUMBER", ())


def _looked_up(pre: Precondition | None, got: Any) -> dict[str, Any]:
    if pre is None or got is None:
        return {}
    return dict(zip(pre.columns, got[1 : 1 + len(pre.columns)], strict=True))
