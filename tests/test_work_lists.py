"""The work lists at any size: a page at a time in the console (keyset pagination, so the
200th page costs what the first does), every case in the CSV export (streamed), and on
PostgreSQL each list answered by its own partial index (migration 0008)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from cases import queues
from cases.config import Municipality
from cases.db import transaction
from cases.models import OPEN_STATUSES, Case, User, status_in
from cases.notify import Ctx
from cases.registration import register
from tests.test_console import browser, team  # noqa: F401 (a fixture)

N = queues.PAGE_SIZE + 7


def _many(app: Flask, muni: Municipality, n: int, **kw: Any) -> list[str]:
    """n cases registered at the counter, in number order; their protocols."""
    from infra.runtime import runtime

    out = []
    with transaction(runtime(app).sessions) as s:
        ctx = Ctx(muni, datetime.now(UTC), "https://comune.example.it")
        for i in range(n):
            case = register(s, ctx, confirm=True, channel="counter",
                            text=f"segnalazione numero {i} senza categoria", phone=None,
                            **kw).case  # fmt: skip
            out.append(case.protocol)
    return out


def _protocols(html: str) -> list[str]:
    return re.findall(r'data-protocol="([^"]+)"', html)


@pytest.mark.usefixtures("team")
def test_triage_shows_a_page_at_a_time_and_the_next_page_follows_on(
    app: Flask, muni: Municipality
) -> None:
    made = _many(app, muni, N)
    urp = browser(app, "urp")
    first = urp.get("/console/triage")
    html = first.get_data(as_text=True)
    assert first.status_code == 200
    shown = _protocols(html)
    assert shown == made[: queues.PAGE_SIZE]  # oldest first, one page
    assert f"<small>({N})</small>" in html  # how many wait in all
    nxt = re.search(r'href="([^"]+)" rel="next"', html)
    assert nxt is not None
    second = urp.get(nxt.group(1).replace("&amp;", "&"))
    html2 = second.get_data(as_text=True)
    assert _protocols(html2) == made[queues.PAGE_SIZE :]  # the rest, no overlap, no gap
    assert 'rel="next"' not in html2 and "/console/triage" in html2
    # a position that is not a case of this list's municipality, or not a number: 400
    assert urp.get("/console/triage?after=999999").status_code == 400
    assert urp.get("/console/triage?after=abc").status_code == 400


@pytest.mark.usefixtures("team")
def test_a_list_downloads_whole_as_csv_streamed(app: Flask, muni: Municipality) -> None:
    made = _many(app, muni, N)
    urp = browser(app, "urp")
    resp = urp.get("/console/triage?format=csv")
    assert resp.status_code == 200 and resp.is_streamed
    lines = resp.get_data(as_text=True).strip().splitlines()
    resp.close()
    assert lines[0].startswith("protocol,")
    assert [ln.split(",")[0] for ln in lines[1:]] == made  # every case, in the list's order


@pytest.mark.usefixtures("team")
def test_office_queue_and_my_cases_page_too(app: Flask, muni: Municipality) -> None:
    from infra.runtime import runtime

    with runtime(app).sessions() as s:
        op = s.scalar(select(User).where(User.name == "op"))
        assert op is not None
        op_id = op.id
    # routed to LLPP and given to the operator, as the seeded register has them
    with transaction(runtime(app).sessions) as s:
        ctx = Ctx(muni, datetime.now(UTC), "https://comune.example.it")
        for i in range(N):
            case = register(s, ctx, confirm=True, channel="counter", category="strade",
                            text=f"buca numero {i} in via Roma", phone=None).case  # fmt: skip
            assert case.office == "LLPP"
            case.assignee_id = op_id
            case.status = "in_progress"
    ref = browser(app, "ref")
    html = ref.get("/console/office").get_data(as_text=True)
    assert len(_protocols(html)) == queues.PAGE_SIZE and f"<small>({N})</small>" in html
    mine = browser(app, "op").get("/console/mine").get_data(as_text=True)
    assert len(_protocols(mine)) == queues.PAGE_SIZE and f"<small>({N})</small>" in mine
    nxt = re.search(r'href="([^"]+)" rel="next"', mine)
    assert nxt is not None
    rest = browser(app, "op").get(nxt.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert len(_protocols(rest)) == N - queues.PAGE_SIZE


@pytest.mark.usefixtures("team")
def test_triage_marks_the_suggested_category_on_each_card(app: Flask, muni: Municipality) -> None:
    from infra.runtime import runtime

    with transaction(runtime(app).sessions) as s:
        ctx = Ctx(muni, datetime.now(UTC), "https://comune.example.it")
        case = register(s, ctx, confirm=True, channel="counter", text="testo qualsiasi",
                        phone=None).case  # fmt: skip
        case.suggested_category = "rifiuti"
    html = browser(app, "urp").get("/console/triage").get_data(as_text=True)
    card = html[html.index(f'data-protocol="{case.protocol}"') :]
    select_html = card[card.index('name="category"') : card.index("</select>")]
    assert select_html.count(" selected") == 1
    assert '<option value="rifiuti" selected>' in select_html


def test_the_open_statuses_are_written_into_the_sql() -> None:
    """The partial indexes are matched by their predicate: the statuses must be constants in
    the statement, not parameters (a prepared statement's generic plan would miss them)."""
    from sqlalchemy.dialects import postgresql

    sql = str(status_in(OPEN_STATUSES).compile(dialect=postgresql.dialect()))
    assert "'received'" in sql and "'resolved'" in sql and "%(" not in sql


@pytest.mark.usefixtures("team")
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_each_work_list_reads_its_own_index_on_postgresql(app: Flask, muni: Municipality) -> None:
    """With sequential scans priced out, the plan of each list names the index built for it:
    the proof that its WHERE matches the index's predicate."""
    from infra.runtime import runtime

    with runtime(app).sessions() as s:
        users = {u.name: u for u in s.scalars(select(User))}
        s.execute(text("SET enable_seqscan = off"))
        lists = {
            "ix_cases_office_queue": queues.office_queue(users["ref"]),
            "ix_cases_assignee_open": queues.my_cases(users["op"]),
        }
        for index, wl in lists.items():
            q = select(Case).where(*wl.where).order_by(wl.key, Case.id).limit(50)
            plan = _plan(s, q)
            assert index in plan, plan
        overdue = (
            select(Case)
            .where(Case.municipality == muni.code, status_in(OPEN_STATUSES),
                   Case.due_at < datetime.now(UTC), Case.overdue_flagged_at.is_(None))
            .order_by(Case.due_at)
            .limit(500)
        )  # fmt: skip
        assert "ix_cases_overdue_unflagged" in _plan(s, overdue)


def _plan(s: Any, q: Any) -> str:
    from sqlalchemy.dialects import postgresql

    sql = str(q.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    return "\n".join(r[0] for r in s.execute(text("EXPLAIN " + sql)))
