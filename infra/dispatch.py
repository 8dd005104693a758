"""After a commit, hand the new work (texts, media) to the workers; never fail the request.

Rows are already durable: if the broker is down the sweeper queues them when it is back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from cases.models import Attachment, EmailMessage, OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)
_BROKER_DOWN_UNTIL = 0.0  # per process; only saves time while the broker is out


def track(session_factory: Any) -> None:
    """Collect the ids of new outbox rows and attachments flushed by a session."""

    @event.listens_for(session_factory, "after_flush")
    def _collect(session: Session, _ctx: Any) -> None:
        for obj in session.new:
            if isinstance(obj, OutboxMessage) and obj.status == OutboxStatus.PENDING.value:
                session.info.setdefault("new_outbox", []).append(obj)
            elif isinstance(obj, Attachment) and obj.state == "pending":
                session.info.setdefault("new_media", []).append(obj)
            elif isinstance(obj, EmailMessage) and obj.status == OutboxStatus.PENDING.value:
                session.info.setdefault("new_email", []).append(obj)

    @event.listens_for(session_factory, "after_rollback")
    def _forget(session: Session) -> None:
        session.info.pop("new_outbox", None)
        session.info.pop("new_media", None)
        session.info.pop("new_email", None)


def after_commit(s: Session) -> None:
    """Commit, then queue what the transaction created."""
    s.commit()
    outbox = [o.id for o in s.info.pop("new_outbox", [])]
    media = [a.id for a in s.info.pop("new_media", [])]
    emails = [e.id for e in s.info.pop("new_email", [])]
    if outbox or media or emails:
        enqueue(outbox, media, emails)


def enqueue(
    outbox: list[int], media: list[int] | None = None, emails: list[int] | None = None
) -> bool:
    global _BROKER_DOWN_UNTIL
    if time.monotonic() < _BROKER_DOWN_UNTIL:
        return False
    celery = current_app.extensions.get("celery")
    if celery is None:
        return False
    try:
        if outbox:
            celery.send_task("workers.tasks.send_outbox", args=[outbox])
        for aid in media or []:
            celery.send_task("workers.tasks.fetch_media", args=[aid])
        if emails:
            celery.send_task("workers.tasks.send_emails", args=[emails])
    except Exception as exc:  # the broker is down: the sweeper will pick the rows up
        _BROKER_DOWN_UNTIL = time.monotonic() + 10
        log.warning(
            "broker unavailable (%s): %d texts wait for the sweeper",
            exc.__class__.__name__,
            len(outbox),
        )
        return False
    return True
