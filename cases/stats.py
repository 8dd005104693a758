"""Supervisor statistics: what came in (by week, channel, category, office), how fast it was
answered, what is overdue and with whom; plus a CSV writer for any list the console shows.

Definitions (the console and any report rely on them):
- "registered in the range": registration time in [start 00:00, end+1 00:00) local time; weeks
  are ISO weeks of the local date. Annulled registrations (art. 54: errors) are counted apart
  and left out of the other counts; duplicates are real contacts and stay in.
- "answered": status closed or not_competent (both end with a reply to the citizen), counted
  in the range when `closed_at` falls in it. A duplicate closed with its master is answered too.
  Time to close is `closed_at - registered_at`; median and 90th percentile use linear
  interpolation between the closest ranks (numpy's default, PostgreSQL's percentile_cont).
- "answered before the due date": `closed_at <= due_at`, as a share of the answered.
- "overdue": open now (received, assigned, in progress, resolved) with `due_at < now`,
  whatever the range; days overdue are whole days elapsed since the due date.

Counts by channel, category, office and status are one GROUP BY in SQL. On PostgreSQL the
local days and the time-to-close percentiles are computed by the database too (a year of a
large city stays well under a second, bench/scale.py); on SQLite, which knows no time zones,
they are computed here over a streamed column or two, so memory stays flat either way.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Date, cast, func, select
from sqlalchemy.orm import Session

from cases.models import (
    OPEN_STATUSES,
    Case,
    Channel,
    Status,
    User,
    format_protocol,
    status_in,
)

ROME = ZoneInfo("Europe/Rome")
UNCATEGORISED = "uncategorised"
UNROUTED = "unrouted"  # not yet assigned to an office: still with the URP
ANSWERED = (Status.CLOSED.value, Status.NOT_COMPETENT.value)
_OPEN = [s.value for s in OPEN_STATUSES]
_STREAM = 5_000  # rows fetched per round trip when streaming timestamps


@dataclass(frozen=True)
class WeekCount:
    """Cases registered in one ISO week (local time); `monday` is the week's first day."""

    week: str  # "2026-W11"
    monday: date
    count: int


@dataclass(frozen=True)
class OverdueCase:
    """An open case past its due date, and who holds it."""

    protocol: str
    status: str
    category: str | None
    office: str | None
    assignee: str | None
    due_at: datetime
    days_overdue: int

    @property
    def holder(self) -> str:
        """The operator holding it, or the office that has nobody on it yet."""
        return self.assignee or f"office {self.office or 'URP'}, unassigned"


@dataclass(frozen=True)
class Dashboard:
    """Everything the supervisor dashboard shows for one municipality and date range."""

    municipality: str
    start: date
    end: date
    now: datetime
    registered: int
    annulled: int
    answered: int
    still_open: int  # registered in the range and open now
    by_week: list[WeekCount]
    by_channel: dict[str, int]
    by_category: dict[str, int]
    by_office: dict[str, int]
    time_to_close_median: timedelta | None
    time_to_close_p90: timedelta | None
    answered_before_due: int
    share_answered_before_due: float | None  # None when nothing was answered
    overdue: list[OverdueCase] = field(default_factory=list)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between the closest ranks."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    pos = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _bounds(start: date, end: date, tz: tzinfo) -> tuple[datetime, datetime]:
    if end < start:
        raise ValueError("the range ends before it starts")
    lo = datetime.combine(start, time(), tzinfo=tz).astimezone(UTC)
    hi = datetime.combine(end + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)
    return lo, hi


def _iso_week(d: date) -> tuple[str, date]:
    y, w, _ = d.isocalendar()
    return f"{y}-W{w:02d}", d - timedelta(days=d.weekday())


def _grouped(s: Session, column: Any, where: list[ColumnElement[bool]]) -> dict[str, int]:
    rows = s.execute(select(column, func.count()).where(*where).group_by(column)).all()
    return {k: int(n) for k, n in rows}


def _local_days(s: Session, where: list[ColumnElement[bool]], tz: tzinfo) -> dict[date, int]:
    """Registrations per local date. PostgreSQL groups them itself (one row per day comes
    back); elsewhere (SQLite, no time zones) the timestamps are streamed and counted here."""
    key = getattr(tz, "key", None)
    if s.get_bind().dialect.name == "postgresql" and key:
        day = cast(func.timezone(key, Case.registered_at), Date)
        return {d: int(n) for d, n in s.execute(
            select(day, func.count()).where(*where).group_by(day))}  # fmt: skip
    days: Counter[date] = Counter()
    for at in s.scalars(
        select(Case.registered_at).where(*where).execution_options(yield_per=_STREAM)
    ):
        days[at.astimezone(tz).date()] += 1
    return days


def _answered(
    s: Session, where: list[ColumnElement[bool]]
) -> tuple[int, int, timedelta | None, timedelta | None]:
    """How many were answered, how many by their due date, and the median and 90th percentile
    of the time to close. PostgreSQL computes them (percentile_cont); elsewhere the durations
    are streamed and computed here, with the same interpolation."""
    if s.get_bind().dialect.name == "postgresql":
        secs = func.extract("epoch", Case.closed_at - Case.registered_at)
        n, late_free, med, high = s.execute(
            select(
                func.count(),
                func.count().filter(Case.closed_at <= Case.due_at),
                func.percentile_cont(0.5).within_group(secs),
                func.percentile_cont(0.9).within_group(secs),
            ).where(*where)
        ).one()
        if not n:
            return 0, 0, None, None
        return int(n), int(late_free), timedelta(seconds=float(med)), timedelta(seconds=float(high))
    hours: list[float] = []
    on_time = 0
    for registered_at, closed_at, due_at in s.execute(
        select(Case.registered_at, Case.closed_at, Case.due_at)
        .where(*where)
        .execution_options(yield_per=_STREAM)
    ):
        assert closed_at is not None  # filtered by the caller; tells the type checker
        hours.append((closed_at - registered_at).total_seconds() / 3600)
        on_time += closed_at <= due_at
    if not hours:
        return 0, 0, None, None
    hours.sort()
    return (len(hours), on_time, timedelta(hours=statistics.median(hours)),
            timedelta(hours=percentile(hours, 90)))  # fmt: skip


def dashboard(
    s: Session,
    muni_code: str,
    *,
    start: date,
    end: date,
    now: datetime,
    tz: tzinfo = ROME,
    overdue_limit: int = 1000,
) -> Dashboard:
    """The supervisor dashboard for cases of `muni_code` in [start, end] (local dates)."""
    lo, hi = _bounds(start, end, tz)
    mine = Case.municipality == muni_code
    registered_in = [mine, Case.registered_at >= lo, Case.registered_at < hi]
    counted = [*registered_in, Case.status != Status.ANNULLED.value]

    # One pass over the range's registrations, grouped by everything the counts need.
    category = func.coalesce(Case.category, UNCATEGORISED)
    office = func.coalesce(Case.office, UNROUTED)
    annulled = still_open = 0
    by_channel = dict.fromkeys((c.value for c in Channel), 0)
    by_category: Counter[str] = Counter()
    by_office: Counter[str] = Counter()
    for status, channel, cat, off, n in s.execute(
        select(Case.status, Case.channel, category, office, func.count())
        .where(*registered_in)
        .group_by(Case.status, Case.channel, category, office)
    ):
        if status == Status.ANNULLED.value:
            annulled += n
            continue
        still_open += n if status in _OPEN else 0
        by_channel[channel] = by_channel.get(channel, 0) + n
        by_category[cat] += n
        by_office[off] += n

    weeks: Counter[str] = Counter()
    for day, n in _local_days(s, counted, tz).items():
        weeks[_iso_week(day)[0]] += n
    by_week = []
    monday = _iso_week(start)[1]
    while monday <= end:
        key, _ = _iso_week(monday)
        by_week.append(WeekCount(key, monday, weeks.get(key, 0)))
        monday += timedelta(days=7)

    answered, on_time, median, p90 = _answered(
        s, [mine, Case.status.in_(ANSWERED), Case.closed_at >= lo, Case.closed_at < hi]
    )

    return Dashboard(
        municipality=muni_code,
        start=start,
        end=end,
        now=now,
        registered=sum(by_channel.values()),
        annulled=annulled,
        answered=answered,
        still_open=still_open,
        by_week=by_week,
        by_channel=by_channel,
        by_category=dict(sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0]))),
        by_office=dict(sorted(by_office.items(), key=lambda kv: (-kv[1], kv[0]))),
        time_to_close_median=median,
        time_to_close_p90=p90,
        answered_before_due=on_time,
        share_answered_before_due=on_time / answered if answered else None,
        overdue=overdue_cases(s, muni_code, now=now, limit=overdue_limit),
    )


def overdue_cases(
    s: Session, muni_code: str, *, now: datetime, limit: int = 1000
) -> list[OverdueCase]:
    """Open cases past their due date, most overdue first, with who holds them."""
    rows = s.execute(
        select(
            Case.year,
            Case.number,
            Case.status,
            Case.category,
            Case.office,
            Case.due_at,
            User.full_name,
            User.name,
        )  # columns, not cases: no history or attachments loaded for a list of a thousand
        .outerjoin(User, User.id == Case.assignee_id)
        .where(Case.municipality == muni_code, status_in(OPEN_STATUSES), Case.due_at < now)
        .order_by(Case.due_at, Case.id)
        .limit(limit)
    ).all()
    return [
        OverdueCase(
            protocol=format_protocol(year, number),
            status=status,
            category=category,
            office=office,
            assignee=(full or name) if name else None,
            due_at=due_at,
            days_overdue=(now - due_at).days,
        )
        for year, number, status, category, office, due_at, full, name in rows
    ]


# ---------------------------------------------------------------- CSV export

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell; text that a spreadsheet would run as a formula is defused with a quote."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value  # numbers stay numbers: -3 is not a formula
    if isinstance(value, timedelta):
        return round(value.total_seconds() / 3600, 2)
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def csv_chunks(
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    rows_per_chunk: int = 500,
) -> Iterator[str]:
    """Any list as CSV (header row first), `rows_per_chunk` rows at a time: a download of any
    length is sent as it is read, in constant memory. Rows are mappings keyed by column, or
    sequences."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([_cell(c) for c in columns])
    for i, row in enumerate(rows, start=1):
        if isinstance(row, Mapping):
            values = [row.get(c) for c in columns]
        else:
            values = list(row)
            if len(values) != len(columns):
                raise ValueError(f"a row has {len(values)} cells for {len(columns)} columns")
        writer.writerow([_cell(v) for v in values])
        if i % rows_per_chunk == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def to_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> str:
    """Any list as CSV in one string (see csv_chunks)."""
    return "".join(csv_chunks(columns, rows))
