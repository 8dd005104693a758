"""Calls while the register is away: the menu goes on in Redis, the registration step is kept
in the host's spool (with what the caller said), the caller hears that the number will follow
by text, and when the register answers the case is registered once, the recording attached,
the end of the call recorded and the number texted.

PostgreSQL goes "away" through a proxy the test controls (the shared server is never
touched)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from cases.config import Municipality
from cases.models import Attachment, Call, Case, OutboxMessage
from infra.runtime import runtime
from ivr.callstate import CallStore
from ivr.prompts import prompt
from ivr.simulator import HANGUP, Switchboard
from tests.conftest import Clock, redis_call_store
from tests.fakes.tcpproxy import TcpProxy
from tests.test_ivr_callstate import CALLER, Recorder

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
IN_HOURS = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    """The app's clock: in office hours."""
    return Clock(IN_HOURS)


@pytest.fixture
def away(proxied: tuple[Flask, TcpProxy]) -> Iterator[tuple[Flask, TcpProxy, CallStore]]:
    app, proxy = proxied
    with redis_call_store(app) as store:
        yield app, proxy, store


def depth(app: Flask) -> int:
    return int(runtime(app).spool.stats(IN_HOURS).depth)


def drain(app: Flask) -> int:
    return int(runtime(app).drainer.drain_once())


def rows(app: Flask, model: type) -> list[Any]:
    with runtime(app).sessions() as s:
        return list(s.scalars(select(model)))


def call(app: Flask, muni: Municipality, *inputs: str, frm: str = CALLER) -> Switchboard:
    board = Switchboard(
        Recorder(app.test_client()), from_=frm, to=muni.voice.numbers[0], inputs=inputs
    )
    board.run()
    return board


def test_a_report_by_phone_while_away_is_kept_then_registered_and_texted(
    away: tuple[Flask, TcpProxy, CallStore], muni: Municipality
) -> None:
    app, proxy, _store = away
    proxy.cut()
    board = call(app, muni, "1", "1", "Buca profonda in via Po 4", "1")
    log = board.log
    assert all(status == 200 for _, _, status in log.requests), log.requests
    assert "Ho registrato: Buca profonda in via Po 4" in log.text
    assert prompt("it", "received_later") in log.text
    assert prompt("it", "sms_follows_later") in log.text
    assert log.ended_by == "system"
    # the registration, the end of the call and the recording: kept, each once
    assert depth(app) == 3
    recorder = board.post
    assert isinstance(recorder, Recorder)
    path, form, body = recorder.first("/ivr/confirm/")
    assert recorder(path, form) == (200, body)  # the provider retries: same answer
    assert depth(app) == 3
    assert drain(app) == 0  # still away: nothing lost, nothing registered

    proxy.restore()
    assert drain(app) == 3
    assert drain(app) == 0
    [case] = rows(app, Case)
    assert case.phone == CALLER and case.channel == "voice"
    assert case.original_text == "Buca profonda in via Po 4"
    assert case.category == muni.categories[0].code
    assert case.received_at is not None and case.received_at <= case.registered_at
    [attachment] = rows(app, Attachment)
    assert attachment.case_id == case.id and attachment.kind == "recording"
    with runtime(app).sessions() as s:
        row = s.get(Call, log.sid)
        assert row is not None and row.case_id == case.id and row.end_status == "completed"
    [sms] = rows(app, OutboxMessage)
    assert sms.phone == CALLER and sms.template == "registered" and case.protocol in sms.body


def test_a_caller_who_hangs_up_before_confirming_is_registered_all_the_same(
    away: tuple[Flask, TcpProxy, CallStore], muni: Municipality
) -> None:
    app, proxy, _store = away
    proxy.cut()
    log = call(app, muni, "1", "0", "Rifiuti abbandonati in piazza Dante", HANGUP).log
    assert all(status == 200 for _, _, status in log.requests), log.requests
    assert depth(app) == 2  # the end of the call and the recording
    proxy.restore()
    assert drain(app) == 2
    [case] = rows(app, Case)
    assert case.original_text == "Rifiuti abbandonati in piazza Dante"
    assert case.phone == CALLER and case.received_at is not None
    assert len(rows(app, Attachment)) == 1
    [sms] = rows(app, OutboxMessage)
    assert case.protocol in sms.body


def test_status_by_phone_while_away_is_a_polite_try_again(
    away: tuple[Flask, TcpProxy, CallStore], muni: Municipality
) -> None:
    app, proxy, _store = away
    proxy.cut()
    log = call(app, muni, "2", "12#", "4", "2", "2026*7#").log
    assert all(status == 200 for _, _, status in log.requests), log.requests
    assert log.text.count(prompt("it", "status_unavailable")) == 1
    assert log.text.count(prompt("en", "status_unavailable")) == 1
    assert depth(app) == 1  # only the end of the call: nothing to register
    proxy.restore()
    assert drain(app) == 1
    assert rows(app, Case) == []
    with runtime(app).sessions() as s:
        row = s.get(Call, log.sid)
        assert row is not None and row.end_status == "completed" and row.language == "en"


def test_the_register_back_mid_call_takes_the_call_from_redis(
    away: tuple[Flask, TcpProxy, CallStore], muni: Municipality
) -> None:
    """The call began while the register was away and the caller described the problem;
    the register is back at the confirmation: the case is registered there and then."""
    app, proxy, _store = away
    proxy.cut()
    inputs = iter(["1", "1", "Semaforo guasto in corso Italia", "1"])

    def listen(line: str) -> None:
        if line.startswith("Ho registrato:"):
            proxy.restore()

    board = Switchboard(
        Recorder(app.test_client()),
        from_=CALLER,
        to=muni.voice.numbers[0],
        ask=lambda _p: next(inputs, HANGUP),
        out=listen,
    )
    log = board.run()
    assert all(status == 200 for _, _, status in log.requests), log.requests
    [case] = rows(app, Case)
    assert case.original_text == "Semaforo guasto in corso Italia"
    assert f"numero di protocollo: {', '.join([*str(case.year), 'barra', *str(case.number)])}" in (
        log.text
    )
    assert depth(app) == 0 and case.received_at is None
    with runtime(app).sessions() as s:
        row = s.get(Call, log.sid)
        assert row is not None and row.case_id == case.id and row.end_status == "completed"
    assert len(rows(app, Attachment)) == 1


def test_a_call_that_began_before_the_register_went_away(
    away: tuple[Flask, TcpProxy, CallStore], muni: Municipality
) -> None:
    """Its row holds the start; what the caller said while away only Redis and the spool:
    merged when the register is back."""
    app, proxy, _store = away
    inputs = iter(["1", "2", "Albero caduto in viale Mazzini", "1"])

    def ask(_p: str) -> str:
        answer = next(inputs, HANGUP)
        if answer.startswith("Albero"):
            proxy.cut()
        return answer

    log = Switchboard(
        Recorder(app.test_client()), from_=CALLER, to=muni.voice.numbers[0], ask=ask
    ).run()
    assert all(status == 200 for _, _, status in log.requests), log.requests
    assert prompt("it", "received_later") in log.text
    proxy.restore()
    assert drain(app) == 3
    [case] = rows(app, Case)
    assert case.original_text == "Albero caduto in viale Mazzini"
    assert case.category == muni.categories[1].code
    with runtime(app).sessions() as s:
        row = s.get(Call, log.sid)
        assert row is not None and row.case_id == case.id
        assert row.state["transcript"] == "Albero caduto in viale Mazzini"


@pytest.mark.postgres
def test_without_redis_a_caller_is_asked_to_call_again(
    proxied: tuple[Flask, TcpProxy], muni: Municipality
) -> None:
    app, proxy = proxied
    proxy.cut()
    log = call(app, muni, "1").log
    assert [status for _, _, status in log.requests] == [200, 200]
    assert prompt("it", "call_again") in log.text
    proxy.restore()
    assert drain(app) == 1  # the end of a call the register never knew: nothing to apply
    assert rows(app, Call) == []
