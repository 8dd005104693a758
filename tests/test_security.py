"""Staff security and hostile input (issue "Hostile input and staff security"): each numbered
finding has its test here, failing on the code it was found in."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from cases.apikeys import create_api_key
from cases.auth import MAX_FAILURES
from cases.config import Config, ConfigError, Municipality
from cases.db import transaction
from cases.models import OutboxMessage
from cases.notify import Ctx
from infra.logs import MaskPhones
from infra.runtime import runtime
from lineadiretta.app import create_app
from tests.conftest import Staff, signed_post
from tests.fuzzing import assert_whole
from tests.test_console import PASSWORD, Browser, browser, new_case, team, url  # noqa: F401


def _cookie(response: Any, name: str = "session") -> str:
    cookies = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    assert cookies, response.headers
    return cookies[-1]


def test_3_the_login_cookie_is_samesite_lax_httponly_and_lasts_a_working_day(
    app: Flask,
    team: dict[str, Any],  # noqa: F811
) -> None:
    b = Browser(app)
    b.get("/console/login")
    r = b.post(
        "/console/login", {"municipality": "monteverde", "username": "op", "password": PASSWORD}
    )
    assert r.status_code == 302
    attrs = {}
    for part in _cookie(r).split(";")[1:]:
        key, _, value = part.strip().partition("=")
        attrs[key.lower()] = value
    assert attrs["samesite"].lower() == "lax"
    assert "httponly" in attrs
    left = parsedate_to_datetime(attrs["expires"]) - datetime.now(UTC)
    assert timedelta(hours=9, minutes=55) < left <= timedelta(hours=10), left


def test_2_links_come_from_configuration_and_other_hosts_are_refused(
    app: Flask, staff: Staff, muni: Municipality, config: Config, tmp_path: Path
) -> None:
    token = staff.add("urp", "urp")
    client = app.test_client()
    body = {"channel": "counter", "phone": "3331234567", "text": "Buca in via Roma 12"}
    auth = {"Authorization": f"Bearer {token}"}
    # a request naming another host is refused before anything is written
    r = client.post("/api/v1/cases", json=body, headers={**auth, "Host": "evil.example"})
    assert r.status_code == 400
    forged = {"X-Forwarded-Host": "evil.example"}  # not trusted without PROXY_HOPS
    r = client.post("/api/v1/cases", json=body, headers={**auth, **forged})
    assert r.status_code == 201
    with runtime(app).sessions() as s:
        (sent,) = s.scalars(select(OutboxMessage)).all()
    assert "https://comune.example.it/track/" in sent.body and "evil" not in sent.body
    assert client.get("/healthz", headers={"Host": "127.0.0.1:8000"}).status_code == 200

    # a process that serves requests or sends texts does not start without the address
    settings = {"SECRET_KEY": "t", "DATABASE_URL": "sqlite://", "LD_CONFIG": config}
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL is required"):
        create_app({**settings, "PUBLIC_BASE_URL": None})
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL must be an http"):
        create_app({**settings, "PUBLIC_BASE_URL": "comune.example.it"})
    # ...the command-line tools that send nothing do
    create_app({**settings, "PUBLIC_BASE_URL": None, "NEEDS_PUBLIC_BASE_URL": False})


def test_8_every_answer_is_nosniff_and_https_is_strict(app: Flask, config: Config) -> None:
    client = app.test_client()
    for path in ("/healthz", "/api/v1/cases", "/open311/v2/services.json", "/track/1"):
        r = client.get(path)
        assert r.headers.get("X-Content-Type-Options") == "nosniff", path
        assert r.headers.get("Strict-Transport-Security") == "max-age=31536000", path
    plain = create_app(
        {
            "SECRET_KEY": "t",
            "DATABASE_URL": "sqlite://",
            "LD_CONFIG": config,
            "PUBLIC_BASE_URL": "http://127.0.0.1:5000",
        }
    )
    r = plain.test_client().get("/healthz")
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    assert "Strict-Transport-Security" not in r.headers


def test_4_the_password_change_is_counted_and_throttled_like_a_login(
    app: Flask,
    team: dict[str, Any],  # noqa: F811
) -> None:
    b = Browser(app)
    assert b.login("op").status_code == 302
    form = {"new": "una-nuova-password-lunga", "confirm": "una-nuova-password-lunga"}
    answers = [
        b.post("/console/password", {**form, "current": f"tentativo-{i}"}).status_code
        for i in range(MAX_FAILURES)
    ]
    assert answers == [400] * MAX_FAILURES
    # the account is locked: the right password opens nothing, here or at the login
    r = b.post("/console/password", {**form, "current": PASSWORD})
    assert r.status_code == 400
    assert Browser(app).login("op").status_code == 401
    # and the attempts share the login's limiter (a burst, then 429)
    app.config["CONSOLE_LOGINS_PER_MINUTE"] = 1
    statuses = [b.post("/console/password", {**form, "current": "x"}).status_code for _ in range(4)]
    assert 429 in statuses


def test_4_a_locked_account_costs_one_password_check_like_a_wrong_password(
    app: Flask,
    team: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, a locked account answered without checking the password (~10 ms against
    ~150 ms): the time told the name existed. Both now run one Argon2 verification."""
    import cases.auth

    checks: list[str] = []
    real = cases.auth._hasher

    class Counting:
        def verify(self, hash_: str, password: str) -> bool:
            checks.append(password)
            return bool(real.verify(hash_, password))

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(cases.auth, "_hasher", Counting())
    for i in range(MAX_FAILURES):
        assert Browser(app).login("op", f"sbagliata-{i}").status_code == 401
    checks.clear()
    assert Browser(app).login("op", "sbagliata-di-nuovo").status_code == 401  # locked
    locked = len(checks)
    checks.clear()
    assert Browser(app).login("op2", "sbagliata-sbagliata").status_code == 401  # wrong
    assert Browser(app).login("nessuno", "sbagliata-sbagliata").status_code == 401  # unknown
    assert locked == 1 and len(checks) == 2


def test_5_input_the_register_cannot_hold_is_a_400_not_a_500(
    app: Flask,
    staff: Staff,
    muni: Municipality,
    team: dict[str, Any],  # noqa: F811
) -> None:
    case = new_case(app, muni, "Buca in via Roma 3")
    p = url(case)
    for query in ("date_from=9999-12-31", "date_to=0001-01-01", "date=9999-12-31"):
        assert staff.get("urp", f"/cases?{query}").status_code == 400, query
    assert staff.get("urp", "/cases?page=²").status_code == 400
    b = browser(app, "boss")
    assert b.get("/console/dashboard?to=9999-12-31").status_code == 400
    assert b.get("/console/dashboard?from=0001-01-01").status_code == 400
    assert b.get("/console/register?date=9999-12-31").status_code == 400
    assert b.get("/console/attachments/9223372036854775808").status_code == 404
    assert b.get("/console/notifications.json?after=99999999999999999999").status_code == 400
    late = "/open311/v2/requests.json?end_date=9999-12-31T23:00:00-05:00"
    assert app.test_client().get(late).status_code == 400
    # JSON that nests past any client, or holds a lone surrogate, or a 65-bit integer
    deep = b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    headers = {"Authorization": f"Bearer {staff.tokens['urp']}", "Content-Type": "application/json"}
    client = app.test_client()
    r = client.post("/api/v1/cases", data=deep, headers=headers)
    assert r.status_code == 400 and "nests deeper" in r.get_json()["error"]
    lone = b'{"text": "Buca in via Roma \\ud800", "phone": "3331234567"}'
    assert client.post("/api/v1/cases", data=lone, headers=headers).status_code == 400
    note = b'{"text": "nota \\udfff", "public": false}'
    assert client.post(f"/api/v1/cases/{p}/note", data=note, headers=headers).status_code == 400
    big = b'{"operator": 18446744073709551616}'
    assert client.post(f"/api/v1/cases/{p}/dispatch", data=big, headers=headers).status_code == 400
    r = client.post("/api/v1/notifications/99999999999999999999/read", headers=headers)
    assert r.status_code == 404
    # a superscript two is a digit to str.isdigit, not an id
    r = signed_post(
        client, "/sms/status?o=%C2%B2", {"MessageSid": "SM" + "1" * 32, "MessageStatus": "sent"}
    )
    assert r.status_code == 200
    # a call that lasted longer than a 64-bit column holds
    form = {"CallSid": "CA" + "7" * 32, "From": "+393331234567", "To": muni.voice.numbers[0]}
    assert signed_post(client, "/ivr/incoming", form).status_code == 200
    ended = {**form, "CallStatus": "completed", "CallDuration": str(2**64)}
    assert signed_post(client, "/ivr/status", ended).status_code == 200
    assert_whole(app)


def test_7_logs_mask_every_phone_format_and_redact_tokens_and_keys(
    app: Flask, muni: Municipality
) -> None:
    lines = {
        '127.0.0.1 - - "GET /api/v1/cases?phone=3331234567 HTTP/1.1" 200 -': "3331234567",
        "richiamare il 333 123 4567 o lo 0575-123400": "123 4567",
        "from %2B393331234567": "3331234567",
        '"GET /track/2026-0000001?t=s3gr3t0-_Tok&lang=it HTTP/1.1" 200': "s3gr3t0",
        '"POST /open311/v2/requests.json?api_key=K3yK3y HTTP/1.1" 400': "K3yK3y",
        "Authorization: Bearer b34r3r": "b34r3r",
        "sandbox outbox: text accepted: https://x/track/2026-0000001?t=Tk9 ...": "Tk9",
    }
    for line, secret in lines.items():
        record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, line, None, None)
        assert MaskPhones().filter(record)
        assert secret not in record.getMessage(), record.getMessage()
    kept = "case 2026/0000123 (2026-0000123), outbox 0000001, at 14:52:57,679"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, kept, None, None)
    MaskPhones().filter(record)
    assert record.getMessage() == kept  # protocol numbers and times stay readable

    # an Open311 key travels in the body or a header, never in the URL
    with transaction(runtime(app).sessions) as s:
        _, key = create_api_key(s, Ctx(muni, datetime.now(UTC)), "app")
    client = app.test_client()
    form = {"service_code": "strade", "lat": "45.1", "long": "9.5", "description": "Buca"}
    r = client.post(f"/open311/v2/requests.json?api_key={key}", data=form)
    assert r.status_code == 400 and "body" in r.get_data(as_text=True)
    r = client.post("/open311/v2/requests.json", data=form, headers={"X-Api-Key": key})
    assert r.status_code == 201
