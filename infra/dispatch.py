"""After a commit, hand the new work (texts, media) to the workers; never fail the request.

Rows are already durable: if the broker is down the sweeper queues them when it is back.
"""

from __future__ import annotations

import logging
import time

from flask import current_app
from sqlalchemy.orm import Session

from cases.handoff import take

log = logging.getLogger(__name__)
_BROKER_DOWN_UNTIL = 0.0  # per process; only saves time while the broker is out


def after_commit(s: Session) -> None:
    """Commit, then queue what the transaction created."""
    s.commit()
    hand_over(s)


def hand_over(s: Session) -> None:
    """Queue what the session's committed work created (for work that committed itself)."""
    work = take(s)
    if work:
        enqueue(work.outbox, work.media, work.emails)


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
