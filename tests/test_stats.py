"""Supervisor statistics against hand-computed values, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cases.config import Municipality
from cases.db import transaction
from cases.models import Case, User
from cases.notify import Ctx
from cases.registration import register
from cases.services import create_user
from cases.stats import Dashboard, dashboard, percentile, to_csv
from cases.workflow import perform

ROME = ZoneInfo("Europe/Rome")
NEUTRAL = "Problema in via Verdi 3 da una settimana, nessuno interviene"  # the classifier abstains
START, END = date(2026, 3, 2), date(2026, 3, 22)  # Monday of ISO week 10 to Sunday of week 12
NOW = datetime(2026, 4, 10, 12, 0, tzinfo=UTC)


def rome(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=ROME).astimezone(UTC)


class Builder:
    def __init__(self, sessions: sessionmaker[Session], muni: Municipality):
        self.sessions, self.muni = sessions, muni
        with transaction(sessions) as s:
            c = Ctx(muni, rome(1, 1, 9))
            create_user(s, c, "urp", "urp")
            create_user(s, c, "boss", "supervisor")
            create_user(s, c, "mrossi", "operator", "LLPP", full_name="Mario Rossi")

    def case(self, at: datetime, channel: str, category: str | None, text: str = NEUTRAL) -> int:
        with transaction(self.sessions) as s:
            return register(
                s,
                Ctx(self.muni, at),
                confirm=True,
                channel=channel,
                phone="+393331234567",
                text=text,
                category=category,
            ).case.id

    def step(self, cid: int, who: str, action: str, at: datetime, **body: str) -> None:
        with transaction(self.sessions) as s:
            case = s.get(Case, cid)
            user = s.scalar(select(User).where(User.name == who))
            assert case is not None and user is not None
            perform(s, Ctx(self.muni, at), user, case, action, dict(body))

    def close_after(self, cid: int, hours: float) -> None:
        """Taken, resolved and closed with a reply `hours` after its registration."""
        with self.sessions() as s:
            case = s.get(Case, cid)
            assert case is not None
            at = case.registered_at + timedelta(hours=hours)
        self.step(cid, "boss", "take", at)
        self.step(cid, "boss", "resolve", at)
        self.step(cid, "urp", "close", at, reply="Fatto.")


@pytest.fixture
def built(sessions: sessionmaker[Session], muni: Municipality) -> Builder:
    """Ten cases around the range [2 March, 22 March 2026], at known local times."""
    b = Builder(sessions, muni)
    a = b.case(rome(3, 2, 0, 30), "sms", "strade")  # 1 March 23:30 UTC: inside, week 10
    b.close_after(a, 10)
    c = b.case(rome(3, 3, 10), "voice", "strade")
    b.close_after(c, 20)
    c = b.case(rome(3, 4, 10), "counter", "rifiuti")
    b.close_after(c, 30)
    d = b.case(rome(3, 16, 10), "sms", None)  # week 12, never routed
    b.step(d, "urp", "not_competent", rome(3, 16, 10) + timedelta(hours=40), reply="Provincia.")
    e = b.case(rome(3, 6, 10), "api", "sosta")  # 7 days to answer, answered in 200 h: late
    b.close_after(e, 200)
    b.case(rome(3, 22, 23, 30), "sms", "strade")  # last minute of the range, still open
    b.case(rome(3, 23, 0, 30), "sms", None)  # 22 March 23:30 UTC, but outside in Rome
    h = b.case(rome(3, 1, 10), "sms", "rifiuti")  # registered before, answered inside
    b.close_after(h, 26)
    i = b.case(rome(3, 5, 10), "counter", "strade")
    b.step(i, "boss", "annul", rome(3, 5, 11), reason="registrato per errore")
    j = b.case(rome(3, 5, 12), "counter", "strade")
    b.step(j, "mrossi", "take", rome(3, 5, 13))
    return b


def board(b: Builder) -> Dashboard:
    with b.sessions() as s:
        return dashboard(s, b.muni.code, start=START, end=END, now=NOW)


def test_counts_by_week_channel_category_and_office(built: Builder) -> None:
    d = board(built)
    assert (d.registered, d.annulled, d.still_open) == (7, 1, 2)
    assert [(w.week, w.monday, w.count) for w in d.by_week] == [
        ("2026-W10", date(2026, 3, 2), 5),
        ("2026-W11", date(2026, 3, 9), 0),  # an empty week is still a bar
        ("2026-W12", date(2026, 3, 16), 2),
    ]
    assert d.by_channel == {"voice": 1, "sms": 3, "web": 0, "counter": 2, "api": 1, "email": 0}
    assert d.by_category == {"strade": 4, "rifiuti": 1, "sosta": 1, "uncategorised": 1}
    assert d.by_office == {"LLPP": 4, "AMB": 1, "PM": 1, "unrouted": 1}


def test_time_to_close_median_and_p90(built: Builder) -> None:
    d = board(built)
    # answered in the range: 10, 20, 26 (registered before it), 30, 40 (not competent), 200 h
    assert d.answered == 6
    assert d.time_to_close_median == timedelta(hours=28)  # (26 + 30) / 2
    assert d.time_to_close_p90 == timedelta(hours=120)  # rank 4.5: 40 + (200 - 40) / 2


def test_share_answered_before_the_due_date(built: Builder) -> None:
    d = board(built)
    assert d.answered_before_due == 5  # only the 200 h parking case missed its 7 days
    assert d.share_answered_before_due == pytest.approx(5 / 6)


def test_overdue_cases_with_who_holds_them(built: Builder) -> None:
    d = board(built)
    assert [(o.protocol, o.status, o.office, o.holder, o.days_overdue) for o in d.overdue] == [
        ("2026/0000010", "in_progress", "LLPP", "Mario Rossi", 21),  # due 20 March 12:00
        ("2026/0000006", "assigned", "LLPP", "office LLPP, unassigned", 3),  # due 6 April
    ]
    assert d.overdue[0].assignee == "Mario Rossi" and d.overdue[1].assignee is None


def test_an_empty_range_has_no_percentiles(built: Builder) -> None:
    with built.sessions() as s:
        d = dashboard(s, built.muni.code, start=date(2025, 6, 1), end=date(2025, 6, 1), now=NOW)
    assert d.registered == 0 and d.answered == 0
    assert d.time_to_close_median is None and d.share_answered_before_due is None
    assert [w.week for w in d.by_week] == ["2025-W22"] and d.by_week[0].count == 0
    with built.sessions() as s, pytest.raises(ValueError):
        dashboard(s, built.muni.code, start=END, end=START, now=NOW)


def test_other_municipalities_are_not_counted(built: Builder) -> None:
    with built.sessions() as s:
        d = dashboard(s, "valfiorita", start=START, end=END, now=NOW)
    assert d.registered == 0 and d.overdue == [] and d.answered == 0


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([5.0], 90) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([float(x) for x in range(1, 11)], 90) == pytest.approx(9.1)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_csv_has_a_header_and_defuses_formulas() -> None:
    rows = [
        {"protocol": "2026/0000001", "note": '=HYPERLINK("http://x","y")', "days": -3},
        {"protocol": "2026/0000002", "note": "+39 333", "days": 4},
        {"protocol": "2026/0000003", "note": "@SUM(A1)", "days": None},
        {"protocol": "2026/0000004", "note": "-2+3", "days": 0},
        {"protocol": "2026/0000005", "note": 'virgola, "virgolette"\nriga', "days": 1},
    ]
    text = to_csv(["protocol", "note", "days"], rows)
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == ["protocol", "note", "days"]
    assert [r[1] for r in parsed[1:]] == [
        '\'=HYPERLINK("http://x","y")',
        "'+39 333",
        "'@SUM(A1)",
        "'-2+3",
        'virgola, "virgolette"\nriga',
    ]
    assert [r[2] for r in parsed[1:]] == ["-3", "4", "", "0", "1"]  # numbers stay numbers
    seq = to_csv(["a", "b"], [("=1", datetime(2026, 3, 2, 9, 0, tzinfo=UTC))])
    assert list(csv.reader(io.StringIO(seq)))[1] == ["'=1", "2026-03-02T09:00:00+00:00"]
    with pytest.raises(ValueError):
        to_csv(["a", "b"], [("only one",)])


def test_csv_of_the_overdue_list(built: Builder) -> None:
    d = board(built)
    text = to_csv(
        ["protocol", "office", "holder", "days_overdue"],
        [[o.protocol, o.office, o.holder, o.days_overdue] for o in d.overdue],
    )
    assert text.splitlines()[1] == "2026/0000010,LLPP,Mario Rossi,21"
