"""register(commit=True): a case written and committed with its linked rows (after a look-up,
with `when`), in one statement on PostgreSQL and through the ORM on SQLite, with the same
result on both."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Integer, String, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cases.config import Municipality
from cases.db import Base, direct_connections, make_engine, make_sessionmaker
from cases.models import Attachment, Case, CaseEvent, InboundMessage, ProtocolCounter
from cases.notify import Ctx, render
from cases.registration import (
    PROVISIONAL,
    NewAttachment,
    Precondition,
    Registered,
    prepare_case,
    register,
)
from infra.runtime import runtime

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PHONE = "+393331234567"
ODD_BODY = "sconto 50% su %s e %1$s, {protocol} 2026/0000000"  # printf and format lookalikes


def _ctx(muni: Municipality) -> Ctx:
    return Ctx(muni=muni, now=NOW, base_url="https://comune.example.it")


def _inbound(ctx: Ctx, sid: str, body: str = "buca") -> Any:
    """A `linked` callback: the stored text with the registration reply, as the SMS channel
    builds it."""
    seen: list[int] = []

    def linked(case: Case) -> list[Base]:
        seen.append(case.number)
        return [
            InboundMessage(
                municipality=ctx.muni.code,
                provider_sid=sid,
                from_phone=PHONE,
                to_phone="+390000000000",
                body=body,
                received_at=ctx.now,
                kind="new_case",
                language="it",
                reply=render(ctx, "registered", case),
            )
        ]

    linked.seen = seen  # type: ignore[attr-defined]
    return linked


def _fields(photos: int = 0) -> dict[str, Any]:
    return dict(
        channel="sms",
        text="Buca profonda in via Roma 12",
        phone=PHONE,
        attachments=[
            NewAttachment("photo", f"https://api.twilio.com/m/{i}", "image/jpeg")
            for i in range(photos)
        ],
    )


def _register(s: Session, ctx: Ctx, linked: Any = None, photos: int = 0, **kw: Any) -> Registered:
    return register(s, ctx, linked=linked, commit=True, **_fields(photos), **kw)


def _columns(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns if c.key not in skip}


def test_written_rows_are_what_the_orm_writes(
    sessions: sessionmaker[Session], muni: Municipality
) -> None:
    ctx = _ctx(muni)
    with sessions() as s:
        linked = _inbound(ctx, "SM1", ODD_BODY)
        done = _register(s, ctx, linked, photos=2)
        case, (row,) = done.case, done.rows
        # committed, persistent, nothing left for the session to write
        assert not (s.new or s.dirty) and s.get(Case, case.id) is case
        assert case.number == 1 and case.protocol == "2026/0000001"
        assert isinstance(row, InboundMessage) and row.case_id == case.id
        assert "2026/0000001" in row.reply and "/track/2026-0000001?t=" in row.reply
        assert "0000000" not in row.reply
        assert row.body == ODD_BODY  # text that only looks like a number or a format: as is
        dialect = s.get_bind().dialect.name
        assert linked.seen == [PROVISIONAL if dialect == "postgresql" else 1]
        in_memory = {
            "case": _columns(case),
            "events": [_columns(e) for e in case.events],
            "attachments": [_columns(a) for a in case.attachments],
            "row": _columns(row),
        }
        media = s.info.get("new_media", [])
    assert media == [] or [a.id for a in media] == [a["id"] for a in in_memory["attachments"]]

    with sessions() as s:
        stored = s.get(Case, case.id)
        assert stored is not None
        events = list(s.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)))
        attachments = list(s.scalars(select(Attachment).where(Attachment.case_id == case.id)))
        stored_row = s.get(InboundMessage, row.id)  # type: ignore[attr-defined]
        assert {
            "case": _columns(stored),
            "events": [_columns(e) for e in events],
            "attachments": [_columns(a) for a in attachments],
            "row": _columns(stored_row),
        } == in_memory, "what is in memory is what the database holds"
        assert [e.action for e in events] == ["register", "assign"]  # history in order
        assert [e.id for e in events] == sorted(e.id for e in events)
        assert [a.source_url for a in attachments] == [
            "https://api.twilio.com/m/0",
            "https://api.twilio.com/m/1",
        ]
        assert all(a.state == "pending" for a in attachments)

        # The ORM path (in the caller's transaction) writes the same columns for the same registration.
        orm = register(
            s,
            ctx,
            channel="sms",
            text="Buca profonda in via Roma 12",
            phone=PHONE,
            attachments=[
                NewAttachment("photo", f"https://api.twilio.com/m/{i}", "image/jpeg")
                for i in range(2)
            ],
            confirm=False,
        ).case
        s.commit()
        skip = ("id", "number", "track_token", "case_id")
        assert _columns(orm, skip) == _columns(stored, skip)
        assert [_columns(e, skip) for e in orm.events] == [_columns(e, skip) for e in events]
        assert [_columns(a, skip) for a in orm.attachments] == [
            _columns(a, skip) for a in attachments
        ]
        assert orm.number == 2


def test_numbers_past_seven_digits_are_printed_in_full(
    sessions: sessionmaker[Session], muni: Municipality
) -> None:
    ctx = _ctx(muni)
    with sessions() as s:
        _register(s, ctx, _inbound(ctx, "SM1"))
        s.execute(update(ProtocolCounter).values(last_number=9_999_999))
        s.commit()
        case = _register(s, ctx, _inbound(ctx, "SM2")).case
    assert case.protocol == "2026/10000000"
    with sessions() as s:
        reply = s.scalar(select(InboundMessage.reply).where(InboundMessage.provider_sid == "SM2"))
    assert reply is not None and "2026/10000000" in reply and "2026-10000000" in reply


def test_a_failed_registration_consumes_no_number(
    sessions: sessionmaker[Session], muni: Municipality
) -> None:
    ctx = _ctx(muni)
    with sessions() as s:
        _register(s, ctx, _inbound(ctx, "SM1"))
        with pytest.raises(IntegrityError):  # the same provider id again: refused whole
            _register(s, ctx, _inbound(ctx, "SM1"), photos=1)
        s.rollback()
        again = _register(s, ctx, _inbound(ctx, "SM2")).case
        assert again.number == 2
    with sessions() as s:
        assert list(s.scalars(select(Case.number).order_by(Case.number))) == [1, 2]
        assert s.scalar(select(func.count()).select_from(Attachment)) == 0
        assert s.scalar(select(ProtocolCounter.last_number)) == 2


def test_other_pending_work_is_refused(sessions: sessionmaker[Session], muni: Municipality) -> None:
    """It commits: work the caller has not flushed would be committed behind its back."""
    ctx = _ctx(muni)
    with sessions() as s:
        s.add(prepare_case(ctx, **_fields()))
        with pytest.raises(RuntimeError, match="commits"):
            _register(s, ctx)


def test_photos_are_handed_to_the_media_worker(app: Flask, muni: Municipality) -> None:
    """The app's sessions collect new attachments for dispatch.after_commit on both paths."""
    ctx = _ctx(muni)
    with runtime(app).sessions() as s:
        case = _register(s, ctx, _inbound(ctx, "SM1"), photos=2).case
        queued = s.info.get("new_media", [])
        assert sorted(a.id for a in queued) == sorted(a.id for a in case.attachments)
        assert len(queued) == 2


@pytest.mark.postgres
def test_concurrent_registrations_are_gap_free_and_each_reply_has_its_own_number(
    muni: Municipality, pg_url: str
) -> None:
    from tests.conftest import _truncate

    _truncate(pg_url)  # this worker's own database (pg_url), not the one other workers share
    engine = make_engine(pg_url)
    factory = make_sessionmaker(engine)
    ctx = _ctx(muni)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(25):
                with factory() as s:
                    sid = f"SM{t:02d}{i:04d}"
                    _register(s, ctx, _inbound(ctx, sid))
                    if i % 7 == 3:  # a provider retry racing in: refused, no number used
                        s.rollback()
                        with pytest.raises(IntegrityError):
                            _register(s, ctx, _inbound(ctx, sid))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with factory() as s:
        rows = s.execute(
            select(Case.number, InboundMessage.reply).join(
                InboundMessage, InboundMessage.case_id == Case.id
            )
        ).all()
        counter = s.scalar(select(ProtocolCounter.last_number))
    engine.dispose()
    assert sorted(n for n, _ in rows) == list(range(1, 201)) and counter == 200
    assert all(f"2026/{n:07d}" in reply for n, reply in rows)


def _at_most_one_case_per_phone() -> Precondition:
    lookup = select(
        select(func.count())
        .select_from(Case)
        .where(Case.phone == bindparam("phone", type_=String))
        .scalar_subquery()
        .label("cases_of_phone")
    )
    return Precondition.of(lookup, lambda k: k.cases_of_phone < bindparam("most", type_=Integer))


def test_register_if_registers_only_when_its_precondition_holds(
    sessions: sessionmaker[Session], muni: Municipality
) -> None:
    """The look-up runs with the registration (one statement on PostgreSQL); when its
    condition fails nothing is written and no number is used, and the row comes back."""
    ctx, pre = _ctx(muni), _at_most_one_case_per_phone()
    values = {"phone": PHONE, "most": 1}
    with sessions() as s:
        # also the year's first number: its counter row is made
        first = _register(s, ctx, _inbound(ctx, "SM1"), when=(pre, values))
        assert first.written and first.looked_up == {"cases_of_phone": 0}
        assert first.case.number == 1 and "2026/0000001" in first.rows[0].reply  # type: ignore[attr-defined]
        again = _register(s, ctx, _inbound(ctx, "SM2"), when=(pre, values))
        assert not again.written and again.looked_up == {"cases_of_phone": 1}
        third = _register(s, ctx, _inbound(ctx, "SM3"), when=(pre, {**values, "most": 2}))
        assert third.written and third.looked_up == {"cases_of_phone": 1}
    with sessions() as s:
        assert list(s.scalars(select(Case.number).order_by(Case.number))) == [1, 2]
        assert set(s.scalars(select(InboundMessage.provider_sid))) == {"SM1", "SM3"}
        assert s.scalar(select(ProtocolCounter.last_number)) == 2


@pytest.mark.postgres
def test_a_connection_the_server_closed_is_replaced(muni: Municipality, pg_url: str) -> None:
    """The thread's own connection, killed while idle (a restart, a fail-over): a repeatable
    registration is sent again on a new one; another raises and writes nothing; the engine's
    dispose() closes them."""
    from tests.conftest import _truncate

    _truncate(pg_url)
    engine = make_engine(pg_url)
    factory, ctx = make_sessionmaker(engine), _ctx(muni)
    direct = direct_connections(engine)

    def kill() -> None:
        pid = direct._connection().info.backend_pid
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT pg_terminate_backend(:p)"), {"p": pid})

    with factory() as s:
        _register(s, ctx, _inbound(ctx, "SM1"), repeatable=True)
        kill()
        case = _register(s, ctx, _inbound(ctx, "SM2"), repeatable=True).case
        assert case.number == 2
        kill()
        with pytest.raises(OperationalError):
            _register(s, ctx, _inbound(ctx, "SM3"))
        s.rollback()
        case = _register(s, ctx, _inbound(ctx, "SM4")).case
        assert case.number == 3
    conn = direct._connection()
    engine.dispose()
    assert conn.closed
    with make_sessionmaker(make_engine(pg_url))() as s:
        assert list(s.scalars(select(InboundMessage.provider_sid).order_by(InboundMessage.id))) == [
            "SM1",
            "SM2",
            "SM4",
        ]
        assert s.scalar(select(ProtocolCounter.last_number)) == 3
