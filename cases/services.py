"""The case register's operations: registration, look-ups, listings, staff accounts, sweeps."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    cast,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import TSQUERY, TSVECTOR
from sqlalchemy.orm import Session

from cases.config import Municipality
from cases.errors import Invalid, NotFound
from cases.models import (
    OPEN_STATUSES,
    Attachment,
    Case,
    JobLock,
    Role,
    StaffNotification,
    Status,
    User,
    format_protocol,
    status_in,
)
from cases.notify import Ctx, notify_staff, office_queue_staff, staff_of
from cases.phone import InvalidPhone, normalise_phone
from cases.protocol import case_by_number, parse_protocol, protocol_year
from cases.registration import MAX_TEXT, NewAttachment, add_attachment
from cases.workflow import Outcome, can_view, system_step, visible_to


def add_citizen_message(
    s: Session,
    ctx: Ctx,
    case: Case,
    text: str,
    attachments: list[NewAttachment] | None = None,
    source: str = "sms",
) -> None:
    """A citizen wrote again about an open case: the text joins its history, staff are told."""
    for a in attachments or []:
        add_attachment(ctx, case, a)
    system_step(
        s, ctx, case, "citizen_message",
        Outcome(None, note=text[:MAX_TEXT], public=True,
                data={"source": source, "attachments": len(attachments or [])}),
    )  # fmt: skip
    who = [case.assignee] if case.assignee else office_queue_staff(s, ctx, case.office)
    notify_staff(
        s, ctx, who, "citizen_message", case, f"{case.protocol}: nuovo messaggio dal cittadino"
    )


def status_values(names: Iterable[str]) -> list[str]:
    """Status names as stored, with "open" standing for every open status (the filters of
    the API and the console)."""
    out: list[str] = []
    for name in names:
        if name == "open":
            out.extend(x.value for x in OPEN_STATUSES)
        else:
            out.append(name)
    return out


def latest_open_case_query(
    muni: str | ColumnElement[str],
    phone: str | ColumnElement[str],
    since: datetime | ColumnElement[datetime],
) -> Select[Any]:
    """The citizen's most recent open case with activity since `since` (the follow-up
    window), as a query to combine with others in one round trip (values or bound
    parameters)."""
    return (
        select(Case)
        .where(
            Case.municipality == muni,
            Case.phone == phone,
            status_in(OPEN_STATUSES),
            Case.updated_at >= since,
        )
        .order_by(Case.updated_at.desc(), Case.id.desc())
        .limit(1)
    )


def find_case(s: Session, ctx: Ctx, protocol: str, *, lock: bool = False) -> Case | None:
    """The municipality's case by protocol number ('2026/0000123', '2026-123', '123')."""
    year, number = parse_protocol(protocol, protocol_year(ctx.now, ctx.muni.tz))
    return case_by_number(s, ctx.muni.code, year, number, lock=lock)


def case_for(s: Session, ctx: Ctx, actor: User, protocol: str, *, lock: bool = False) -> Case:
    """The case if this actor may see it; NotFound otherwise (another office's case included)."""
    case = find_case(s, ctx, protocol, lock=lock)
    if case is None or not can_view(actor, case):
        raise NotFound(f"no case {protocol}")
    return case


@dataclass(frozen=True)
class CaseFilter:
    status: list[str] | None = None
    office: str | None = None
    category: str | None = None
    assignee: str | None = None
    channel: str | None = None
    text: str | None = None
    phone: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    overdue: bool | None = None


def _visible(actor: User) -> Select[Any]:
    return select(Case).where(visible_to(actor))


MAX_SEARCH_WORDS = 8


def search_words(text: str | None) -> list[str]:
    """The words of a search, lower case (at most MAX_SEARCH_WORDS; punctuation between them
    ignored)."""
    return re.findall(r"\w+", (text or "").lower())[:MAX_SEARCH_WORDS]


COUNT_CAP = 1000  # a list's total is counted up to this; beyond, "more than 1,000"
SEARCH_WINDOW = 5_000  # a word search reads the newest cases first, this many
SEARCH_DEEPEST = 50_000  # and further back, up to this many, when they promise enough matches
RANKED = 100  # the newest matches of a word search, ranked by closeness (PostgreSQL)


@dataclass(frozen=True)
class Found:
    """A page of a filtered list: its cases, how many match (counted up to COUNT_CAP) and
    whether more may match than that (then `total` is a lower bound)."""

    cases: list[Case]
    total: int
    more: bool


def _mentions(word: str, c: Any = Case) -> ColumnElement[bool]:
    """SQLite's search (the embedded default, a municipality's register at most): the case's
    text or address holds `word` (any case; `word` is lower case) anywhere in a word, or, for
    a word of one or two letters (a house number, say), at the start of a word."""
    w = word.replace("_", "\\_")  # \w+ holds no wildcard but "_"
    patterns = [f"%{w}%"] if len(word) >= 3 else [f"{w}%", f"% {w}%"]
    return or_(*(col.ilike(p, escape="\\") for col in (c.original_text, c.address)
                 for p in patterns))  # fmt: skip


SEARCH_CONFIG = "ld_italian"  # migration 0010: Italian stemming, accents ignored
# the case's text and address as PostgreSQL's full-text search reads them (a stored column of
# PostgreSQL's only, indexed by ix_cases_search; not mapped: SQLite has none)
SEARCH_VECTOR = literal_column("cases.search_vector", TSVECTOR)


def full_text_query(s: Session, words: list[str]) -> str | None:
    """PostgreSQL's search for every word, as the text of a tsquery: each word by its Italian
    stem, so that the singular finds the plural ("lampione", "lampioni") and accents do not
    matter ("citta", "città"); a number as itself (via Roma 2 is not via Roma 21). Whole
    words, not prefixes: a prefix is a union of many index lists, which made a search of a
    street and a house number take seconds at ten million cases. None when no word is left
    to look for (only words like "di" or "il", which Italian full-text search ignores)."""
    parts = [p for w in words for p in re.findall(r"[^\W_]+", w)]
    if not parts:
        return None
    got = s.scalar(select(cast(func.plainto_tsquery(literal_column(f"'{SEARCH_CONFIG}'"),
                                                    " ".join(parts)), String)))  # fmt: skip
    return got or None


def _filtered(actor: User, ctx: Ctx, f: CaseFilter) -> Select[Any]:
    """The cases this actor may see, with every filter but the words."""
    q = _visible(actor)
    if f.status:
        bad = [x for x in f.status if x not in Status.__members__.values()]
        if bad:
            raise Invalid(f"unknown status {bad[0]!r}")
        q = q.where(Case.status.in_(f.status))
    if f.office:
        q = q.where(Case.office == f.office)
    if f.category:
        q = q.where(Case.category == f.category)
    if f.channel:
        q = q.where(Case.channel == f.channel)
    if f.assignee:
        q = q.join(User, User.id == Case.assignee_id).where(User.name == f.assignee)
    if f.phone:
        try:
            q = q.where(Case.phone == normalise_phone(f.phone, ctx.muni.country))
        except InvalidPhone as exc:
            raise Invalid(str(exc)) from None
    tz = ctx.muni.tz
    if f.date_from:
        q = q.where(Case.registered_at >= datetime.combine(f.date_from, time(), tzinfo=tz))
    if f.date_to:
        end = datetime.combine(f.date_to + timedelta(days=1), time(), tzinfo=tz)
        q = q.where(Case.registered_at < end)
    if f.overdue:
        q = q.where(status_in(OPEN_STATUSES), Case.due_at < ctx.now)
    return q


_NEWEST = (Case.registered_at.desc(), Case.id.desc())


def list_cases(
    s: Session,
    ctx: Ctx,
    actor: User,
    f: CaseFilter,
    *,
    page: int = 1,
    per_page: int = 50,
    after: str | None = None,
) -> Found:
    """Cases this actor may see, filtered, newest first (a word search: its closest matches
    first among the newest RANKED, on PostgreSQL). The total is counted up to COUNT_CAP.
    `after` (a protocol number) continues the list after that case, at the cost of the first
    page however far it goes (keyset pagination; not with words, whose order is ranked)."""
    q = _filtered(actor, ctx, f)
    offset = (page - 1) * per_page
    words = search_words(f.text)
    if after is not None:
        if words or page != 1:
            raise Invalid("'after' continues the newest-first list: not with q or page")
        try:
            anchor = case_for(s, ctx, actor, after)
        except NotFound:
            raise Invalid(f"no case {after[:40]!r} to continue the list after") from None
        q = q.where(tuple_(Case.registered_at, Case.id) < tuple_(anchor.registered_at, anchor.id))
    if words:
        return _word_search(s, q, words, offset, per_page)
    counted = s.scalar(
        select(func.count()).select_from(
            q.with_only_columns(Case.id).limit(COUNT_CAP + 1).subquery()
        )
    )
    n = int(counted or 0)
    rows = s.scalars(q.order_by(*_NEWEST).offset(offset).limit(per_page)).all()
    return Found(list(rows), min(n, COUNT_CAP), n > COUNT_CAP)


def _word_search(s: Session, q: Select[Any], words: list[str], offset: int, limit: int) -> Found:
    """Cases holding every word, newest first, at any size of the register. The newest
    SEARCH_WINDOW cases are read first: when they hold the RANKED (or the page's) newest
    matches, those are the answer, and the total says "at least" (a common word). When they
    hold some, the newest cases are read further back, as far as their share of matches
    promises enough of them (up to SEARCH_DEEPEST: a word in one case of a few hundred,
    which its index would answer only by fetching every one of its matches). Otherwise
    the full-text index is asked for every match (rarer words, or a rare combination of
    common ones: the index intersects the words' lists), counted up to COUNT_CAP. On
    PostgreSQL the newest RANKED are then ordered by closeness (ts_rank_cd: the words side by
    side first), the newest first among equals."""
    pg = s.get_bind().dialect.name == "postgresql"
    if pg:
        asked = full_text_query(s, words)
        if asked is None:
            return Found([], 0, False)
        tsquery = cast(asked, TSQUERY)

        def matching(c: Any) -> ColumnElement[bool]:
            return c.search_vector.op("@@")(tsquery)

        held: tuple[Any, ...] = (SEARCH_VECTOR.label("search_vector"),)
    else:

        def matching(c: Any) -> ColumnElement[bool]:
            return and_(*(_mentions(w, c) for w in words))

        held = (Case.original_text, Case.address)
    whole = SimpleNamespace(search_vector=SEARCH_VECTOR, original_text=Case.original_text,
                            address=Case.address)  # fmt: skip
    need = max(RANKED, offset + limit)

    def newest(n: int) -> list[int]:
        window = (
            q.with_only_columns(Case.id, Case.registered_at, *held)
            .order_by(*_NEWEST)
            .limit(n)
            .subquery()
        )
        return list(
            s.scalars(
                select(window.c.id)
                .where(matching(window.c))
                .order_by(window.c.registered_at.desc(), window.c.id.desc())
                .limit(need)
            )
        )

    ids = newest(SEARCH_WINDOW)
    if 0 < len(ids) < need:
        # as many matches as the window's share promises, with a margin, if not too far
        deeper = SEARCH_WINDOW * need * 3 // (2 * len(ids))
        if deeper <= SEARCH_DEEPEST:
            ids = newest(deeper)
    more = len(ids) >= need  # enough among the newest: older ones may match too
    if not more:
        # every match, found through the index, then sorted (MATERIALIZED: PostgreSQL
        # must not walk the register newest first looking for a rare word)
        every = (
            q.with_only_columns(Case.id.label("id"), Case.registered_at.label("at"))
            .where(matching(whole))
            .cte("matches")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        ids = list(
            s.scalars(select(every.c.id).order_by(every.c.at.desc(), every.c.id.desc())
                      .limit(COUNT_CAP + 1))
        )  # fmt: skip
        more = len(ids) > COUNT_CAP
    ids = ids[:COUNT_CAP]
    if pg and offset < RANKED and ids:
        pool = ids[:RANKED]
        closeness = func.ts_rank_cd(SEARCH_VECTOR, tsquery)
        ranked = list(s.scalars(select(Case.id).where(Case.id.in_(pool))
                                .order_by(closeness.desc(), *_NEWEST)))  # fmt: skip
        ids = ranked + ids[RANKED:]
    shown = ids[offset : offset + limit]
    if more and offset + limit > len(ids):  # past the counted matches: newest first
        rows = s.scalars(q.where(matching(whole)).order_by(*_NEWEST)
                         .offset(offset).limit(limit)).all()  # fmt: skip
        return Found(list(rows), len(ids), more)
    by_id = {c.id: c for c in s.scalars(select(Case).where(Case.id.in_(shown)))}
    return Found([by_id[i] for i in shown if i in by_id], len(ids), more)


def other_open_cases(
    s: Session, case: Case, within: ColumnElement[bool], limit: int = 10
) -> list[Case]:
    """The same citizen's other open cases, newest first, among those `within` admits (a
    viewer's `visible_to`, or `visible_to_office` for what an office's staff are sent)."""
    if not case.phone:
        return []
    return list(
        s.scalars(
            select(Case)
            .where(
                within,
                Case.municipality == case.municipality,
                Case.phone == case.phone,
                Case.id != case.id,
                status_in(OPEN_STATUSES),
            )
            .order_by(Case.registered_at.desc())
            .limit(limit)
        )
    )


# ---------------------------------------------------------------- staff accounts


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def is_email(value: str) -> bool:
    """Shaped like an e-mail address (one @, a dot in the domain, no spaces)."""
    return bool(_EMAIL.fullmatch(value))


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(
    s: Session,
    ctx: Ctx,
    name: str,
    role: str,
    office: str | None = None,
    full_name: str = "",
    phone: str | None = None,
    email: str | None = None,
) -> tuple[User, str]:
    """Create a staff account; returns it with its API token (shown once, stored hashed)."""
    try:
        r = Role(role)
    except ValueError:
        raise Invalid(f"unknown role {role!r}; roles: {', '.join(x.value for x in Role)}") from None
    if not name or len(name) > 120:
        raise Invalid("a user needs a name of at most 120 characters")
    if r in (Role.REFERENT, Role.OPERATOR) and not office:
        raise Invalid(f"a {r.value} needs --office")
    if office and ctx.muni.office(office) is None:
        raise Invalid(f"unknown office {office!r} in {ctx.muni.code}")
    if s.scalar(select(User).where(User.municipality == ctx.muni.code, User.name == name)):
        raise Invalid(f"user {name!r} already exists in {ctx.muni.code}")
    if email is not None and (len(email) > 200 or not is_email(email.strip())):
        raise Invalid(f"{email[:60]!r} is not an e-mail address")
    try:
        staff_phone = normalise_phone(phone, ctx.muni.country) if phone else None
    except InvalidPhone as exc:
        raise Invalid(f"--phone: {exc}") from None
    token = secrets.token_urlsafe(32)
    user = User(
        municipality=ctx.muni.code,
        name=name,
        full_name=full_name,
        role=r.value,
        office=office,
        phone=staff_phone,
        email=email.strip() if email else None,
        token_hash=hash_token(token),
        active=True,
        created_at=ctx.now,
    )
    s.add(user)
    s.flush()
    return user, token


def user_by_token(s: Session, token: str) -> User | None:
    if not token:
        return None
    user = s.scalar(select(User).where(User.token_hash == hash_token(token)))
    return user if user and user.active else None


def notifications_for(
    s: Session,
    user: User,
    *,
    unread_only: bool = False,
    after_id: int | None = None,
    limit: int = 200,
) -> list[StaffNotification]:
    """The user's notifications, newest first (only those after `after_id`, if given)."""
    q = select(StaffNotification).where(StaffNotification.user_id == user.id)
    if unread_only:
        q = q.where(StaffNotification.read_at.is_(None))
    if after_id is not None:
        q = q.where(StaffNotification.id > after_id)
    return list(s.scalars(q.order_by(StaffNotification.id.desc()).limit(limit)))


def unread_notifications(s: Session, user: User) -> tuple[int, int | None]:
    """How many notifications the user has not read, and the newest one's id."""
    count, newest = s.execute(
        select(func.count(), func.max(StaffNotification.id)).where(
            StaffNotification.user_id == user.id, StaffNotification.read_at.is_(None)
        )
    ).one()
    return int(count), newest


# ---------------------------------------------------------------- periodic jobs


def take_lease(s: Session, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """A lease row so a periodic job runs once at a time across hosts; True if we hold it."""
    if s.get(JobLock, name) is None:
        s.add(JobLock(name=name, holder=holder, until=now - timedelta(seconds=1)))
        try:
            s.flush()
        except Exception:
            s.rollback()
    res = s.execute(
        update(JobLock)
        .where(JobLock.name == name, or_(JobLock.until < now, JobLock.holder == holder))
        .values(holder=holder, until=now + ttl)
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]


def flag_overdue(s: Session, ctx: Ctx, limit: int = 500) -> list[Case]:
    """Flag open cases past their due date, once each, and tell the supervisors."""
    due = s.scalars(
        select(Case)
        .where(
            Case.municipality == ctx.muni.code,
            status_in(OPEN_STATUSES),
            Case.due_at < ctx.now,
            Case.overdue_flagged_at.is_(None),
        )
        .order_by(Case.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Case)
    ).all()
    supervisors = staff_of(s, ctx.muni.code, roles=(Role.SUPERVISOR,))
    for case in due:
        case.overdue_flagged_at = ctx.now
        holder = case.assignee.display_name if case.assignee else (case.office or "URP")
        system_step(
            s, ctx, case, "overdue", Outcome(None, note=f"scaduto il {case.due_at:%d/%m/%Y}")
        )
        notify_staff(
            s,
            ctx,
            supervisors,
            "overdue",
            case,
            f"{case.protocol} scaduto ({case.status}, presso {holder})",
            {"office": case.office, "holder": holder},
        )
    return list(due)


# ---------------------------------------------------------------- daily register


REGISTER_COLUMNS = (
    "protocol",
    "registered_at",
    "channel",
    "sender",
    "registered_by",
    "subject",
    "text",
    "attachments",
    "annulled",
    "annulled_at",
    "annulled_by",
    "annul_reason",
)


def daily_register(s: Session, muni: Municipality, day: date) -> list[dict[str, Any]]:
    """The registro giornaliero: every registration of that local day, in number order."""
    tz = muni.tz
    start = datetime.combine(day, time(), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
    attachments = (
        select(func.count()).where(Attachment.case_id == Case.id).scalar_subquery().label("n")
    )  # columns and a count, not cases: no history loaded for a day of a large city
    rows = s.execute(
        select(
            Case.year, Case.number, Case.registered_at, Case.channel, Case.phone,
            Case.registered_by, Case.category, Case.original_text, Case.status,
            Case.annulled_at, Case.annulled_by, Case.annul_reason, attachments,
        )
        .where(
            Case.municipality == muni.code, Case.registered_at >= start, Case.registered_at < end
        )
        .order_by(Case.year, Case.number)
    ).all()  # fmt: skip
    users = {u.id: u.name for u in s.scalars(select(User).where(User.municipality == muni.code))}
    return [
        {
            "protocol": format_protocol(c.year, c.number),
            "registered_at": c.registered_at.astimezone(tz).isoformat(timespec="seconds"),
            "channel": c.channel,
            "sender": c.phone or "",
            "registered_by": users.get(c.registered_by or -1, "sistema"),
            "subject": c.category or "",
            "text": c.original_text,
            "attachments": int(c.n),
            "annulled": c.status == Status.ANNULLED,
            "annulled_at": c.annulled_at.astimezone(tz).isoformat(timespec="seconds")
            if c.annulled_at
            else "",
            "annulled_by": users.get(c.annulled_by or -1, "") if c.annulled_at else "",
            "annul_reason": c.annul_reason or "",
        }
        for c in rows
    ]
