"""Protocol numbering (DPR 445/2000 art. 57): progressive, gap-free, per municipality and year."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cases.errors import Invalid
from cases.models import Case, ProtocolCounter

# Built once (statement construction costs more than its execution's Python side).
_INCREMENT = (
    update(ProtocolCounter)
    .where(ProtocolCounter.municipality == bindparam("m"), ProtocolCounter.year == bindparam("y"))
    .values(last_number=ProtocolCounter.last_number + 1)
    .returning(ProtocolCounter.last_number)
)
_PROTOCOL = re.compile(r"^\s*(?:(\d{4})\s*[/\-. ]\s*)?0*(\d{1,7})\s*$")


def protocol_year(registered_at: datetime, tz: ZoneInfo) -> int:
    """The register's year: the calendar year in the municipality's own time zone."""
    return registered_at.astimezone(tz).year


def next_number(session: Session, municipality: str, year: int) -> int:
    """Take the next number inside the caller's transaction.

    The counter row is created if missing and then incremented with UPDATE ... RETURNING:
    the row lock serialises concurrent registrations, and a rollback gives the number back,
    so the sequence has no gaps (a database SEQUENCE would leave one per failed transaction).
    """
    increment, key = _INCREMENT, {"m": municipality, "y": year}
    # The row exists for all but the first registration of a year: one statement, not two,
    # while every other registration waits for this transaction.
    number = session.execute(increment, key).scalar_one_or_none()
    if number is not None:
        return int(number)
    ensure_counter(session, municipality, year)
    return int(session.execute(increment, key).scalar_one())


def ensure_counter(db: Session | Connection, municipality: str, year: int) -> None:
    """Create the year's counter row at 0 if it is missing (two registrations racing to
    create it both succeed: the loser's INSERT does nothing)."""
    values = {"municipality": municipality, "year": year, "last_number": 0}
    dialect = db.get_bind().dialect.name if isinstance(db, Session) else db.dialect.name
    if dialect == "postgresql":
        db.execute(postgresql.insert(ProtocolCounter).values(values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        db.execute(sqlite.insert(ProtocolCounter).values(values).on_conflict_do_nothing())
    else:  # pragma: no cover - other backends are not supported
        db.execute(insert(ProtocolCounter).values(values))


def parse_protocol(text: str, default_year: int | None = None) -> tuple[int, int]:
    """'2026/0000123', '2026-123', '123' (with default_year) -> (year, number)."""
    m = _PROTOCOL.match(text or "")
    if not m:
        raise Invalid(f"not a protocol number: {text[:40]!r}")
    year_s, number_s = m.groups()
    if year_s is None:
        if default_year is None:
            raise Invalid("the protocol number needs its year, as 2026/0000123")
        year = default_year
    else:
        year = int(year_s)
    number = int(number_s)
    if number < 1 or not 1990 <= year <= 9999:
        raise Invalid(f"not a protocol number: {text[:40]!r}")
    return year, number


def url_protocol(year: int, number: int) -> str:
    """The form used in URLs: 2026-0000123."""
    return f"{year}-{number:07d}"


def case_by_number(
    s: Session, municipality: str, year: int, number: int, *, lock: bool = False
) -> Case | None:
    """The municipality's case registered as number/year, if any."""
    q = select(Case).where(
        Case.municipality == municipality, Case.year == year, Case.number == number
    )
    if lock:
        q = q.with_for_update(of=Case)
    return s.scalar(q)
