"""Sending the e-mail outbox: one SMTP adapter (or the sandbox), claims like the SMS outbox.

A row is claimed with one conditional UPDATE ... RETURNING (pending/retry and due -> claimed
with a fresh token), so no two workers ever send it; "sent" is recorded against that token.
SMTP cannot be asked afterwards whether it took a message, so a claim left behind by a dead
worker is sent again once it is stale, with the same Message-ID (mail clients fold the copies):
a duplicate notification is better than a lost one. 4xx replies and connection failures are
retried with backoff up to MAX_ATTEMPTS; 5xx replies and the last attempt fail the row for good.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage as Mime
from email.utils import format_datetime
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy.orm import Session, sessionmaker

from cases import outbox
from cases.db import transaction
from cases.models import EmailMessage
from cases.outbox import MAX_ATTEMPTS

log = logging.getLogger(__name__)

CLAIM_TIMEOUT = timedelta(minutes=5)  # far beyond one SMTP conversation (timeout below)
REQUEUE_AFTER = timedelta(seconds=60)
SMTP_TIMEOUT = 30.0
DEFAULT_FROM = "Linea Diretta <noreply@localhost>"


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min ... capped at 30 min."""
    return outbox.backoff(attempts, 30)


class MailError(Exception):
    """A send that did not go through; `temporary` says whether trying again may help."""

    def __init__(self, message: str, temporary: bool):
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to hand e-mails over: from SMTP_URL, or SMTP_HOST and friends."""

    host: str
    port: int
    security: str  # "starttls" (if offered), "require-starttls", "tls" (smtps), "none"
    username: str | None
    password: str | None
    sender: str
    timeout: float = SMTP_TIMEOUT


def mail_sender(config: Mapping[str, object]) -> str:
    """The From of staff e-mails: SMTP_FROM, else a no-reply address."""
    return str(config.get("SMTP_FROM") or DEFAULT_FROM)


def smtp_settings(config: dict[str, object]) -> SmtpSettings | None:
    """The deployment's SMTP settings; None means the sandbox (e-mails logged, rows kept).

    SMTP_URL: smtp://user:pass@host:587 (STARTTLS when the server offers it; `?starttls=require`
    insists, `?starttls=no` never), smtps://host:465 (TLS from the start). Or SMTP_HOST,
    SMTP_PORT, SMTP_USER, SMTP_PASSWORD. SMTP_FROM is the sender.
    """
    sender = mail_sender(config)
    url = config.get("SMTP_URL")
    host = config.get("SMTP_HOST")
    if url:
        parts = urlsplit(str(url))
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:port or smtps://...")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.scheme == "smtps":
            security = "tls"
        else:
            security = {"require": "require-starttls", "no": "none"}.get(
                query.get("starttls", ""), "starttls"
            )
        return SmtpSettings(
            host=parts.hostname,
            port=parts.port or (465 if security == "tls" else 587),
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            sender=sender,
        )
    if host:
        port = int(str(config.get("SMTP_PORT") or 587))
        return SmtpSettings(
            host=str(host),
            port=port,
            security="tls" if port == 465 else "starttls",
            username=str(config.get("SMTP_USER") or "") or None,
            password=str(config.get("SMTP_PASSWORD") or "") or None,
            sender=sender,
        )
    return None


class Transport(Protocol):
    name: str

    def send(self, messages: list[Mime]) -> list[MailError | None]:
        """Hand these messages over; one result per message (None: accepted)."""
        ...


def _classify(exc: Exception) -> MailError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        temporary = any(400 <= c < 500 for c in codes)
        return MailError(f"recipients refused: {sorted(set(codes))}", temporary)
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        return MailError(f"{exc.smtp_code} {text}"[:300], 400 <= exc.smtp_code < 500)
    # disconnects, timeouts, refused connections, TLS trouble: the server may be back soon
    return MailError(f"{exc.__class__.__name__}: {exc}"[:300], True)


class SmtpTransport:
    """One SMTP conversation per batch (stdlib smtplib)."""

    name = "smtp"

    def __init__(self, settings: SmtpSettings):
        self.settings = settings

    def _connect(self) -> smtplib.SMTP:
        st = self.settings
        if st.security == "tls":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(
                st.host, st.port, timeout=st.timeout, context=ssl.create_default_context()
            )
        else:
            conn = smtplib.SMTP(st.host, st.port, timeout=st.timeout)
            conn.ehlo()
            if st.security == "require-starttls" or (
                st.security == "starttls" and conn.has_extn("starttls")
            ):
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
        if st.username:
            conn.login(st.username, st.password or "")
        return conn

    def send(self, messages: list[Mime]) -> list[MailError | None]:
        try:
            conn = self._connect()
        except (smtplib.SMTPException, OSError) as exc:
            err = _classify(exc)
            return [err for _ in messages]
        results: list[MailError | None] = []
        try:
            for m in messages:
                try:
                    refused = conn.send_message(m)
                    if refused:
                        log.warning(
                            "e-mail %s: some recipients refused: %s", m["Message-ID"], refused
                        )
                    results.append(None)
                except (smtplib.SMTPException, OSError) as exc:
                    results.append(_classify(exc))
                    # SMTPException is an OSError too: only a socket error, a disconnect or a
                    # 421 (the server closes) ends the conversation; otherwise reset and go on.
                    gone = (
                        isinstance(exc, smtplib.SMTPServerDisconnected)
                        or not isinstance(exc, smtplib.SMTPException)
                        or getattr(exc, "smtp_code", 0) == 421
                    )
                    if not gone:
                        try:
                            conn.rset()
                        except (smtplib.SMTPException, OSError):
                            gone = True
                    if gone:
                        results += [_classify(exc) for _ in messages[len(results) :]]
                        break
        finally:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()
        return results


class SandboxTransport:
    """No SMTP configured: the e-mail is logged and its row marked sent (transport sandbox)."""

    name = "sandbox"

    def send(self, messages: list[Mime]) -> list[MailError | None]:
        for m in messages:
            log.info(
                "sandbox e-mail %s to %d recipient(s): %s",
                m["Message-ID"],
                len(m.get_all("To") or []),
                m["Subject"],
            )
        return [None for _ in messages]


def transport_from_config(config: dict[str, object]) -> Transport:
    settings = smtp_settings(config)
    return SmtpTransport(settings) if settings else SandboxTransport()


@dataclass
class EmailSender:
    """Claims, sends and records e-mail outbox rows; built per task from the app's config."""

    sessions: sessionmaker[Session]
    transport: Transport
    sender: str
    clock: Callable[[], datetime]
    claim_timeout: timedelta = CLAIM_TIMEOUT
    requeue_after: timedelta = REQUEUE_AFTER

    def claim(self, ids: list[int]) -> tuple[str, list[EmailMessage]]:
        """Take these rows for this worker in one UPDATE ... RETURNING; others get nothing."""
        return outbox.claim(self.sessions, EmailMessage, ids, self.clock())

    def mime(self, row: EmailMessage) -> Mime:
        m = Mime()
        m["From"] = self.sender
        m["To"] = ", ".join(row.recipients)
        m["Subject"] = row.subject
        m["Message-ID"] = row.message_id
        m["Date"] = format_datetime(row.created_at)
        m["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies back to us
        m["X-Auto-Response-Suppress"] = "All"
        m.set_content(row.body)
        return m

    def send_ids(self, ids: list[int]) -> tuple[dict[str, int], list[tuple[int, timedelta]]]:
        """Send these rows; returns counts per outcome and (id, delay) of rows to retry."""
        token, rows = self.claim(ids)
        counts: dict[str, int] = {}
        retries: list[tuple[int, timedelta]] = []
        if not rows:
            return counts, retries
        results = self.transport.send([self.mime(r) for r in rows])
        now = self.clock()
        for row, err in zip(rows, results, strict=True):
            if err is None:
                outbox.sent(
                    self.sessions, EmailMessage, row.id, token, sent_at=now,
                    transport=self.transport.name, error=None,
                )  # fmt: skip
                outcome = "sent"
                log.info(
                    "e-mail %d (case %s): sent via %s", row.id, row.case_id, self.transport.name
                )
            elif err.temporary and row.attempts < MAX_ATTEMPTS:
                delay = backoff(row.attempts)
                outbox.retry(
                    self.sessions, EmailMessage, row.id, token, not_before=now + delay,
                    error=str(err), enqueued_at=now,
                )  # fmt: skip
                retries.append((row.id, delay))
                outcome = "retry"
                log.warning("e-mail %d: %s; retry %d in %s", row.id, err, row.attempts, delay)
            else:
                outbox.failed(self.sessions, EmailMessage, row.id, token, error=str(err))
                outcome = "failed"
                log.error("e-mail %d (case %s): failed for good: %s", row.id, row.case_id, err)
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts, retries

    def sweep(self, limit: int = 500) -> list[int]:
        """Rows to (re)queue: never queued (broker down), due retries, stale claims."""
        now = self.clock()
        with transaction(self.sessions) as s:
            stale = outbox.stale(s, EmailMessage, now, self.claim_timeout)
            if stale:
                log.warning("e-mail outbox: %d stale claims taken back", stale)
            ids = outbox.due(s, EmailMessage, now, self.requeue_after, limit)
        return ids
