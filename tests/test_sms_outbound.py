"""The sender against the fake provider through the official client: exactly once, retries,
permanent errors, opt-outs, quiet hours, the crash window, and the shared rate limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cases.config import Config
from cases.db import transaction
from cases.models import OptOut, OutboxMessage, StaffNotification, User
from cases.notify import Ctx
from cases.services import create_user
from infra.provider import TwilioProvider
from infra.ratelimit import LocalLimiter, RedisLimiter
from sms.outbound import Sender
from tests.conftest import need
from tests.fakes.provider import FakeProvider

SID, TOKEN = "AC" + "7" * 32, "fake-token"
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # 11:00 in Rome


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    monkeypatch.delenv("TWILIO_REGION", raising=False)
    with FakeProvider(account_sid=SID, auth_token=TOKEN) as f:
        f.callbacks = False
        yield f


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_sender(
    sessions: sessionmaker[Session],
    config: Config,
    fake: FakeProvider,
    clock: Clock,
    limiter: object | None = None,
) -> Sender:
    return Sender(
        sessions=sessions,
        config=config,
        provider=TwilioProvider(SID, TOKEN, fake.base_url),
        limiter=limiter or LocalLimiter(),
        callback_base=None,
        clock=clock,
        sleep=time.sleep,
    )  # type: ignore[arg-type]


def with_rate(config: Config, rate: float) -> Config:
    """The example configuration with another send rate for Monteverde's number."""
    munis = [
        m.model_copy(update={"sms": m.sms.model_copy(update={"rate_per_second": rate})})
        if m.code == "monteverde"
        else m
        for m in config.municipality
    ]
    return config.model_copy(update={"municipality": munis})


@pytest.fixture
def unlimited(config: Config) -> Config:
    return with_rate(config, 0)


@pytest.fixture
def sender(
    sessions: sessionmaker[Session], unlimited: Config, fake: FakeProvider, clock: Clock
) -> Sender:
    return make_sender(sessions, unlimited, fake, clock)


def rows(
    sessions: sessionmaker[Session], n: int, phone: str = "+393331234567", **kw: object
) -> list[int]:
    with transaction(sessions) as s:
        made = [
            OutboxMessage(
                municipality="monteverde",
                phone=phone,
                template="public_note",
                language="it",
                body=f"Comune di Monteverde: aggiornamento {i}",
                status=kw.get("status", "pending"),
                created_at=T0,
                not_before=kw.get("not_before", T0),
            )
            for i in range(n)
        ]
        s.add_all(made)
        s.flush()
        return [m.id for m in made]


def get(sessions: sessionmaker[Session], rid: int) -> OutboxMessage:
    with sessions() as s:
        row = s.get(OutboxMessage, rid)
        assert row is not None
        return row


def test_sent_once_and_recorded(
    sender: Sender, sessions: sessionmaker[Session], fake: FakeProvider
) -> None:
    ids = rows(sessions, 3)
    assert sender.send_ids(ids) == {"sent": 3}
    assert sender.send_ids(ids) == {}  # already sent: nothing is claimed, nothing is sent
    assert len(fake.messages) == 3
    for rid, msg in zip(ids, sorted(fake.messages, key=lambda m: m["body"]), strict=True):
        row = get(sessions, rid)
        assert row.status == "sent" and row.provider_sid == msg["sid"] and row.attempts == 1
        assert msg["from"] == "+393475550123" and msg["to"] == "+393331234567"


def test_two_senders_racing_send_each_text_once(
    sessions: sessionmaker[Session], unlimited: Config, fake: FakeProvider, clock: Clock
) -> None:
    ids = rows(sessions, 30)
    senders = [make_sender(sessions, unlimited, fake, clock) for _ in range(4)]
    threads = [threading.Thread(target=s.send_ids, args=(ids,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bodies = [m["body"] for m in fake.messages]
    assert len(bodies) == 30 and len(set(bodies)) == 30


def test_opted_out_at_the_provider_marks_the_citizen(
    sender: Sender, sessions: sessionmaker[Session], fake: FakeProvider
) -> None:
    fake.behave("+393331234567", "opted_out")
    first, second = rows(sessions, 2)
    assert sender.send_ids([first]) == {"suppressed": 1}
    row = get(sessions, first)
    assert (row.status, row.error_code) == ("suppressed", "21610")
    with sessions() as s:
        opt = s.get(OptOut, ("monteverde", "+393331234567"))
        assert opt is not None and opt.opted_out and opt.source == "provider:21610"
    before = len(fake.requests)
    assert sender.send_ids([second]) == {"suppressed": 1}
    assert len(fake.requests) == before  # never texted again, not even tried


def test_permanent_error_fails_and_is_shown_to_staff(
    sender: Sender, sessions: sessionmaker[Session], fake: FakeProvider, ctx: Ctx
) -> None:
    with transaction(sessions) as s:
        create_user(s, ctx, "urp", "urp")
    fake.behave("+393331234567", "invalid")
    [rid] = rows(sessions, 1)
    assert sender.send_ids([rid]) == {"failed": 1}
    assert (get(sessions, rid).status, get(sessions, rid).error_code) == ("failed", "21211")
    with sessions() as s:
        urp = s.scalar(select(User).where(User.name == "urp"))
        note = s.scalar(select(StaffNotification).where(StaffNotification.user_id == urp.id))  # type: ignore[union-attr]
        assert note is not None and note.kind == "sms_failed" and note.data["code"] == "21211"


def test_429_honours_retry_after_then_sends(
    sender: Sender, sessions: sessionmaker[Session], fake: FakeProvider, clock: Clock
) -> None:
    fake.behave("+393331234567", "rate_limited", times=1, retry_after=7)
    [rid] = rows(sessions, 1)
    assert sender.send_ids([rid]) == {"retry": 1}
    row = get(sessions, rid)
    assert (
        row.status == "retry"
        and row.error_code == "20429"
        and row.not_before == T0 + timedelta(seconds=7)
    )
    assert sender.send_ids([rid]) == {}  # not before its time
    clock.now = T0 + timedelta(seconds=7)
    assert sender.send_ids([rid]) == {"sent": 1}
    assert get(sessions, rid).attempts == 2 and len(fake.messages) == 1


def test_5xx_backs_off_and_gives_up_after_the_limit(
    sender: Sender, sessions: sessionmaker[Session], fake: FakeProvider, clock: Clock
) -> None:
    from sms.outbound import MAX_ATTEMPTS

    fake.behave("+393331234567", "server_error", times=100)
    [rid] = rows(sessions, 1)
    waits = []
    for _ in range(MAX_ATTEMPTS):
        outcome = sender.send_ids([rid])
        row = get(sessions, rid)
        waits.append(row.not_before - clock.now)
        clock.now = row.not_before
    assert outcome == {"failed": 1} and get(sessions, rid).status == "failed"
    assert waits[0] < waits[1] < waits[2]  # exponential backoff
    assert len(fake.messages) == 0


def test_quiet_hours_rows_wait(
    sender: Sender, sessions: sessionmaker[Session], fake: FakeProvider, clock: Clock
) -> None:
    [rid] = rows(sessions, 1, not_before=T0 + timedelta(hours=9))
    assert sender.send_ids([rid]) == {} and sender.sweep() == []
    clock.now = T0 + timedelta(hours=9)
    assert sender.sweep() == [rid]
    assert sender.send_ids([rid]) == {"sent": 1}


def test_crash_after_the_provider_accepted_does_not_send_twice(
    sender: Sender, sessions: sessionmaker[Session], fake: FakeProvider, clock: Clock
) -> None:
    """The 2026 incident: a worker dies between 'accepted' and 'recorded'."""
    [rid] = rows(sessions, 1)
    _, [row] = sender.claim([rid])
    sender.provider.send(
        row.phone, "+393475550123", row.body, None
    )  # accepted... then the worker dies
    assert sender.sweep() == []  # a fresh claim is left alone
    clock.now = T0 + timedelta(minutes=3)  # past the claim timeout
    assert sender.sweep() == []  # reconciled with the provider: recorded, not re-queued
    done = get(sessions, rid)
    assert done.status == "sent" and done.provider_sid == fake.messages[0]["sid"]
    assert sender.send_ids([rid]) == {} and len(fake.messages) == 1


def test_crash_before_sending_is_requeued_and_sent_once(
    sender: Sender, sessions: sessionmaker[Session], fake: FakeProvider, clock: Clock
) -> None:
    [rid] = rows(sessions, 1)
    sender.claim([rid])  # claimed, then the worker dies before calling the provider
    clock.now = T0 + timedelta(minutes=3)
    assert sender.sweep() == [rid]
    assert sender.send_ids([rid]) == {"sent": 1} and len(fake.messages) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_shared_rate_limit_holds_the_configured_rate_across_senders(
    sessions: sessionmaker[Session], config: Config, fake: FakeProvider, clock: Clock
) -> None:
    import redis

    r = redis.Redis.from_url(need("TEST_REDIS_URL", "Redis"))
    r.delete("ld:rate:+393475550123")
    rate = 20.0
    cfg = with_rate(config, rate)
    ids = rows(sessions, 40)
    senders = [make_sender(sessions, cfg, fake, clock, RedisLimiter(r)) for _ in range(4)]
    threads = [
        threading.Thread(target=s.send_ids, args=(ids[i::4],)) for i, s in enumerate(senders)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = sorted(m["accepted_at"] for m in fake.messages)
    assert len(times) == 40
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved <= rate * 1.15, f"{achieved:.1f}/s against a limit of {rate}/s"


def test_a_timed_out_send_is_reconciled_not_repeated(
    sessions: sessionmaker[Session], unlimited: Config, fake: FakeProvider, clock: Clock
) -> None:
    """The provider took the text but answered too late: asking again would duplicate it."""
    snd = make_sender(sessions, unlimited, fake, clock)
    snd.provider = TwilioProvider(SID, TOKEN, fake.base_url, timeout=0.3)
    fake.behave("+393331234567", "slow", seconds=1.0)
    [rid] = rows(sessions, 1)
    assert snd.send_ids([rid]) == {"unknown": 1}
    assert get(sessions, rid).status == "claimed"
    fake.wait_idle()
    clock.now = T0 + timedelta(minutes=3)
    assert snd.sweep() == []
    assert get(sessions, rid).status == "sent" and len(fake.messages) == 1


def test_claim_timeout_must_outlast_a_send(
    sessions: sessionmaker[Session], unlimited: Config, fake: FakeProvider, clock: Clock
) -> None:
    with pytest.raises(ValueError, match="claim timeout"):
        Sender(
            sessions=sessions,
            config=unlimited,
            provider=TwilioProvider(SID, TOKEN, fake.base_url),
            limiter=LocalLimiter(),
            callback_base=None,
            clock=clock,
            claim_timeout=timedelta(seconds=3),
        )
