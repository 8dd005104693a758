"""What a transaction wrote that a worker must take up once it is committed: texts to send,
e-mails to send, media to fetch.

A session collects them as it flushes them (`track`); a registration written in one
statement, outside the flush, notes its own (`note`). After the commit the web tier takes
them (`take`) and queues them (`infra.dispatch`); a rollback forgets them. These
`Session.info` keys are read and written here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from cases.models import Attachment, EmailMessage, OutboxMessage, OutboxStatus

_KEYS = {OutboxMessage: "new_outbox", Attachment: "new_media", EmailMessage: "new_email"}


@dataclass(frozen=True)
class Handoff:
    """The ids of the committed rows a worker takes up."""

    outbox: list[int]
    media: list[int]
    emails: list[int]

    def __bool__(self) -> bool:
        return bool(self.outbox or self.media or self.emails)


def _waiting(obj: Any) -> bool:
    if isinstance(obj, Attachment):
        return obj.state == "pending"
    return obj.status == OutboxStatus.PENDING.value


def note(s: Session, obj: OutboxMessage | Attachment | EmailMessage) -> None:
    """Remember a row written without the session's flush, if a worker has to take it up."""
    if _waiting(obj):
        s.info.setdefault(_KEYS[type(obj)], []).append(obj)


def track(session_factory: Any) -> None:
    """Collect what the sessions of this factory flush; forget it on a rollback."""

    @event.listens_for(session_factory, "after_flush")
    def _collect(session: Session, _ctx: Any) -> None:
        for obj in session.new:
            if type(obj) in _KEYS:
                note(session, obj)

    @event.listens_for(session_factory, "after_rollback")
    def _forget(session: Session) -> None:
        for key in _KEYS.values():
            session.info.pop(key, None)


def take(s: Session) -> Handoff:
    """What the committed transaction left for the workers; the session forgets it."""
    return Handoff(
        outbox=[o.id for o in s.info.pop("new_outbox", [])],
        media=[a.id for a in s.info.pop("new_media", [])],
        emails=[e.id for e in s.info.pop("new_email", [])],
    )
