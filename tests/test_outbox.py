"""The outbox workflow (cases/outbox.py): texts and e-mails move by one table of legal moves,
each move a named function that applies only while the worker's claim holds the row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cases import outbox
from cases.models import EmailMessage, OutboxMessage, OutboxStatus
from cases.outbox import MOVES, IllegalMove

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
S = OutboxStatus


def _row(model: Any, **kw: Any) -> Any:
    n = kw.pop("n", 0)
    common = {"municipality": "monteverde", "body": "testo", "created_at": T0, "not_before": T0}
    common.update(kw)
    if model is OutboxMessage:
        return OutboxMessage(phone="+393331234567", template="t", language="it", **common)
    return EmailMessage(
        kind="k", recipients=["a@b.it"], subject="s", message_id=f"<m{n}@x>", **common
    )


def _add(sessions: sessionmaker[Session], model: Any, **kw: Any) -> int:
    with sessions() as s:
        row = _row(model, **kw)
        s.add(row)
        s.commit()
        return int(row.id)


def _status(sessions: sessionmaker[Session], model: Any, row_id: int) -> tuple[str, str | None]:
    with sessions() as s:
        row = s.get(model, row_id)
        assert row is not None
        return row.status, row.claim_token


def test_final_statuses_have_no_way_out_and_every_status_is_in_the_table() -> None:
    assert set(MOVES) == set(OutboxStatus)
    assert all(not MOVES[f] for f in (S.SENT, S.FAILED, S.SUPPRESSED))
    assert MOVES[S.PENDING] == MOVES[S.RETRY] == {S.CLAIMED}
    with pytest.raises(IllegalMove):
        outbox.sent_learnt(_row(OutboxMessage, status=S.FAILED.value), "SM1", T0)


MOVE: dict[str, tuple[Callable[..., bool], dict[str, Any], OutboxStatus]] = {
    "sent": (outbox.sent, {"sent_at": T0}, S.SENT),
    "retry": (outbox.retry, {"not_before": T0 + timedelta(minutes=1), "error": "busy"}, S.RETRY),
    "failed": (outbox.failed, {"error": "550 no such user"}, S.FAILED),
    "suppressed": (outbox.suppressed, {"error": "opted out"}, S.SUPPRESSED),
    "requeued": (outbox.requeued, {"enqueued_at": None}, S.PENDING),
}


@pytest.mark.parametrize("model", [OutboxMessage, EmailMessage], ids=["text", "e-mail"])
@pytest.mark.parametrize("move", sorted(MOVE))
def test_each_move_applies_to_a_held_claim_only(
    sessions: sessionmaker[Session], model: Any, move: str
) -> None:
    apply, values, target = MOVE[move]
    row_id = _add(sessions, model)
    token, rows = outbox.claim(sessions, model, [row_id], T0)
    assert [r.id for r in rows] == [row_id] and rows[0].attempts == 1
    assert outbox.claim(sessions, model, [row_id], T0)[1] == []  # a second worker: nothing
    assert not apply(sessions, model, row_id, "not-the-token", **values)
    assert _status(sessions, model, row_id) == (S.CLAIMED.value, token)
    assert apply(sessions, model, row_id, token, **values)
    assert _status(sessions, model, row_id) == (target.value, None)
    assert not apply(sessions, model, row_id, token, **values)  # the claim is spent


@pytest.mark.parametrize("model", [OutboxMessage, EmailMessage], ids=["text", "e-mail"])
def test_only_waiting_due_rows_are_claimed_and_stale_claims_come_back(
    sessions: sessionmaker[Session], model: Any
) -> None:
    later = _add(sessions, model, not_before=T0 + timedelta(hours=1), n=1)
    done = _add(sessions, model, status=S.SENT.value, n=2)
    waiting = _add(sessions, model, n=3)
    with sessions.begin() as s:
        assert outbox.due(s, model, T0, timedelta(minutes=1), 10) == [waiting]
    token, rows = outbox.claim(sessions, model, [later, done, waiting], T0)
    assert [r.id for r in rows] == [waiting]
    with sessions.begin() as s:
        assert outbox.stale(s, model, T0 + timedelta(minutes=1), timedelta(minutes=5)) == 0
        assert outbox.stale(s, model, T0 + timedelta(minutes=6), timedelta(minutes=5)) == 1
    assert _status(sessions, model, waiting) == (S.RETRY.value, None)
    assert not outbox.sent(sessions, model, waiting, token)  # the stale claim no longer holds
