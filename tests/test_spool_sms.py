"""Texts while the register is away: kept in the host's spool and answered, then registered
in arrival order, each once, with the number sent through the outbox.

PostgreSQL goes "away" through a proxy the test controls (the shared server is never
touched); the drain runs on both backends."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from cases.clock import utcnow
from cases.config import Municipality
from cases.models import InboundMessage, OptOut, OutboxMessage
from cases.notify import Ctx
from infra.runtime import runtime
from sms.inbound import Inbound, handle_inbound
from sms.views import register_spooled_text
from tests.conftest import Staff
from tests.fakes.tcpproxy import TcpProxy
from tests.test_console import browser, team  # noqa: F401 (a fixture)
from tests.test_sms_inbound import CITIZEN, OTHER, cases, reply_of, text
from tests.test_sms_status import _callback, _get, _row

THIRD = "+393471112223"


def outbox(app: Flask) -> list[OutboxMessage]:
    with runtime(app).sessions() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


@pytest.mark.postgres
def test_texts_while_postgresql_is_away_are_kept_answered_and_registered_in_order(
    proxied: tuple[Flask, TcpProxy], muni: Municipality
) -> None:
    app, proxy = proxied
    client = app.test_client()
    first = reply_of(text(client, muni, "Lampione spento in via Verdi 3"))
    assert re.search(r"/0000001", first)

    proxy.cut()
    spooled_reply = muni.template("sms_spooled", "it").format(municipality=muni.name)
    r1 = text(client, muni, "Buca profonda in via Roma 12", frm=OTHER)
    assert reply_of(r1) == spooled_reply
    form = {"MessageSid": "SM" + "a" * 32}
    r2 = text(client, muni, "Rifiuti abbandonati in piazza Garibaldi", frm=THIRD, **form)
    assert reply_of(r2) == spooled_reply
    # the provider retries: the same answer, nothing kept twice
    assert reply_of(text(client, muni, "Rifiuti", frm=THIRD, **form)) == spooled_reply
    status = reply_of(text(client, muni, "STATO 1"))
    assert status == muni.template("sms_unavailable", "it").format(municipality=muni.name)
    stop = reply_of(text(client, muni, "BASTA", frm="+393480000001"))
    assert stop == muni.template("sms_optout", "it").format(municipality=muni.name)
    english = reply_of(text(client, muni, "NEW the street light is broken", frm=THIRD))
    assert english == muni.template("sms_spooled", "en").format(municipality=muni.name)

    health = client.get("/healthz")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "degraded: spooling" and body["database"] == "unreachable"
    assert body["spool"]["depth"] == 4 and body["spool"]["oldest_age_seconds"] >= 0
    assert "lineadiretta_spool_depth 4" in client.get("/metrics").get_data(as_text=True)

    drainer = runtime(app).drainer
    assert drainer.drain_once() == 0  # still away: nothing registered, nothing lost
    assert runtime(app).spool.stats(utcnow()).depth == 4

    proxy.restore()
    assert drainer.drain_once() == 4
    assert drainer.drain_once() == 0
    got = cases(app)
    assert [(c.number, c.phone) for c in got] == [(1, CITIZEN), (2, OTHER), (3, THIRD), (4, THIRD)]
    for c in got[1:]:
        assert c.received_at is not None and c.received_at < c.registered_at
        assert c.registered_at - c.received_at < timedelta(minutes=1)
    assert got[0].received_at is None
    with runtime(app).sessions() as s:
        opted = s.get(OptOut, (muni.code, "+393480000001"))
        assert opted is not None and opted.opted_out
        kept = s.scalar(
            select(InboundMessage).where(InboundMessage.provider_sid == form["MessageSid"])
        )
        assert kept is not None and kept.received_at == got[2].received_at
    # each spooled report's number goes out once, in the report's language
    texts = [(o.phone, o.template, o.body) for o in outbox(app)]
    assert [(p, t) for p, t, _ in texts] == [
        (OTHER, "registered"),
        (THIRD, "registered"),
        (THIRD, "registered"),
    ]
    assert got[1].protocol in texts[0][2] and got[2].protocol in texts[1][2]
    assert "thank you" in texts[2][2] and got[3].protocol in texts[2][2]
    assert client.get("/healthz").get_json()["status"] == "ok"


@pytest.mark.postgres
def test_a_follow_up_while_away_joins_the_open_case_and_its_number_is_texted(
    proxied: tuple[Flask, TcpProxy], muni: Municipality
) -> None:
    app, proxy = proxied
    client = app.test_client()
    reply_of(text(client, muni, "Perdita d'acqua in via Dante 4"))
    proxy.cut()
    reply_of(text(client, muni, "Ora l'acqua arriva in strada"))
    proxy.restore()
    assert runtime(app).drainer.drain_once() == 1
    (case,) = cases(app)
    (sent,) = outbox(app)
    assert sent.template == "sms_followup" and case.protocol in sent.body
    assert sent.case_id == case.id


def _spool_text(app: Flask, muni: Municipality, sid: str, body: str) -> None:
    kept = Inbound(sid=sid, from_=CITIZEN, to=muni.sms.numbers[0], body=body)
    payload = {"text": asdict(kept), "base_url": "https://comune.example.it"}
    runtime(app).spool.append("sms", sid, muni.code, payload, utcnow() - timedelta(seconds=30))


def test_a_drainer_that_died_after_registering_does_not_register_or_text_twice(
    app: Flask, muni: Municipality
) -> None:
    sid = "SM" + "b" * 32
    _spool_text(app, muni, sid, "Semaforo guasto in corso Italia")
    (item,) = runtime(app).spool.pending()
    register_spooled_text(app, item)  # registered and queued, then the process died
    assert runtime(app).spool.stats(utcnow()).depth == 1
    assert runtime(app).drainer.drain_once() == 1
    (case,) = cases(app)
    (sent,) = outbox(app)
    assert sent.dedupe_key == f"spool:sms:{sid}" and case.protocol in sent.body
    assert case.received_at is not None and case.received_at < case.registered_at


def test_a_drainer_that_died_between_the_case_and_its_text_still_texts_once(
    app: Flask, muni: Municipality
) -> None:
    """The case commits on its own (one statement on PostgreSQL); the outbox row after it."""
    sid = "SM" + "c" * 32
    _spool_text(app, muni, sid, "Albero caduto in via dei Mille")
    (item,) = runtime(app).spool.pending()
    kept = item.payload["text"]
    msg = Inbound(**{**kept, "received_at": item.received_at})
    with runtime(app).sessions() as s:
        handle_inbound(s, Ctx(muni, utcnow(), item.payload["base_url"]), msg)
        s.commit()
    assert len(cases(app)) == 1 and outbox(app) == []
    assert runtime(app).drainer.drain_once() == 1
    (case,) = cases(app)
    (sent,) = outbox(app)
    assert sent.template == "registered" and case.protocol in sent.body


def test_texts_kept_in_the_spool_register_on_the_embedded_database_too(
    app: Flask, muni: Municipality
) -> None:
    for n in range(3):
        _spool_text(app, muni, f"SM{n:032x}", f"NUOVA buca numero {n} in via Roma")
    assert runtime(app).drainer.drain_once() == 3
    got = cases(app)
    assert [c.number for c in got] == [1, 2, 3]
    assert [c.original_text for c in got] == [f"buca numero {n} in via Roma" for n in range(3)]
    assert [o.template for o in outbox(app)] == ["registered"] * 3


@pytest.mark.usefixtures("team")
def test_staff_see_the_banner_while_contacts_wait_and_the_receipt_time_after(
    app: Flask, muni: Municipality, staff: Staff
) -> None:
    _spool_text(app, muni, "SM" + "d" * 32, "Tombino rotto in via Manzoni")
    urp = browser(app, "urp")
    page = urp.get("/console/triage").get_data(as_text=True)
    assert 'id="spool-banner"' in page and "1 contatti" in page
    assert runtime(app).drainer.drain_once() == 1
    (case,) = cases(app)
    assert 'id="spool-banner"' not in urp.get("/console/triage").get_data(as_text=True)
    p = case.protocol.replace("/", "-")
    html = urp.get(f"/console/cases/{p}").get_data(as_text=True)
    assert 'id="received-at"' in html
    body = staff.get("urp", f"/cases/{p}").get_json()
    assert body["received_at"] < body["registered_at"]
    metrics = app.test_client().get("/metrics").get_data(as_text=True).splitlines()
    assert "lineadiretta_spool_depth 0" in metrics and "lineadiretta_spool_held 0" in metrics


@pytest.mark.postgres
def test_a_delivery_status_while_away_is_kept_and_applied_after(
    proxied: tuple[Flask, TcpProxy],
) -> None:
    app, proxy = proxied
    rid = _row(app, provider_sid="SM" + "e" * 32)
    proxy.cut()
    assert _callback(app.test_client(), "SM" + "e" * 32, "delivered") == 200
    assert runtime(app).spool.stats(utcnow()).depth == 1
    proxy.restore()
    assert runtime(app).drainer.drain_once() == 1
    assert _get(app, rid).delivery_status == "delivered"
