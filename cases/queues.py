"""The work lists staff see: URP triage, an office's queue, an operator's cases, and helpers
the case page needs (similar open cases, operators' load, the SMS thread)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select, tuple_
from sqlalchemy.orm import Session

from cases.classifier import tokens
from cases.errors import Forbidden, Invalid
from cases.models import (
    OPEN_STATUSES,
    ROUTED_OPEN,
    Case,
    InboundMessage,
    OutboxMessage,
    Role,
    Status,
    User,
    format_protocol,
    overdue,
    status_in,
)
from cases.notify import Ctx

TRIAGE_ROLES = frozenset({Role.URP, Role.SUPERVISOR, Role.ADMIN})
OFFICE_ROLES = frozenset({Role.REFERENT, Role.SUPERVISOR, Role.ADMIN})
OWN_CASE_ROLES = frozenset({Role.OPERATOR, Role.REFERENT})  # who holds cases of their own
STATS_ROLES = frozenset({Role.SUPERVISOR, Role.ADMIN})
REGISTER_ROLES = frozenset({Role.URP, Role.SUPERVISOR, Role.ADMIN})


def require_role(actor: User, roles: frozenset[Role], refusal: str) -> None:
    """Forbidden with `refusal` unless the actor has one of `roles`."""
    if actor.role not in roles:
        raise Forbidden(refusal)


def _require(actor: User, roles: frozenset[Role], what: str) -> None:
    require_role(actor, roles, f"a {actor.role} has no {what}")


PAGE_SIZE = 50  # cases per page of a work list; the CSV export holds them all


@dataclass(frozen=True)
class WorkList:
    """Which cases a work list holds (`where`) and in which order (`key`, then the id)."""

    where: tuple[ColumnElement[bool], ...]
    key: Any
    municipality: str


@dataclass(frozen=True)
class Page:
    """One page of a work list: its cases, how many the list holds in all, and the id of the
    last case shown when more follow (the next page starts after it: keyset pagination, so
    page 200 costs what page 1 costs)."""

    cases: list[Case]
    total: int
    after: int | None


def page(s: Session, wl: WorkList, after: int | None = None, limit: int = PAGE_SIZE) -> Page:
    """The `limit` cases of the list that follow the case `after` (from the start if None).
    Each list is answered by its own index (migration 0008), in order, without a sort."""
    total = int(s.scalar(select(func.count()).select_from(Case).where(*wl.where)) or 0)
    q = select(Case).where(*wl.where)
    if after is not None:
        anchor = s.execute(
            select(wl.key, Case.id).where(Case.id == after, Case.municipality == wl.municipality)
        ).one_or_none()
        if anchor is None:
            raise Invalid(f"no case {after} to continue the list after")
        q = q.where(tuple_(wl.key, Case.id) > tuple_(*anchor))
    rows = list(s.scalars(q.order_by(wl.key, Case.id).limit(limit + 1)))
    more = len(rows) > limit
    return Page(rows[:limit], total, rows[limit - 1].id if more else None)


@dataclass(frozen=True)
class ExportRow:
    """A case as a list's CSV shows it: columns, read without the case's history."""

    protocol: str
    registered_at: datetime
    channel: str
    status: str
    category: str | None
    office: str | None
    assignee: str | None
    due_at: datetime
    text: str

    def is_overdue(self, now: datetime) -> bool:
        return overdue(self.status, self.due_at, now)

    @classmethod
    def of(cls, case: Case) -> ExportRow:
        assignee = case.assignee.name if case.assignee else None
        return cls(case.protocol, case.registered_at, case.channel, case.status, case.category,
                   case.office, assignee, case.due_at, case.original_text)  # fmt: skip


def everything(s: Session, wl: WorkList, chunk: int = 1000) -> Iterator[ExportRow]:
    """Every case of the list in its order, as columns, read `chunk` at a time, each chunk in
    its own short read (the CSV export: memory stays flat however long the list, and no
    transaction stays open while a slow client downloads; on SQLite, writers never wait)."""
    last: tuple[Any, int] | None = None
    columns = (Case.year, Case.number, Case.registered_at, Case.channel, Case.status,
               Case.category, Case.office, User.name, Case.due_at, Case.original_text,
               wl.key.label("k"), Case.id)  # fmt: skip
    while True:
        q = select(*columns).outerjoin(User, User.id == Case.assignee_id).where(*wl.where)
        if last is not None:
            q = q.where(tuple_(wl.key, Case.id) > tuple_(*last))
        rows = s.execute(q.order_by(wl.key, Case.id).limit(chunk)).all()
        s.rollback()  # only reads were made: ends the read before the rows are sent
        for r in rows:
            yield ExportRow(format_protocol(r[0], r[1]), *r[2:10])
        if len(rows) < chunk:
            return
        last = (rows[-1].k, rows[-1].id)


def triage(actor: User) -> WorkList:
    """New cases waiting for URP to route them, oldest first (first in, first out)."""
    _require(actor, TRIAGE_ROLES, "triage inbox")
    where = (Case.municipality == actor.municipality, Case.status == Status.RECEIVED.value)
    return WorkList(where, Case.registered_at, actor.municipality)


def to_close(actor: User) -> WorkList:
    """Cases the offices resolved and URP must close with a reply to the citizen."""
    _require(actor, TRIAGE_ROLES, "list of cases to close")
    where = (Case.municipality == actor.municipality, Case.status == Status.RESOLVED.value)
    return WorkList(where, Case.updated_at, actor.municipality)


def queue_office(actor: User, requested: str | None) -> str | None:
    """The office whose queue the actor sees: a referent always their own; others the one
    they ask for (None: every office)."""
    return actor.office if actor.role == Role.REFERENT else requested


def office_queue(actor: User, office: str | None = None) -> WorkList:
    """An office's open cases, the closest due date first. Referents see their own office."""
    _require(actor, OFFICE_ROLES, "office queue")
    office = queue_office(actor, office)
    where = [Case.municipality == actor.municipality, status_in(ROUTED_OPEN)]
    if office:
        where.append(Case.office == office)
    return WorkList(tuple(where), Case.due_at, actor.municipality)


def my_cases(actor: User) -> WorkList:
    """The open cases an operator holds, the closest due date first."""
    where = (
        Case.municipality == actor.municipality,
        Case.assignee_id == actor.id,
        status_in(OPEN_STATUSES),
    )
    return WorkList(where, Case.due_at, actor.municipality)


@dataclass(frozen=True)
class Load:
    user: User
    open_cases: int
    overdue: int


def operator_load(s: Session, ctx: Ctx, office: str) -> list[Load]:
    """Each active operator (and referent) of the office with the open cases they hold."""
    staff = s.scalars(
        select(User)
        .where(
            User.municipality == ctx.muni.code,
            User.office == office,
            User.active.is_(True),
            User.role.in_([Role.OPERATOR.value, Role.REFERENT.value]),
        )
        .order_by(User.role, User.name)  # operators before referents
    ).all()
    if not staff:
        return []
    loads = {
        who: (open_, late)
        for who, open_, late in s.execute(
            select(
                Case.assignee_id,
                func.count(),
                func.count().filter(Case.due_at < ctx.now),
            )
            .where(Case.assignee_id.in_([u.id for u in staff]), status_in(OPEN_STATUSES))
            .group_by(Case.assignee_id)
        ).all()
    }
    out = []
    for u in staff:
        open_, late = loads.get(u.id, (0, 0))
        out.append(Load(u, int(open_), int(late)))
    return out


# ---------------------------------------------------------------- duplicates


def _words(text: str) -> set[str]:
    """The stemmed content words (the classifier's), so 'lampione' meets 'lampioni'."""
    return set(tokens(text))


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 6_371_000 * 2 * math.asin(math.sqrt(h))


@dataclass(frozen=True)
class Similar:
    case: Case
    score: float
    metres: float | None
    shared_words: list[str]


def similar_open_cases(
    s: Session,
    ctx: Ctx,
    case: Case,
    within: ColumnElement[bool],
    *,
    limit: int = 8,
    days: int = 90,
) -> list[Similar]:
    """Open cases that may report the same problem: nearby, same category, shared words;
    among those `within` admits (the viewer's `visible_to`)."""
    candidates = s.scalars(
        select(Case)
        .where(
            within,
            Case.municipality == case.municipality,
            Case.id != case.id,
            status_in(OPEN_STATUSES),
            Case.registered_at >= ctx.now - timedelta(days=days),
        )
        .order_by(Case.registered_at.desc())
        .limit(1000)
    ).all()
    mine = _words(f"{case.original_text} {case.address or ''}")
    here = (case.lat, case.long) if case.lat is not None and case.long is not None else None
    category = case.category or case.suggested_category
    out = []
    for c in candidates:
        shared = sorted(mine & _words(f"{c.original_text} {c.address or ''}"))
        score = 2.0 * len(shared)
        if category and category in (c.category, c.suggested_category):
            score += 3.0
        metres = None
        if here and c.lat is not None and c.long is not None:
            metres = _metres(here, (c.lat, c.long))
            if metres <= 300:
                score += 6.0 * (1 - metres / 300) + 2.0
        if score >= 4.0:
            out.append(Similar(c, score, metres, shared[:6]))
    out.sort(key=lambda x: (-x.score, -x.case.id))
    return out[:limit]


# ---------------------------------------------------------------- SMS thread


@dataclass(frozen=True)
class ThreadEntry:
    at: datetime
    direction: str  # "in" from the citizen, "out" to the citizen
    body: str
    status: str  # inbound: its kind; outbound: pending/sent/... and the delivery status
    error: str | None = None


def sms_thread(s: Session, case: Case) -> list[ThreadEntry]:
    """The texts exchanged with the citizen about this case, in time order."""
    entries = [
        ThreadEntry(m.received_at, "in", m.body, m.kind)
        for m in s.scalars(select(InboundMessage).where(InboundMessage.case_id == case.id))
    ]
    for o in s.scalars(select(OutboxMessage).where(OutboxMessage.case_id == case.id)):
        status = o.delivery_status or o.status
        entries.append(
            ThreadEntry(o.sent_at or o.created_at, "out", o.body, status, o.error or o.error_code)
        )
    entries.sort(key=lambda e: e.at)
    return entries
