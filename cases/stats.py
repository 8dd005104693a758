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

Counts by channel, category and office are GROUP BYs in SQL; week buckets and percentiles are
computed in Python over a streamed column or two, so memory stays flat however long the range.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from cases.models import OPEN_STATUSES, Case, Channel, Status, User

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

    annulled = int(
        s.scalar(
            select(func.count())
            .select_from(Case)
            .where(*registered_in, Case.status == Status.ANNULLED.value)
        )
        or 0
    )
    still_open = int(
        s.scalar(select(func.count()).select_from(Case).where(*counted, Case.status.in_(_OPEN)))
        or 0
    )
    by_channel = dict.fromkeys((c.value for c in Channel), 0)
    by_channel.update(_grouped(s, Case.channel, counted))
    category = func.coalesce(Case.category, UNCATEGORISED)
    by_category = _grouped(s, category, counted)
    by_office = _grouped(s, func.coalesce(Case.office, UNROUTED), counted)

    # Weeks: the local date of each registration, streamed (one timestamp per row).
    weeks: Counter[str] = Counter()
    for at in s.scalars(
        select(Case.registered_at).where(*counted).execution_options(yield_per=_STREAM)
    ):
        weeks[_iso_week(at.astimezone(tz).date())[0]] += 1
    by_week = []
    monday = _iso_week(start)[1]
    while monday <= end:
        key, _ = _iso_week(monday)
        by_week.append(WeekCount(key, monday, weeks.get(key, 0)))
        monday += timedelta(days=7)

    # Answered in the range: durations for the percentiles, and whether each was in time.
    hours: list[float] = []
    on_time = 0
    for registered_at, closed_at, due_at in s.execute(
        select(Case.registered_at, Case.closed_at, Case.due_at)
        .where(
            mine,
            Case.status.in_(ANSWERED),
            Case.closed_at >= lo,
            Case.closed_at < hi,
        )
        .execution_options(yield_per=_STREAM)
    ):
        assert closed_at is not None  # filtered above; tells the type checker
        hours.append((closed_at - registered_at).total_seconds() / 3600)
        on_time += closed_at <= due_at
    hours.sort()
    median = timedelta(hours=statistics.median(hours)) if hours else None
    p90 = timedelta(hours=percentile(hours, 90)) if hours else None

    return Dashboard(
        municipality=muni_code,
        start=start,
        end=end,
        now=now,
        registered=sum(by_channel.values()),
        annulled=annulled,
        answered=len(hours),
        still_open=still_open,
        by_week=by_week,
        by_channel=by_channel,
        by_category=dict(sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0]))),
        by_office=dict(sorted(by_office.items(), key=lambda kv: (-kv[1], kv[0]))),
        time_to_close_median=median,
        time_to_close_p90=p90,
        answered_before_due=on_time,
        share_answered_before_due=on_time / len(hours) if hours else None,
        overdue=overdue_cases(s, muni_code, now=now, limit=overdue_limit),
    )


def overdue_cases(
    s: Session, muni_code: str, *, now: datetime, limit: int = 1000
) -> list[OverdueCase]:
    """Open cases past their due date, most overdue first, with who holds them."""
    rows = s.execute(
        select(Case, User.full_name, User.name)
        .outerjoin(User, User.id == Case.assignee_id)
        .where(Case.municipality == muni_code, Case.status.in_(_OPEN), Case.due_at < now)
        .order_by(Case.due_at, Case.id)
        .limit(limit)
    ).all()
    return [
        OverdueCase(
            protocol=case.protocol,
            status=case.status,
            category=case.category,
            office=case.office,
            assignee=(full or name) if name else None,
            due_at=case.due_at,
            days_overdue=(now - case.due_at).days,
        )
        for case, full, name in rows
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


def to_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> str:
    """Any list as CSV (header row first): rows are mappings keyed by column, or sequences."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([_cell(c) for c in columns])
    for row in rows:
        if isinstance(row, Mapping):
            values = [row.get(c) for c in columns]
        else:
            values = list(row)
            if len(values) != len(columns):
                raise ValueError(f"a row has {len(values)} cells for {len(columns)} columns")
        writer.writerow([_cell(v) for v in values])
    return out.getvalue()
