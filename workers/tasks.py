"""Celery tasks. Each takes ids or nothing, loads state, checks it, acts, commits."""

from __future__ import annotations

import logging
import mimetypes
import os
import socket
from datetime import timedelta
from typing import Any

from celery import shared_task
from flask import current_app
from sqlalchemy import or_, select

from cases.db import transaction
from cases.models import Attachment, Case
from cases.notify import Ctx
from cases.services import flag_overdue as flag_overdue_cases
from cases.services import take_lease
from cases.workflow import Outcome, system_step
from infra.provider import SendError
from infra.runtime import runtime
from ivr.transcription import load_transcriber
from sms.outbound import Sender
from workers.mailer import EmailSender, mail_sender, transport_from_config

log = logging.getLogger(__name__)


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


@shared_task(name="workers.tasks.flag_overdue", bind=True, max_retries=3)
def flag_overdue(self: object) -> int:
    """Flag cases past their due date and tell the supervisors; one run at a time anywhere."""

    rt = runtime()
    holder = _holder()
    flagged = 0
    for muni in rt.config.municipality:
        now = runtime().clock()
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


def sender() -> Sender:
    """The worker process's sender: provider client, limiter and DB, built once."""
    rt = runtime()
    built: Sender = rt.once(
        "sms_sender",
        lambda: Sender(
            sessions=rt.sessions,
            config=rt.config,
            provider=rt.provider,
            limiter=rt.limiter,
            callback_base=rt.public_base_url,
            clock=runtime().clock,
            claim_timeout=timedelta(seconds=rt.settings["SMS_CLAIM_TIMEOUT_SECONDS"]),
            requeue_after=timedelta(seconds=rt.settings["SMS_REQUEUE_SECONDS"]),
        ),
    )
    return built


@shared_task(name="workers.tasks.send_outbox", acks_late=True)
def send_outbox(ids: list[int]) -> dict[str, int]:
    """Send these outbox rows (each claimed atomically; already-sent ones are skipped)."""
    counts = sender().send_ids(int(i) for i in ids)
    log.info("send_outbox %s: %s", ids[:5], counts)
    return counts


@shared_task(name="workers.tasks.sweep_outbox")
def sweep_outbox() -> int:
    """Re-queue texts left pending or orphaned by a dead worker or a broker outage."""
    snd = sender()
    ids = snd.sweep()
    for i in range(0, len(ids), 50):
        send_outbox.delay(ids[i : i + 50])
    if ids:
        log.info("sweep_outbox: queued %d texts", len(ids))
    emails = email_sender().sweep()
    for i in range(0, len(emails), 50):
        send_emails.delay(emails[i : i + 50])
    if emails:
        log.info("sweep_outbox: queued %d e-mails", len(emails))
    media = stale_media(snd)
    for aid in media:
        fetch_media.delay(aid)
    if media:
        log.info("sweep_outbox: queued %d media downloads", len(media))
    return len(ids) + len(media) + len(emails)


def email_sender() -> EmailSender:
    """The e-mail sender over SMTP (SMTP_URL / SMTP_HOST) or, without them, the sandbox."""

    cfg = current_app.config
    return EmailSender(
        sessions=runtime().sessions,
        transport=transport_from_config(cfg),
        sender=mail_sender(cfg),
        clock=runtime().clock,
    )


@shared_task(name="workers.tasks.send_emails", acks_late=True)
def send_emails(ids: list[int]) -> dict[str, int]:
    """Send these e-mail rows (each claimed atomically; sent ones are skipped), retry later
    the ones that met a temporary error."""
    counts, retries = email_sender().send_ids([int(i) for i in ids])
    for row_id, delay in retries:
        try:
            send_emails.apply_async(args=[[row_id]], countdown=delay.total_seconds())
        except Exception as exc:  # the broker is down: the sweeper queues it when it is due
            log.warning("send_emails: retry of %d not queued (%s)", row_id, exc.__class__.__name__)
    log.info("send_emails %s: %s", ids[:5], counts)
    return counts


def stale_media(snd: Sender, limit: int = 200) -> list[int]:
    """Photos still waiting for their download (queued while the broker was out, or lost)."""
    now = snd.clock()
    with transaction(snd.sessions) as s:
        rows = list(
            s.scalars(
                select(Attachment)
                .where(
                    Attachment.state == "pending",
                    Attachment.kind == "photo",
                    Attachment.created_at < now - snd.requeue_after,
                    or_(
                        Attachment.enqueued_at.is_(None),
                        Attachment.enqueued_at < now - snd.requeue_after,
                    ),
                )
                .limit(limit)
            )
        )
        for a in rows:
            a.enqueued_at = now
        return [a.id for a in rows]


@shared_task(name="workers.tasks.fetch_media", bind=True, max_retries=5, acks_late=True)
def fetch_media(self: Any, attachment_id: int) -> str:
    """Download an MMS photo with the account's credentials, check it, keep it."""

    rt = runtime()
    with transaction(rt.sessions) as s:
        att = s.get(Attachment, attachment_id)
        if att is None or att.state != "pending":
            return "skipped"
        case = s.get(Case, att.case_id)
        assert case is not None
        if att.kind == "recording":
            return _recording_ready(s, att, case)
        rules = rt.config.get(case.municipality).sms
        try:
            data, ctype = sender().provider.fetch_media(att.source_url, rules.max_media_bytes)
        except SendError as exc:
            if exc.retryable and self.request.retries < self.max_retries:
                raise self.retry(countdown=30 * 2**self.request.retries) from None
            att.state, att.error = "rejected", str(exc)[:500]
            log.warning("media %d of case %s rejected: %s", att.id, case.protocol, exc)
            return "rejected"
        if ctype not in rules.media_types:
            att.state, att.error = "rejected", f"type {ctype or 'unknown'} not accepted"
            log.warning("media %d of case %s rejected: type %s", att.id, case.protocol, ctype)
            return "rejected"
        ext = mimetypes.guess_extension(ctype) or ".bin"
        folder = os.path.join(current_app.instance_path, "media", case.municipality, str(case.id))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{att.id}{ext}")
        with open(path, "wb") as fh:
            fh.write(data)
        att.state, att.size, att.content_type, att.storage_path = "stored", len(data), ctype, path
        log.info(
            "media %d of case %s stored (%d bytes, %s)", att.id, case.protocol, len(data), ctype
        )
        return "stored"


def _recording_ready(s: Any, att: Attachment, case: Case) -> str:
    """A call recording stays with the provider; a configured backend may transcribe it."""
    att.state = "available"
    backend = load_transcriber(current_app.config.get("TRANSCRIBER"))
    if backend.name == "spoken-input":
        return "available"
    muni = runtime().config.get(case.municipality)
    audio, ctype = sender().provider.fetch_media(att.source_url, 50_000_000)
    text = backend.transcribe(audio, ctype, case.language)
    if text:
        system_step(
            s,
            Ctx(muni, runtime().clock()),
            case,
            "transcript",
            Outcome(None, note=text, data={"attachment": att.id, "backend": backend.name}),
        )
        log.info("recording %d of case %s transcribed by %s", att.id, case.protocol, backend.name)
    return "transcribed" if text else "available"
