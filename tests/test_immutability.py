"""The database itself refuses to change what the protocol register must keep (art. 53-54)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from cases.config import Municipality
from cases.db import transaction
from cases.models import Case, Status
from cases.notify import Ctx
from cases.registration import register
from cases.services import create_user
from cases.workflow import perform

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def registered(sessions: sessionmaker[Session], muni: Municipality) -> int:
    with transaction(sessions) as s:
        case = register(
            s,
            Ctx(muni, NOW),
            confirm=True,
            channel="sms",
            phone="+393331234567",
            text="lampione spento",
        ).case
        return case.id


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("number", "999"),
        ("year", "2020"),
        ("registered_at", "'2020-01-01 00:00:00'"),
        ("channel", "'web'"),
        ("phone", "'+393339999999'"),
        ("original_text", "'testo cambiato'"),
        ("municipality", "'altrove'"),
    ],
)
def test_db_refuses_update_of_registered_field(
    sessions: sessionmaker[Session], registered: int, column: str, value: str
) -> None:
    with pytest.raises(DBAPIError, match="cannot be changed"), sessions() as s, s.begin():
        s.execute(text(f"UPDATE cases SET {column} = {value} WHERE id = :id"), {"id": registered})
    with sessions() as s:
        row = s.get(Case, registered)
        assert row is not None and row.number == 1 and row.original_text == "lampione spento"


def test_db_allows_working_fields_to_change(
    sessions: sessionmaker[Session], registered: int
) -> None:
    with sessions() as s, s.begin():
        s.execute(text("UPDATE cases SET category = 'verde' WHERE id = :id"), {"id": registered})
        # rewriting a registered field with its own value is not a change
        s.execute(text("UPDATE cases SET number = number WHERE id = :id"), {"id": registered})
    with sessions() as s:
        row = s.get(Case, registered)
        assert row is not None and row.category == "verde" and row.number == 1


def test_orm_update_of_registered_field_is_refused(
    sessions: sessionmaker[Session], registered: int
) -> None:
    with pytest.raises(DBAPIError, match="cannot be changed"), transaction(sessions) as s:
        case = s.get(Case, registered)
        assert case is not None
        case.original_text = "riscritto dal codice"


def test_db_refuses_delete_of_a_case(sessions: sessionmaker[Session], registered: int) -> None:
    with pytest.raises(DBAPIError, match="never deleted"), sessions() as s, s.begin():
        s.execute(text("DELETE FROM cases WHERE id = :id"), {"id": registered})


def test_history_is_append_only(sessions: sessionmaker[Session], registered: int) -> None:
    with pytest.raises(DBAPIError, match="append-only"), sessions() as s, s.begin():
        s.execute(text("UPDATE case_events SET note = 'x' WHERE case_id = :id"), {"id": registered})
    with pytest.raises(DBAPIError, match="append-only"), sessions() as s, s.begin():
        s.execute(text("DELETE FROM case_events WHERE case_id = :id"), {"id": registered})


def test_protocol_counter_never_goes_back(sessions: sessionmaker[Session], registered: int) -> None:
    with pytest.raises(DBAPIError, match="never goes back"), sessions() as s, s.begin():
        s.execute(text("UPDATE protocol_counters SET last_number = 0"))


def test_annulment_keeps_the_registration_readable_and_final(
    sessions: sessionmaker[Session], muni: Municipality, registered: int
) -> None:
    with transaction(sessions) as s:
        boss, _ = create_user(s, Ctx(muni, NOW), "capo", "supervisor", full_name="Anna Capo")
        case = s.get(Case, registered)
        assert case is not None
        perform(s, Ctx(muni, NOW), boss, case, "annul", {"reason": "registrato due volte"})
    with sessions() as s:
        case = s.get(Case, registered)
        assert case is not None
        assert case.status == Status.ANNULLED
        assert case.original_text == "lampione spento" and case.protocol.endswith("0000001")
        assert case.annul_reason == "registrato due volte" and case.annulled_at == NOW
        assert case.annulled_by == boss.id
        assert case.events[-1].action == "annul" and case.events[-1].actor_label.startswith("Anna")
    for sql in (
        "UPDATE cases SET annul_reason = 'altro' WHERE id = :id",
        "UPDATE cases SET status = 'received', annulled_at = NULL WHERE id = :id",
    ):
        with pytest.raises(DBAPIError, match="annulled"), sessions() as s, s.begin():
            s.execute(text(sql), {"id": registered})
