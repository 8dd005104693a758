"""Sending the outbox exactly once, and following each text's delivery.

A row is claimed with one conditional UPDATE (pending/retry -> claimed, with a fresh claim
token), so no two workers ever hold it. The provider's id is recorded against that token.
The one window that remains, a crash after the provider accepted the text and before the id
was recorded, is closed twice over: the status callback carries our row id and records the
provider's id, and the sweeper asks the provider for the message before it re-queues a stale
claim. Nothing is sent again unless the provider has no record of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cases import outbox
from cases.config import Config
from cases.db import transaction
from cases.gsm import segments
from cases.models import OutboxMessage, OutboxStatus, Role
from cases.notify import (
    Ctx,
    notify_staff,
    staff_of,
)
from cases.optout import opted_out_among, set_opt_out
from cases.outbox import MAX_ATTEMPTS
from cases.phone import mask_phone
from infra.provider import SendError, SmsProvider
from infra.ratelimit import Limiter
from infra.settings import SMS_CLAIM_TIMEOUT

log = logging.getLogger(__name__)

REQUEUE_AFTER = timedelta(seconds=60)
MAX_RATE_WAIT = 5.0  # seconds a worker may sleep for a rate slot before handing the row back

# Delivery statuses only move forward; callbacks may arrive out of order.
_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "receiving": 3,
    "received": 4,
    "delivered": 5,
    "undelivered": 5,
    "failed": 5,
    "read": 6,
    "canceled": 5,
}


def backoff(attempts: int) -> timedelta:
    """15 s, 30 s, 1 min ... capped at 30 min."""
    return outbox.backoff(attempts, 15)


@dataclass
class Sender:
    """Everything a send needs; built once per worker process."""

    sessions: sessionmaker[Session]
    config: Config
    provider: SmsProvider
    limiter: Limiter
    callback_base: str | None
    clock: Callable[[], datetime]
    sleep: Callable[[float], None] = time.sleep
    claim_timeout: timedelta = SMS_CLAIM_TIMEOUT  # the default the settings declare
    requeue_after: timedelta = REQUEUE_AFTER

    def __post_init__(self) -> None:
        longest = getattr(self.provider, "timeout", 0.0) + MAX_RATE_WAIT + 2
        if self.claim_timeout.total_seconds() < longest:
            raise ValueError(
                f"SMS claim timeout {self.claim_timeout.total_seconds():.0f}s must exceed the "
                f"longest send ({longest:.0f}s): a live send would be taken back and repeated"
            )

    def claim(self, ids: Iterable[int]) -> tuple[str, list[OutboxMessage]]:
        return outbox.claim(self.sessions, OutboxMessage, list(ids), self.clock())

    @property
    def chunk(self) -> int:
        """How many rows one claim may hold: all of them are sent before the claim could go
        stale (each send is bounded by the provider timeout plus the longest rate wait), so
        the sweeper never takes back a row that a live worker is about to send."""
        longest = getattr(self.provider, "timeout", 0.0) + MAX_RATE_WAIT + 1
        return max(1, min(50, int(self.claim_timeout.total_seconds() // longest)))

    def send_ids(self, ids: Iterable[int]) -> dict[str, int]:
        """Send these rows in claimed chunks; returns a count per outcome."""
        wanted = list(ids)
        counts: dict[str, int] = {}
        for i in range(0, len(wanted), self.chunk):
            token, rows = self.claim(wanted[i : i + self.chunk])
            if not rows:
                continue
            with self.sessions() as s:
                opted = opted_out_among(s, (r.phone for r in rows))
            sent: list[dict[str, object]] = []
            try:
                for row in rows:
                    outcome = self._send_one(
                        row, token, (row.municipality, row.phone) in opted, sent
                    )
                    counts[outcome] = counts.get(outcome, 0) + 1
            finally:
                # one transaction for the chunk's accepted texts
                outbox.sent_in_bulk(self.sessions, token, sent)
        return counts

    def _send_one(
        self, row: OutboxMessage, token: str, opted_out: bool, sent: list[dict[str, object]]
    ) -> str:
        muni = self.config.get(row.municipality)
        if opted_out:
            outbox.suppressed(self.sessions, OutboxMessage, row.id, token, error="opted out")
            return "suppressed"
        sender = muni.sms.numbers[0]
        wait = self.limiter.reserve(
            sender, segments(row.body), muni.sms.rate_per_second, MAX_RATE_WAIT
        )
        if wait < 0:  # the sender is booked further ahead than we want to sleep: hand it back
            outbox.requeued(
                self.sessions,
                OutboxMessage,
                row.id,
                token,
                attempts=row.attempts - 1,
                enqueued_at=None,
                not_before=self.clock() + timedelta(seconds=-wait),
            )
            return "deferred"
        if wait > 0:
            self.sleep(wait)
        callback = (
            f"{self.callback_base.rstrip('/')}/sms/status?o={row.id}"
            if self.callback_base
            else None
        )
        try:
            accepted = self.provider.send(row.phone, sender, row.body, callback)
        except SendError as exc:
            return self._failed(row, token, exc)
        sent.append(
            {
                "b_id": row.id,
                "b_sid": accepted.sid,
                "b_status": accepted.status,
                "b_at": self.clock(),
            }
        )
        log.info(
            "outbox %d: sent to %s as %s (case %s)",
            row.id,
            mask_phone(row.phone),
            accepted.sid,
            row.case_id,
        )
        return "sent"

    def _failed(self, row: OutboxMessage, token: str, exc: SendError) -> str:
        code = str(exc.code) if exc.code is not None else None
        now = self.clock()
        if exc.http_status is None:
            # No answer (timeout, connection cut): the provider may have taken the text.
            # Keep the claim; the sweeper asks the provider before anything is sent again.
            log.warning("outbox %d: outcome unknown (%s); left for reconciliation", row.id, exc)
            return "unknown"
        if exc.opted_out:
            with transaction(self.sessions) as s:
                muni = self.config.get(row.municipality)
                set_opt_out(s, Ctx(muni, now), row.phone, True, "provider:21610")
            outbox.suppressed(
                self.sessions,
                OutboxMessage,
                row.id,
                token,
                error="recipient opted out at the provider",
                error_code=code,
            )
            log.info(
                "outbox %d: %s opted out at the provider (21610)", row.id, mask_phone(row.phone)
            )
            return "suppressed"
        if exc.retryable and row.attempts < MAX_ATTEMPTS:
            delay = timedelta(seconds=exc.retry_after) if exc.retry_after else backoff(row.attempts)
            outbox.retry(
                self.sessions,
                OutboxMessage,
                row.id,
                token,
                not_before=now + delay,
                error=str(exc)[:500],
                error_code=code,
                enqueued_at=None,
            )
            log.warning(
                "outbox %d: will retry in %ss (attempt %d): %s",
                row.id,
                int(delay.total_seconds()),
                row.attempts,
                exc,
            )
            return "retry"
        outbox.failed(
            self.sessions, OutboxMessage, row.id, token, error=str(exc)[:500], error_code=code
        )
        with transaction(self.sessions) as s:
            muni = self.config.get(row.municipality)
            ctx = Ctx(muni, now)
            notify_staff(
                s,
                ctx,
                staff_of(s, muni.code, roles=(Role.URP,)),
                "sms_failed",
                None,
                f"SMS {row.id} non consegnabile a {mask_phone(row.phone)}: {exc}",
                {"outbox_id": row.id, "case_id": row.case_id, "code": code},
            )
        log.error("outbox %d: failed for good (code %s): %s", row.id, code, exc)
        return "failed"

    # ------------------------------------------------------------------ sweeper

    def sweep(self, limit: int = 1000) -> list[int]:
        """Reconcile stale claims and return the due rows that need (re)queueing."""
        now = self.clock()
        with self.sessions() as s:
            stale = outbox.stale_claims(s, OutboxMessage, now, self.claim_timeout, limit)
        for row in stale:
            self._reconcile(row)
        with transaction(self.sessions) as s:
            ids = outbox.due(s, OutboxMessage, now, self.requeue_after, limit)
        return ids

    def _reconcile(self, row: OutboxMessage) -> None:
        """A claim whose worker vanished: did the provider take the text before it died?"""
        muni = self.config.get(row.municipality)
        try:
            sid = self.provider.find_sent(
                row.phone, muni.sms.numbers[0], row.body, row.claimed_at or self.clock()
            )
        except SendError as exc:
            log.warning("outbox %d: cannot reconcile yet: %s", row.id, exc)
            return
        token = row.claim_token or ""
        if sid:
            done = outbox.sent(
                self.sessions,
                OutboxMessage,
                row.id,
                token,
                provider_sid=sid,
                sent_at=self.clock(),
                delivery_status="queued",
            )
            log.warning(
                "outbox %d: worker died after the provider accepted it (%s): recorded, not resent",
                row.id,
                sid,
            )
        else:
            done = outbox.requeued(self.sessions, OutboxMessage, row.id, token, enqueued_at=None)
            log.warning("outbox %d: worker died before sending: re-queued", row.id)
        if not done:
            log.info("outbox %d: reconciled by someone else meanwhile", row.id)


def record_delivery(
    s: Session,
    sid: str,
    status: str,
    error_code: str | None,
    now: datetime,
    outbox_id: int | None = None,
) -> OutboxMessage | None:
    """Apply a status callback: forward only; records the id of a send whose worker died."""
    row = s.scalar(select(OutboxMessage).where(OutboxMessage.provider_sid == sid))
    if row is None and outbox_id is not None:
        cand = s.get(OutboxMessage, outbox_id)
        if (
            cand is not None
            and cand.provider_sid is None
            and cand.status == OutboxStatus.CLAIMED.value
        ):
            row = cand
            outbox.sent_learnt(row, sid, now)
            log.warning("outbox %d: provider id %s learnt from its status callback", row.id, sid)
    if row is None:
        return None
    status = status.lower()
    if _RANK.get(status, -1) > _RANK.get(row.delivery_status or "", -1):
        row.delivery_status = status
        row.delivery_updated_at = now
        if error_code:
            row.error_code = error_code
    return row
