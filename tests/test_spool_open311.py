"""Open311 POSTs: an `Idempotency-Key` makes a client's retries one case; while the register
is away a request is kept in the spool, answered 202 with a token, and registered after."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cases.clock import utcnow
from infra.runtime import runtime
from tests.fakes.tcpproxy import TcpProxy
from tests.test_open311 import BASE, cases_in, created, gets, new_key

FORM = {
    "service_code": "strade",
    "lat": "45.1234",
    "long": "9.5678",
    "description": "Buca profonda davanti al civico 12",
}


def post(client: FlaskClient, key: str, idem: str | None = None, **extra: str) -> Any:
    headers = {"Idempotency-Key": idem} if idem is not None else {}
    return client.post(
        f"{BASE}/requests.json", data={**FORM, "api_key": key, **extra}, headers=headers
    )


def test_an_idempotency_key_makes_retries_one_case(app: Flask, client: FlaskClient) -> None:
    key = new_key(app)
    first = created(post(client, key, "req-42"))
    assert created(post(client, key, "req-42")) == first  # the client retried
    assert created(post(client, key, "req-43")) != first
    # without one, each POST is a request of its own, as the specification says
    assert created(post(client, key)) != created(post(client, key))
    assert len(cases_in(app)) == 4
    # another app's key with the same Idempotency-Key is another request
    other = new_key(app, "altra-app")
    assert created(post(client, other, "req-42")) != first
    bad = post(client, key, "x" * 81)
    assert bad.status_code == 400 and "Idempotency-Key" in bad.get_data(as_text=True)
    assert post(client, key, "caffè").status_code == 400
    assert len(cases_in(app)) == 5


@pytest.mark.postgres
def test_a_request_while_the_register_is_away_gets_202_and_a_token_that_finds_its_case(
    proxied: tuple[Flask, TcpProxy],
) -> None:
    app, proxy = proxied
    client = app.test_client()
    key = new_key(app)
    created(post(client, key, "req-1"))  # the host learns the key's municipality
    forged = "not-a-key-" + "x" * 30
    proxy.cut()
    r = post(client, key, "req-7")
    assert r.status_code == 202, r.get_data(as_text=True)
    [item] = r.get_json()
    token = item["token"]
    assert "service_request_id" not in item and "protocol" in item["service_notice"].lower()
    again = post(client, key, "req-7")  # the client retries while the register is away
    assert again.status_code == 202 and again.get_json()[0]["token"] == token
    unknown = post(client, forged, "req-1")  # no municipality known for it: it must say
    assert unknown.status_code == 400 and "jurisdiction_id" in unknown.get_data(as_text=True)
    assert post(client, forged, "req-1", jurisdiction_id="monteverde").status_code == 202
    wrong = post(client, key, "req-2", jurisdiction_id="valfiorita")
    assert wrong.status_code == 403
    assert post(client, key, "req-8", service_code="nessuno").status_code == 404
    assert post(client, key, "req-9", lat="91", long="9").status_code == 400
    assert runtime(app).spool.stats(utcnow()).depth == 2

    proxy.restore()
    assert runtime(app).drainer.drain_once() == 2
    first, case = cases_in(app)  # the forged key registered nothing
    assert case.received_at is not None and case.intake_key is not None
    found = gets(client, f"/tokens/{token}.json").get_json()
    assert found == [{"service_request_id": case.protocol.replace("/", "-"), "token": token}]
    # the client retries once more, the register back: the same case
    assert created(post(client, key, "req-7")) == case.protocol.replace("/", "-")
    assert len(cases_in(app)) == 2 and first.received_at is None
