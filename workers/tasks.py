"""Celery tasks. Each takes ids or nothing, loads state, checks it, acts, commits."""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

from celery import shared_task
from flask import current_app

from cases.clock import utcnow
from cases.db import transaction
from cases.notify import Ctx
from cases.services import flag_overdue as flag_overdue_cases
from cases.services import take_lease

log = logging.getLogger(__name__)


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


@shared_task(name="workers.tasks.flag_overdue", bind=True, max_retries=3)
def flag_overdue(self: object) -> int:
    """Flag cases past their due date and tell the supervisors; one run at a time anywhere."""
    from lineadiretta.app import runtime

    rt = runtime(current_app)
    holder = _holder()
    flagged = 0
    for muni in rt.config.municipality:
        now = utcnow()
        with transaction(rt.sessions) as s:
            if not take_lease(s, f"overdue:{muni.code}", holder, now, timedelta(minutes=10)):
                log.info("overdue %s: another worker holds the lease, skipping", muni.code)
                continue
        with transaction(rt.sessions) as s:
            base = rt.public_base_url or ""
            cases = flag_overdue_cases(s, Ctx(muni=muni, now=now, base_url=base))
            flagged += len(cases)
            for c in cases:
                log.info("overdue: case %s flagged", c.protocol)
        with transaction(rt.sessions) as s:
            take_lease(s, f"overdue:{muni.code}", holder, now, timedelta(seconds=-1))
    return flagged
