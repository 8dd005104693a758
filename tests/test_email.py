"""Referents' e-mails for voice cases: written with the registration, sent after commit over
real SMTP (a small server on loopback), exactly once, retried on 4xx, failed on 5xx."""

from __future__ import annotations

import logging
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cases.config import Municipality
from cases.db import transaction
from cases.mail import voice_case_email
from cases.models import EmailMessage
from cases.notify import Ctx
from cases.registration import register
from cases.services import create_user
from infra.runtime import runtime
from tests.test_ivr import all_cases, call
from workers.mailer import (
    MAX_ATTEMPTS,
    EmailSender,
    SandboxTransport,
    SmtpSettings,
    SmtpTransport,
    smtp_settings,
)

CALLER = "+393331234567"
T0 = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


# ---------------------------------------------------------------- a real SMTP server


@dataclass
class Received:
    sender: str
    rcpts: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data, policy=policy.default)


@dataclass
class SmtpState:
    received: list[Received] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # next replies to DATA, then "250 ok"


class _Handler(socketserver.StreamRequestHandler):
    """Just enough of RFC 5321 for smtplib: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        state: SmtpState = self.server.state  # type: ignore[attr-defined]
        self.send("220 test ESMTP")
        sender, rcpts = "", []
        while line := self.rfile.readline():
            cmd = line.decode().strip()
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.send("250-test\r\n250 8BITMIME" if verb == "EHLO" else "250 test")
            elif verb == "MAIL":
                sender, rcpts = cmd.split(":", 1)[1].strip(" <>"), []
                self.send("250 ok")
            elif verb == "RCPT":
                rcpts.append(cmd.split(":", 1)[1].strip(" <>"))
                self.send("250 ok")
            elif verb == "DATA":
                self.send("354 go ahead")
                chunks = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    chunks.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                reply = state.replies.pop(0) if state.replies else "250 ok"
                if reply.startswith("250"):
                    state.received.append(Received(sender, rcpts, b"".join(chunks)))
                self.send(reply)
            elif verb in ("RSET", "NOOP"):
                self.send("250 ok")
            elif verb == "QUIT":
                self.send("221 bye")
                return
            else:
                self.send("502 not implemented")


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpState, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.state = SmtpState()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.state, server.server_address[1]  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def transport(port: int) -> SmtpTransport:
    return SmtpTransport(SmtpSettings("127.0.0.1", port, "none", None, None, "ld@example.it", 5))


# ---------------------------------------------------------------- helpers


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def email_office(muni: Municipality) -> str:
    return next(o.code for o in muni.offices if o.notify_referents_by_email and not o.urp)


def voice_case(
    sessions: sessionmaker[Session], muni: Municipality, *, referent_email: str | None
) -> int:
    """A voice case routed to an office that wants e-mails, its e-mail row queued."""
    office = email_office(muni)
    category = next(c.code for c in muni.categories if c.office == office)
    with transaction(sessions) as s:
        ctx = Ctx(muni, T0, base_url="https://comune.example.it")
        ref, _ = create_user(s, ctx, "ref", "referent", office, full_name="Anna Bianchi")
        ref.email = referent_email
        case = register(
            s,
            ctx,
            confirm=True,
            channel="voice",
            phone=CALLER,
            text="cassonetto rotto",
            category=category,
        ).case
        row = voice_case_email(s, ctx, case, "https://api.twilio.com/rec/RE1")
        assert row is not None
        s.flush()
        return row.id


def sender(sessions: sessionmaker[Session], tr: object, clock: Clock) -> EmailSender:
    return EmailSender(sessions, tr, "Linea Diretta <ld@example.it>", clock)  # type: ignore[arg-type]


def row(sessions: sessionmaker[Session], rid: int) -> EmailMessage:
    with sessions() as s:
        r = s.get(EmailMessage, rid)
        assert r is not None
        return r


# ---------------------------------------------------------------- end to end: a phone call


def test_a_voice_call_to_an_office_that_asks_for_it_e_mails_its_referents(
    app: Flask, client: FlaskClient, muni: Municipality, smtp: tuple[SmtpState, int]
) -> None:
    state, port = smtp
    office = email_office(muni)
    cat = next(c for c in muni.categories if c.office == office)
    sessions = runtime(app).sessions
    with transaction(sessions) as s:
        ctx = Ctx(muni, datetime.now(UTC))
        for name, email in (("ref1", "anna@comune.example.it"), ("ref2", None)):
            u, _ = create_user(s, ctx, name, "referent", office)
            u.email = email
        earlier = register(
            s,
            ctx,
            confirm=True,
            channel="sms",
            phone=CALLER,
            text="altra questione",
            category=cat.code,
        ).case
        earlier_protocol = earlier.protocol
        # the caller's case at another office: not the referents' to see, so not in the mail
        elsewhere = register(
            s,
            ctx,
            confirm=True,
            channel="sms",
            phone=CALLER,
            text="questione riservata",
            category="sociale",
        ).case
        elsewhere_protocol = elsewhere.protocol
    codes = [c.code for c in muni.categories if c.code != "altro"]
    idx = codes.index(cat.code)
    keys = ["1"] + ["9"] * (idx // 8) + [str(idx % 8 + 1)]
    call(client, muni, *keys, "il cassonetto di via Manin è rotto e pieno", "1")
    case = all_cases(app)[-1]
    assert case.office == office and case.channel == "voice"
    with sessions() as s:
        [mail] = s.scalars(select(EmailMessage)).all()
    assert mail.status == "pending" and mail.case_id == case.id  # written with the case
    assert mail.recipients == ["anna@comune.example.it"]

    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{port}?starttls=no"
    app.config["SMTP_FROM"] = "Linea Diretta <noreply@comune.example.it>"
    from workers.tasks import send_emails

    with app.app_context():
        assert send_emails.run([mail.id]) == {"sent": 1}
        assert send_emails.run([mail.id]) == {}  # already sent: exactly once
    [got] = state.received
    assert got.rcpts == ["anna@comune.example.it"]
    msg = got.message
    assert msg["Message-ID"] == mail.message_id and msg["Auto-Submitted"] == "auto-generated"
    assert case.protocol in msg["Subject"] and cat.name_it in msg["Subject"]
    body = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "\r\n" not in msg["Subject"]
    for part in ("il cassonetto di via Manin", case.protocol, earlier_protocol, "+39*******567"):
        assert part in body
    assert elsewhere_protocol not in body
    assert f"https://comune.example.it/console/cases/{case.year}-{case.number:07d}" in body
    assert "Registrazione: " in body  # the link, or a pointer to the console until it is ready
    for where in (msg["Subject"], body):
        assert "3331234567" not in where.replace(" ", "")  # the caller's number stays masked
    sent = row(sessions, mail.id)
    assert sent.status == "sent" and sent.transport == "smtp" and sent.sent_at is not None


def test_an_office_that_does_not_ask_gets_no_e_mail(
    sessions: sessionmaker[Session], muni: Municipality
) -> None:
    office = next(o for o in muni.offices if not o.notify_referents_by_email and not o.urp)
    category = next(c.code for c in muni.categories if c.office == office.code)
    with transaction(sessions) as s:
        ctx = Ctx(muni, T0)
        ref, _ = create_user(s, ctx, "ref", "referent", office.code)
        ref.email = "ref@comune.example.it"
        case = register(
            s, ctx, confirm=True, channel="voice", phone=CALLER, text="x", category=category
        ).case
        assert voice_case_email(s, ctx, case) is None


def test_without_a_referent_address_the_office_address_is_used(
    sessions: sessionmaker[Session], muni: Municipality
) -> None:
    rid = voice_case(sessions, muni, referent_email=None)
    office = muni.office(email_office(muni))
    assert office is not None and row(sessions, rid).recipients == [office.email]
    assert "Registrazione: https://api.twilio.com/rec/RE1" in row(sessions, rid).body


# ---------------------------------------------------------------- the sender


def test_sandbox_without_smtp_marks_sent_and_logs(
    sessions: sessionmaker[Session], muni: Municipality, caplog: pytest.LogCaptureFixture
) -> None:
    assert smtp_settings({}) is None  # nothing configured: the sandbox
    rid = voice_case(sessions, muni, referent_email="anna@comune.example.it")
    with caplog.at_level(logging.INFO, logger="workers.mailer"):
        counts, _ = sender(sessions, SandboxTransport(), Clock(T0)).send_ids([rid])
    assert counts == {"sent": 1}
    r = row(sessions, rid)
    assert r.status == "sent" and r.transport == "sandbox"
    assert any("sandbox e-mail" in rec.getMessage() for rec in caplog.records)


def test_two_workers_never_both_send(
    sessions: sessionmaker[Session], muni: Municipality, smtp: tuple[SmtpState, int]
) -> None:
    state, port = smtp
    rid = voice_case(sessions, muni, referent_email="anna@comune.example.it")
    a = sender(sessions, transport(port), Clock(T0))
    b = sender(sessions, transport(port), Clock(T0))
    _, claimed = a.claim([rid])
    assert len(claimed) == 1 and b.claim([rid])[1] == []  # the second claim gets nothing
    assert b.send_ids([rid]) == ({}, [])
    assert state.received == []


def _answered_with(
    reply: str,
    sessions: sessionmaker[Session],
    muni: Municipality,
    smtp: tuple[SmtpState, int],
    referent_email: str,
) -> tuple[SmtpState, int, Clock, EmailSender]:
    """The SMTP server answers `reply`; a voice case's e-mail to this referent waits."""
    state, port = smtp
    state.replies = [reply]
    rid = voice_case(sessions, muni, referent_email=referent_email)
    clock = Clock(T0)
    return state, rid, clock, sender(sessions, transport(port), clock)


def test_a_temporary_error_is_retried_with_backoff(
    sessions: sessionmaker[Session], muni: Municipality, smtp: tuple[SmtpState, int]
) -> None:
    state, rid, clock, snd = _answered_with(
        "451 try again later", sessions, muni, smtp, "anna@comune.example.it"
    )
    counts, retries = snd.send_ids([rid])
    assert counts == {"retry": 1} and retries == [(rid, timedelta(seconds=30))]
    r = row(sessions, rid)
    assert (
        r.status == "retry"
        and "451" in (r.error or "")
        and r.not_before == T0 + timedelta(seconds=30)
    )
    assert snd.send_ids([rid]) == ({}, [])  # not due yet
    clock.now = T0 + timedelta(seconds=31)
    assert snd.send_ids([rid])[0] == {"sent": 1}
    assert len(state.received) == 1 and row(sessions, rid).attempts == 2


def test_a_permanent_error_fails_for_good(
    sessions: sessionmaker[Session], muni: Municipality, smtp: tuple[SmtpState, int]
) -> None:
    state, rid, clock, snd = _answered_with(
        "550 mailbox unavailable", sessions, muni, smtp, "nobody@comune.example.it"
    )
    assert snd.send_ids([rid]) == ({"failed": 1}, [])
    r = row(sessions, rid)
    assert r.status == "failed" and "550" in (r.error or "")
    clock.now = T0 + timedelta(days=1)
    assert snd.sweep() == [] and state.received == []


def test_retries_end_in_a_recorded_failure(
    sessions: sessionmaker[Session], muni: Municipality, smtp: tuple[SmtpState, int]
) -> None:
    state, port = smtp
    state.replies = ["421 busy"] * MAX_ATTEMPTS
    rid = voice_case(sessions, muni, referent_email="anna@comune.example.it")
    clock = Clock(T0)
    snd = sender(sessions, transport(port), clock)
    outcomes = []
    for _ in range(MAX_ATTEMPTS):
        clock.now += timedelta(hours=1)
        outcomes.append(next(iter(snd.send_ids([rid])[0])))
    assert outcomes == ["retry"] * (MAX_ATTEMPTS - 1) + ["failed"]
    assert row(sessions, rid).status == "failed" and state.received == []


def test_an_unreachable_server_is_a_temporary_error(
    sessions: sessionmaker[Session], muni: Municipality
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rid = voice_case(sessions, muni, referent_email="anna@comune.example.it")
    counts, retries = sender(sessions, transport(port), Clock(T0)).send_ids([rid])
    assert counts == {"retry": 1} and retries
    assert row(sessions, rid).status == "retry"


def test_the_sweeper_requeues_unsent_and_stale_rows(
    sessions: sessionmaker[Session], muni: Municipality, smtp: tuple[SmtpState, int]
) -> None:
    state, port = smtp
    queued = voice_case(sessions, muni, referent_email="anna@comune.example.it")
    clock = Clock(T0)
    snd = sender(sessions, transport(port), clock)
    assert snd.sweep() == [queued]  # never handed to a worker (broker down)
    assert snd.sweep() == []  # just queued: not again so soon
    snd.claim([queued])  # ... and the worker that took it died
    clock.now = T0 + timedelta(minutes=4)
    assert snd.sweep() == []  # the claim may still be live
    clock.now = T0 + timedelta(minutes=6)
    assert snd.sweep() == [queued]
    assert snd.send_ids([queued])[0] == {"sent": 1}
    [got] = state.received
    assert got.message["Message-ID"] == row(sessions, queued).message_id


def test_smtp_settings_from_the_environment() -> None:
    st = smtp_settings({"SMTP_URL": "smtp://user%40x:p%3Ass@mail.example.it:2525"})
    assert st is not None and (st.host, st.port, st.security) == (
        "mail.example.it",
        2525,
        "starttls",
    )
    assert (st.username, st.password) == ("user@x", "p:ss")
    st = smtp_settings({"SMTP_URL": "smtps://mail.example.it", "SMTP_FROM": "a <a@b.it>"})
    assert st is not None and (st.port, st.security, st.sender) == (465, "tls", "a <a@b.it>")
    st = smtp_settings({"SMTP_HOST": "relay", "SMTP_PORT": "25", "SMTP_USER": "u"})
    assert st is not None and (st.host, st.port, st.username, st.password) == (
        "relay",
        25,
        "u",
        None,
    )
    with pytest.raises(ValueError):
        smtp_settings({"SMTP_URL": "http://mail.example.it"})


def test_a_bad_smtp_url_stops_start_up(muni: Municipality) -> None:
    from cases.config import ConfigError
    from lineadiretta.app import create_app

    with pytest.raises(ConfigError, match="SMTP"):
        create_app({"SECRET_KEY": "x", "SMTP_URL": "ftp://nope", "DATABASE_URL": "sqlite://"})
