"""The outbox workflow: texts to citizens (`OutboxMessage`) and e-mails to staff
(`EmailMessage`) are written in the transaction of the step that causes them and sent by a
worker after the commit. Both move the same way, by this table and these named moves (as a
case moves by `cases.workflow`); nothing else writes an outbox row's status.

    pending ──claim──▶ claimed ──sent──────▶ sent
    retry ───claim──▶    │      ──retry─────▶ retry (its not_before: the back-off)
                         │      ──failed────▶ failed (final, staff are told)
                         │      ──suppressed▶ suppressed (final: opted out, no mobile)
                         │      ──requeued──▶ pending (handed back unsent)
                         └─ stale (the worker vanished) ─▶ retry, or reconciled by the sender

A claim is one UPDATE ... RETURNING of rows still waiting and due, with a token: a second
worker gets nothing. A move applies only while the claim's token still holds the row.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from cases.db import transaction
from cases.models import EmailMessage, OutboxMessage, OutboxStatus

Row = TypeVar("Row", OutboxMessage, EmailMessage)
Model = type[OutboxMessage] | type[EmailMessage]
Sessions = sessionmaker[Session]

S = OutboxStatus
MOVES: Mapping[OutboxStatus, frozenset[OutboxStatus]] = {
    S.PENDING: frozenset({S.CLAIMED}),
    S.RETRY: frozenset({S.CLAIMED}),
    S.CLAIMED: frozenset({S.SENT, S.RETRY, S.FAILED, S.SUPPRESSED, S.PENDING}),
    S.SENT: frozenset(),
    S.FAILED: frozenset(),
    S.SUPPRESSED: frozenset(),
}
WAITING = (S.PENDING.value, S.RETRY.value)  # what a worker may claim once due
MAX_ATTEMPTS = 6  # sends of one row before it fails for good


class IllegalMove(Exception):
    """A move the table does not allow: a programming error, never a citizen's doing."""


def _legal(source: OutboxStatus, target: OutboxStatus) -> None:
    if target not in MOVES[source]:
        raise IllegalMove(f"an outbox row cannot move from {source} to {target}")


def backoff(attempts: int, first_seconds: int) -> timedelta:
    """The wait before a row's next attempt: first_seconds, doubling, capped at 30 min."""
    return timedelta(seconds=min(first_seconds * 2 ** max(attempts - 1, 0), 1800))


def due(s: Session, model: Model, now: datetime, requeue_after: timedelta, limit: int) -> list[int]:
    """Ids of rows waiting to be sent and not handed to a worker lately, marked as handed now:
    the sweeper's way to requeue what a broker outage or a lost task left behind."""
    ids = list(
        s.scalars(
            select(model.id)
            .where(
                model.status.in_(WAITING),
                model.not_before <= now,
                or_(model.enqueued_at.is_(None), model.enqueued_at < now - requeue_after),
            )
            .order_by(model.id)
            .limit(limit)
        )
    )
    if ids:
        s.execute(
            update(model)
            .where(model.id.in_(ids))
            .values(enqueued_at=now)
            .execution_options(synchronize_session=False)
        )
    return ids


def claim(
    sessions: sessionmaker[Session], model: type[Row], ids: Sequence[int], now: datetime
) -> tuple[str, list[Row]]:
    """Take these rows for one worker, in a transaction of its own: only rows still waiting
    and due are taken. Returns the claim's token and the rows (their attempt counted)."""
    token = secrets.token_hex(16)
    if not ids:
        return token, []
    with transaction(sessions) as s:
        rows = s.scalars(
            update(model)
            .where(model.id.in_(ids), model.status.in_(WAITING), model.not_before <= now)
            .values(
                status=S.CLAIMED.value,
                claim_token=token,
                claimed_at=now,
                attempts=model.attempts + 1,
            )
            .returning(model),
            execution_options={"synchronize_session": False},
        )
        return token, list(rows)


def _move(
    sessions: sessionmaker[Session],
    model: Model,
    row_id: int,
    token: str,
    target: OutboxStatus,
    **values: object,
) -> bool:
    """Move a claimed row to `target`, only if this claim still holds it; False otherwise."""
    _legal(S.CLAIMED, target)
    with transaction(sessions) as s:
        res = s.execute(
            update(model)
            .where(
                model.id == row_id,
                model.claim_token == token,
                model.status == S.CLAIMED.value,
            )
            .values(status=target.value, claim_token=None, **values)
            .execution_options(synchronize_session=False)
        )
        return bool(res.rowcount)  # type: ignore[attr-defined]


def sent(sessions: Sessions, model: Model, row_id: int, token: str, **values: object) -> bool:
    """The provider (or the mail server) took it: `values` record how (its id, when)."""
    return _move(sessions, model, row_id, token, S.SENT, **values)


def retry(
    sessions: Sessions,
    model: Model,
    row_id: int,
    token: str,
    not_before: datetime,
    **values: object,
) -> bool:
    """It failed for now (`values` say why): tried again from `not_before`."""
    return _move(sessions, model, row_id, token, S.RETRY, not_before=not_before, **values)


def failed(sessions: Sessions, model: Model, row_id: int, token: str, **values: object) -> bool:
    """It failed for good (`values` say why): staff see it."""
    return _move(sessions, model, row_id, token, S.FAILED, **values)


def suppressed(sessions: Sessions, model: Model, row_id: int, token: str, **values: object) -> bool:
    """Not to be sent at all (the citizen opted out): final."""
    return _move(sessions, model, row_id, token, S.SUPPRESSED, **values)


def requeued(sessions: Sessions, model: Model, row_id: int, token: str, **values: object) -> bool:
    """Handed back unsent (its sender booked too far ahead; its worker died before sending):
    waiting again, its attempt not held against it when `values` say so."""
    return _move(sessions, model, row_id, token, S.PENDING, **values)


def sent_in_bulk(
    sessions: sessionmaker[Session], token: str, rows: list[dict[str, object]]
) -> None:
    """Texts the provider accepted, recorded for a whole claimed chunk in one transaction:
    each dict carries `b_id`, `b_sid` (the provider's id), `b_status`, `b_at`."""
    if not rows:
        return
    _legal(S.CLAIMED, S.SENT)
    t = cast(Table, OutboxMessage.__table__)
    stmt = (
        update(t)
        .where(t.c.id == bindparam("b_id"), t.c.claim_token == token)
        .values(
            status=S.SENT.value,
            provider_sid=bindparam("b_sid"),
            delivery_status=bindparam("b_status"),
            sent_at=bindparam("b_at"),
            claim_token=None,
            error=None,
            error_code=None,
        )
    )
    with transaction(sessions) as s:
        s.connection().execute(stmt, rows)


def sent_learnt(row: OutboxMessage, sid: str, now: datetime) -> None:
    """A claimed text whose worker died after the provider took it: its status callback
    told us the provider's id (in the caller's transaction)."""
    _legal(OutboxStatus(row.status), S.SENT)
    row.provider_sid, row.status, row.sent_at, row.claim_token = sid, S.SENT.value, now, None


def stale(s: Session, model: Model, now: datetime, claim_timeout: timedelta) -> int:
    """Claims older than `claim_timeout` (their worker vanished) taken back to retry; the
    number taken. (Texts are reconciled with the provider instead: `sms.outbound`.)"""
    _legal(S.CLAIMED, S.RETRY)
    res = s.execute(
        update(model)
        .where(model.status == S.CLAIMED.value, model.claimed_at < now - claim_timeout)
        .values(status=S.RETRY.value, claim_token=None, error="claim went stale")
        .execution_options(synchronize_session=False)
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


def stale_claims(
    s: Session, model: type[Row], now: datetime, claim_timeout: timedelta, limit: int
) -> list[Row]:
    """Claimed rows older than `claim_timeout`, to be reconciled one by one."""
    q: Any = select(model).where(
        model.status == S.CLAIMED.value, model.claimed_at < now - claim_timeout
    )
    return list(s.scalars(q.limit(limit)))
