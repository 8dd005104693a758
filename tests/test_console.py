"""The operators' console over HTTP, as a browser would use it: login, CSRF, roles, the work."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cases.auth import set_password
from cases.config import Municipality
from cases.db import transaction
from cases.models import Case, OutboxMessage, StaffSession, User
from cases.notify import Ctx
from cases.registration import register
from tests.conftest import Staff

PASSWORD = "una-password-lunga"


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert m, "no CSRF token on the page"
    return m.group(1)


class Browser:
    """One staff member's browser: its own cookie jar, CSRF token taken from the pages."""

    def __init__(self, app: Flask):
        self.client: FlaskClient = app.test_client()
        self.token = ""

    def get(self, path: str, **kw: Any) -> Any:
        r = self.client.get(path, **kw)
        if r.mimetype == "text/html":
            html = r.get_data(as_text=True)
            if "csrf" in html:
                self.token = csrf_of(html)
        return r

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
        if not self.token:
            self.get("/console/login")
        body = {"csrf_token": self.token, **(data or {})}
        return self.client.post(path, data=body, **kw)

    def login(self, name: str, password: str = PASSWORD, muni: str = "monteverde") -> Any:
        self.get("/console/login")
        r = self.post(
            "/console/login", {"municipality": muni, "username": name, "password": password}
        )
        if r.status_code == 302:
            self.get("/console/")  # a login starts a new session: take its CSRF token
            self.get(r.headers["Location"])
        return r


@pytest.fixture
def team(app: Flask, staff: Staff, muni: Municipality) -> dict[str, Any]:
    """URP, a referent and two operators of LLPP, an operator of another office, a supervisor;
    each with a console password."""
    from infra.runtime import runtime

    staff.add("urp", "urp")
    staff.add("ref", "referent", "LLPP")
    staff.add("op", "operator", "LLPP")
    staff.add("op2", "operator", "LLPP")
    staff.add("op_pm", "operator", "PM")
    staff.add("boss", "supervisor")
    with transaction(runtime(app).sessions) as s:
        for u in s.scalars(select(User)):
            set_password(u, PASSWORD)
    return {"office": "LLPP", "other": "PM"}


def browser(app: Flask, name: str) -> Browser:
    b = Browser(app)
    r = b.login(name)
    assert r.status_code == 302, r.get_data(as_text=True)
    return b


def new_case(app: Flask, muni: Municipality, text: str, **kw: Any) -> Case:
    from infra.runtime import runtime

    with transaction(runtime(app).sessions) as s:
        ctx = Ctx(muni, datetime.now(UTC), "https://comune.example.it")
        kw.setdefault("phone", "3331112222")
        case = register(
            s, ctx, confirm=True, channel=kw.pop("channel", "counter"), text=text, **kw
        ).case
        s.flush()
        s.expunge(case)
    return case


def url(case: Case) -> str:
    return case.protocol.replace("/", "-")


def load(app: Flask, case: Case) -> Case:
    """The case as stored now, detached (an open session would hold SQLite's write lock)."""
    from infra.runtime import runtime

    with runtime(app).sessions() as s:
        got = s.get(Case, case.id)
        assert got is not None
        s.expunge(got)
    return got


def rows(app: Flask, model: Any, *where: Any) -> list[Any]:
    from infra.runtime import runtime

    with runtime(app).sessions() as s:
        out = list(s.scalars(select(model).where(*where)))
        s.expunge_all()
    return out


# ---------------------------------------------------------------- login


def test_login_logout_and_the_session_row(app: Flask, team: dict[str, Any]) -> None:
    b = Browser(app)
    assert b.get("/console/triage").status_code == 302  # not logged in: to the login page
    r = b.login("urp")
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/triage")
    page = b.get("/console/triage")
    assert page.status_code == 200 and "Smistamento" in page.get_data(as_text=True)
    # the cookie is a random id; the database keeps only its hash
    logins = rows(app, StaffSession)
    assert len(logins) == 1 and logins[0].revoked_at is None and len(logins[0].id_hash) == 64
    cookie = b.client.get_cookie("session")
    assert cookie is not None and cookie.http_only
    # logout revokes it on the server: replaying the old cookie no longer works
    old = cookie.value
    assert b.post("/console/logout").status_code == 302
    assert rows(app, StaffSession)[0].revoked_at is not None
    replay = Browser(app)
    replay.client.set_cookie("session", old)
    assert replay.get("/console/triage").status_code == 302


def test_wrong_password_unknown_user_and_lockout(app: Flask, team: dict[str, Any]) -> None:
    b = Browser(app)
    for who in ("urp", "nobody"):
        r = b.login(who, "sbagliata-sbagliata")
        assert r.status_code == 401
        assert "errati" in r.get_data(as_text=True)
    for _ in range(4):  # 1 above + 4 = 5 failures: the account locks
        assert b.login("urp", "sbagliata-sbagliata").status_code == 401
    assert b.login("urp").status_code == 401  # even the right password, while locked
    assert b.login("ref").status_code == 302  # other accounts unaffected


def test_csrf_is_required_on_every_form(
    app: Flask, team: dict[str, Any], muni: Municipality
) -> None:
    b = browser(app, "urp")
    case = new_case(app, muni, "testo senza categoria")
    r = b.client.post(f"/console/cases/{url(case)}/assign", data={"office": "LLPP"})
    assert r.status_code == 400 and "modulo" in r.get_data(as_text=True)
    assert load(app, case).status == "received"
    r = b.post(f"/console/cases/{url(case)}/assign", {"office": "LLPP"})
    assert r.status_code == 303
    assert load(app, case).status == "assigned"
    # a login form posted without the token is refused too (login CSRF)
    assert Browser(app).client.post("/console/login", data={"username": "urp"}).status_code == 400


def test_idle_session_expires(app: Flask, team: dict[str, Any]) -> None:
    from infra.runtime import runtime

    b = browser(app, "urp")
    with transaction(runtime(app).sessions) as s:
        row = s.scalars(select(StaffSession)).one()
        row.last_seen_at = datetime.now(UTC) - timedelta(hours=2)
    r = b.get("/console/triage")
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]


def test_no_open_redirect_after_login(app: Flask, team: dict[str, Any]) -> None:
    b = Browser(app)
    b.get("/console/login")
    r = b.post(
        "/console/login",
        {
            "municipality": "monteverde",
            "username": "urp",
            "password": PASSWORD,
            "next": "https://evil.example/x",
        },
    )
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/triage")


# ---------------------------------------------------------------- the walk through a case


def test_triage_to_close_through_the_console(
    app: Flask, team: dict[str, Any], muni: Municipality
) -> None:
    case = new_case(app, muni, "testo senza categoria, davanti al municipio", phone="3331234567")
    urp, ref, op, boss = (browser(app, n) for n in ("urp", "ref", "op", "boss"))

    page = urp.get("/console/triage").get_data(as_text=True)
    assert case.protocol in page and "davanti al municipio" in page and "counter" in page
    r = urp.post(
        f"/console/cases/{url(case)}/assign",
        {"office": "LLPP", "category": "strade", "next": "/console/triage"},
    )
    assert r.status_code == 303 and r.headers["Location"].endswith("/console/triage")
    assert case.protocol not in urp.get("/console/triage").get_data(as_text=True)

    queue = ref.get("/console/office").get_data(as_text=True)
    assert case.protocol in queue and 'id="load"' in queue
    assert 'class="row dispatch-form"' in queue  # dispatch in one action from the queue
    r = ref.post(
        f"/console/cases/{url(case)}/dispatch", {"operator": "op", "next": "/console/office"}
    )
    assert r.status_code == 303 and r.headers["Location"].endswith("/console/office")
    assert load(app, case).assignee_id is not None

    mine = op.get("/console/mine").get_data(as_text=True)
    assert case.protocol in mine
    page = op.get(f"/console/cases/{url(case)}").get_data(as_text=True)
    assert 'id="form-take"' in page and 'id="form-close"' not in page  # only allowed actions
    assert op.post(f"/console/cases/{url(case)}/take").status_code == 303
    assert (
        op.post(f"/console/cases/{url(case)}/note", {"text": "sopralluogo fatto"}).status_code
        == 303
    )
    assert (
        op.post(f"/console/cases/{url(case)}/resolve", {"note": "buca chiusa"}).status_code == 303
    )

    to_close = urp.get("/console/triage?tab=to_close").get_data(as_text=True)
    assert case.protocol in to_close
    r = urp.post(f"/console/cases/{url(case)}/close", {"reply": "Abbiamo riparato la buca."})
    assert r.status_code == 303
    closed = load(app, case)
    assert closed.status == "closed"
    assert [e.action for e in closed.events][-5:] == [
        "dispatch",
        "take",
        "note",
        "resolve",
        "close",
    ]
    bodies = [o.body for o in rows(app, OutboxMessage, OutboxMessage.case_id == case.id)]
    assert any("Abbiamo riparato la buca." in b for b in bodies)
    # the case page shows the whole history and the SMS thread
    page = boss.get(f"/console/cases/{url(case)}").get_data(as_text=True)
    assert "sopralluogo fatto" in page and "Abbiamo riparato la buca." in page


def test_a_refused_step_is_a_4xx_with_the_reason(
    app: Flask, team: dict[str, Any], muni: Municipality
) -> None:
    case = new_case(app, muni, "testo senza categoria")
    urp = browser(app, "urp")
    r = urp.post(f"/console/cases/{url(case)}/close", {"reply": "x"})
    assert r.status_code == 409 and "received" in r.get_data(as_text=True)
    r = urp.post(f"/console/cases/{url(case)}/assign", {"office": "NOPE"})
    assert r.status_code == 400 and "unknown office" in r.get_data(as_text=True)
    assert urp.post(f"/console/cases/{url(case)}/fly").status_code == 404
    assert load(app, case).status == "received" and len(load(app, case).events) == 1


def test_an_operator_cannot_open_another_offices_case(
    app: Flask, team: dict[str, Any], staff: Staff, muni: Municipality
) -> None:
    case = new_case(app, muni, "testo senza categoria")
    urp = browser(app, "urp")
    urp.post(f"/console/cases/{url(case)}/assign", {"office": "LLPP"})
    other = browser(app, "op_pm")
    assert other.get(f"/console/cases/{url(case)}").status_code == 404
    assert other.post(f"/console/cases/{url(case)}/take").status_code == 404
    assert staff.get("op_pm", f"/cases/{url(case)}").status_code == 404  # the API agrees
    hits = other.get(f"/console/search?q={case.protocol}").get_data(as_text=True)
    assert f'data-protocol="{case.protocol}"' not in hits
    assert other.get("/console/triage").status_code == 403
    assert browser(app, "op").get(f"/console/cases/{url(case)}").status_code == 200


def test_duplicate_and_not_competent(app: Flask, team: dict[str, Any], muni: Municipality) -> None:
    first = new_case(app, muni, "lampione spento in piazza Garibaldi", lat=45.0, long=9.0)
    second = new_case(
        app, muni, "il lampione di piazza Garibaldi è spento", lat=45.0002, long=9.0001
    )
    urp = browser(app, "urp")
    if load(app, first).status == "received":
        urp.post(f"/console/cases/{url(first)}/assign", {"office": "LLPP"})
    page = urp.get(f"/console/cases/{url(second)}").get_data(as_text=True)
    assert 'id="form-duplicate"' in page and first.protocol in page  # offered as similar
    assert (
        urp.post(f"/console/cases/{url(second)}/duplicate", {"of": first.protocol}).status_code
        == 303
    )
    assert load(app, second).status == "duplicate"
    third = new_case(app, muni, "testo senza categoria sul condominio")
    r = urp.post(
        f"/console/cases/{url(third)}/not_competent", {"reply": "Rivolgersi all'amministratore."}
    )
    assert r.status_code == 303 and load(app, third).status == "not_competent"


# ---------------------------------------------------------------- answer archive, segments


def test_answer_archive_fills_the_reply(
    app: Flask, team: dict[str, Any], muni: Municipality
) -> None:
    urp = browser(app, "urp")
    r = urp.post(
        "/console/answers",
        {
            "title": "Buca riparata",
            "step": "close",
            "category": "strade",
            "language": "it",
            "body": "La segnalazione {protocol} è stata risolta dall'ufficio {office}.",
        },
    )
    assert r.status_code == 303
    bad = urp.post(
        "/console/answers",
        {"title": "x", "step": "close", "language": "it", "body": "Ciao {nome}"},
    )
    assert bad.status_code == 400 and "{nome}" in bad.get_data(as_text=True)
    assert browser(app, "op").get("/console/answers").status_code == 403
    case = new_case(app, muni, "buca profonda in via Roma", category="strade")
    c = load(app, case)
    if c.status == "received":
        urp.post(f"/console/cases/{url(case)}/assign", {"office": "LLPP"})
    ref = browser(app, "ref")
    ref.post(f"/console/cases/{url(case)}/take")
    ref.post(f"/console/cases/{url(case)}/resolve")
    page = urp.get(f"/console/cases/{url(case)}").get_data(as_text=True)
    assert (
        f"La segnalazione {case.protocol} è stata risolta dall&#39;ufficio Lavori pubblici" in page
        or (f"La segnalazione {case.protocol} è stata risolta" in page)
    )
    assert 'class="answer-pick"' in page and "Buca riparata" in page


def test_segment_preview_counts_the_real_sms(
    app: Flask, team: dict[str, Any], muni: Municipality
) -> None:
    case = new_case(app, muni, "testo senza categoria")
    urp = browser(app, "urp")
    urp.get(f"/console/cases/{url(case)}")
    short = urp.post(
        f"/console/cases/{url(case)}/preview", {"step": "close", "text": "Fatto."}
    ).get_json()
    assert short["encoding"] == "GSM-7" and case.protocol in short["text"]
    assert short["segments"] == (1 if short["chars"] <= 160 else -(-short["chars"] // 153))
    curly = urp.post(
        f"/console/cases/{url(case)}/preview", {"step": "close", "text": "L’intervento è fatto."}
    ).get_json()
    assert curly["encoding"] == "UCS-2" and curly["segments"] >= short["segments"]
    long = urp.post(
        f"/console/cases/{url(case)}/preview", {"step": "close", "text": "parola " * 60}
    ).get_json()
    assert long["segments"] >= 3


# ---------------------------------------------------------------- notifications, search


def test_notifications_arrive_without_a_reload(
    app: Flask, team: dict[str, Any], muni: Municipality
) -> None:
    ref = browser(app, "ref")
    first = ref.get("/console/notifications.json").get_json()
    case = new_case(app, muni, "testo senza categoria")
    browser(app, "urp").post(f"/console/cases/{url(case)}/assign", {"office": "LLPP"})
    now = ref.get(f"/console/notifications.json?after={first['latest']}").get_json()
    assert now["unread"] == first["unread"] + 1
    assert [n["text"] for n in now["items"]] and case.protocol in now["items"][0]["text"]
    assert now["items"][0]["url"].endswith(url(case))
    assert Browser(app).get("/console/notifications.json").status_code == 401
    ref.post("/console/notifications/read")
    assert ref.get("/console/notifications.json").get_json()["unread"] == 0


def test_search_by_protocol_phone_text_and_date(
    app: Flask, team: dict[str, Any], muni: Municipality
) -> None:
    a = new_case(app, muni, "cassonetto rotto in via Verdi", phone="+39 333 765 4321")
    b = new_case(app, muni, "testo senza categoria su un albero", phone="3470000000")
    urp = browser(app, "urp")

    def found(q: str) -> set[str]:
        html = urp.get("/console/search", query_string={"q": q}).get_data(as_text=True)
        return {p for p in (a.protocol, b.protocol) if f'data-protocol="{p}"' in html}

    assert found(a.protocol) == {a.protocol}
    for sep in ("-", "."):  # written as parse_protocol reads them (it used to be taken as a phone)
        assert found(a.protocol.replace("/", sep)) == {a.protocol}, sep
    assert found(str(b.number)) == {b.protocol}
    for phone in ("333 765 4321", "+393337654321", "0039 333.765.4321"):
        assert found(phone) == {a.protocol}, phone
    assert found("albero") == {b.protocol}
    today = datetime.now(UTC).date()
    html = urp.get(
        "/console/search", query_string={"from": (today + timedelta(days=2)).isoformat()}
    ).get_data(as_text=True)
    assert f'data-protocol="{a.protocol}"' not in html
    assert urp.get("/console/search?from=ieri").status_code == 400


def test_language_switch(app: Flask, team: dict[str, Any]) -> None:
    urp = browser(app, "urp")
    assert "Smistamento" in urp.get("/console/triage").get_data(as_text=True)
    urp.post("/console/language", {"lang": "en", "next": "/console/triage"})
    assert "Triage" in urp.get("/console/triage").get_data(as_text=True)


# ---------------------------------------------------------------- supervisors, exports


def test_dashboard_csv_and_register(app: Flask, team: dict[str, Any], muni: Municipality) -> None:
    a = new_case(app, muni, "=cmd|' /C calc'!A0 testo senza categoria", phone="3330000001")
    new_case(app, muni, "buca profonda in via Roma", category="strade")
    boss = browser(app, "boss")
    page = boss.get("/console/dashboard")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert (
        'id="kpi-registered">2<' in html
        and 'id="chart-week"' in html
        and 'id="chart-channel"' in html
    )
    assert "<rect" in html  # bars drawn
    assert browser(app, "op").get("/console/dashboard").status_code == 403
    assert boss.get("/console/dashboard?from=2026-12-01&to=2026-01-01").status_code == 400
    # any list exports as CSV; a cell that a spreadsheet would run as a formula is defused
    urp = browser(app, "urp")
    csv = urp.get("/console/triage?format=csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    body = csv.get_data(as_text=True)
    assert body.splitlines()[0].startswith("protocol,") and a.protocol in body
    assert ",=cmd" not in body and "'=cmd" in body.replace('"', "")
    today = datetime.now(muni.tz).date().isoformat()
    reg = urp.get(f"/console/register?date={today}")
    assert reg.status_code == 200 and "attachment" in reg.headers["Content-Disposition"]
    assert len(reg.get_data(as_text=True).strip().splitlines()) == 3  # header + two cases
    assert browser(app, "op").get(f"/console/register?date={today}").status_code == 403


def test_attachments_are_served_only_to_who_may_see_the_case(
    app: Flask, team: dict[str, Any], muni: Municipality, tmp_path: Any
) -> None:
    import os

    from cases.models import Attachment
    from infra.runtime import runtime

    case = new_case(app, muni, "testo senza categoria con foto")
    folder = os.path.join(app.instance_path, "media", muni.code, str(case.id))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "1.jpg")
    with open(path, "wb") as fh:
        fh.write(b"\xff\xd8\xff\xe0fake-jpeg")
    with transaction(runtime(app).sessions) as s:
        att = Attachment(
            case_id=case.id,
            kind="photo",
            source_url="https://api.twilio.com/m/1",
            content_type="image/jpeg",
            size=13,
            storage_path=path,
            state="stored",
            created_at=datetime.now(UTC),
        )
        s.add(att)
        s.flush()
        aid = att.id
    urp = browser(app, "urp")
    r = urp.get(f"/console/attachments/{aid}")
    assert r.status_code == 200 and r.data.startswith(b"\xff\xd8") and r.mimetype == "image/jpeg"
    assert f"/console/attachments/{aid}" in urp.get(f"/console/cases/{url(case)}").get_data(
        as_text=True
    )
    urp.post(f"/console/cases/{url(case)}/assign", {"office": "LLPP"})
    assert browser(app, "op_pm").get(f"/console/attachments/{aid}").status_code == 404
    assert urp.get("/console/attachments/999999").status_code == 404


def test_the_recording_plays_through_the_console_with_the_account_credentials(
    app: Flask, team: dict[str, Any], muni: Municipality
) -> None:
    from cases.models import Attachment
    from infra.runtime import runtime
    from tests.fakes.provider import FakeProvider

    sid, token = "AC" + "c" * 32, "console-token"
    with FakeProvider(account_sid=sid, auth_token=token) as fake:
        wav = b"RIFF\x24\x00\x00\x00WAVEfmt fake-recording"
        rec_url = fake.add_media(wav, "audio/wav")
        app.config.update(
            TWILIO_ACCOUNT_SID=sid, TWILIO_AUTH_TOKEN=token, TWILIO_API_BASE_URL=fake.base_url
        )
        case = new_case(app, muni, "testo senza categoria detto al telefono", channel="voice")
        with transaction(runtime(app).sessions) as s:
            att = Attachment(
                case_id=case.id,
                kind="recording",
                source_url=rec_url,
                duration_seconds=12,
                state="available",
                created_at=datetime.now(UTC),
            )
            s.add(att)
            s.flush()
            aid = att.id
        urp = browser(app, "urp")
        page = urp.get(f"/console/cases/{url(case)}").get_data(as_text=True)
        assert f'<audio controls preload="none" src="/console/attachments/{aid}"' in page
        r = urp.get(f"/console/attachments/{aid}")
        assert r.status_code == 200 and r.data == wav and r.mimetype == "audio/wav"
        # the provider refusing (wrong credentials) is a 502 for this request, not a 500
        app.config["TWILIO_AUTH_TOKEN"] = "wrong"
        runtime(app).forget("provider")  # the process's one client, as a restart rebuilds it
        assert urp.get(f"/console/attachments/{aid}").status_code == 502


def test_changing_ones_own_password_ends_the_other_logins(app: Flask, team: dict[str, Any]) -> None:
    here, elsewhere = browser(app, "urp"), browser(app, "urp")
    here.get("/console/password")
    new = "un'altra password lunga"
    r = here.post("/console/password", {"current": "sbagliata", "new": new, "confirm": new})
    assert r.status_code == 400 and "wrong" in r.get_data(as_text=True)
    r = here.post("/console/password", {"current": PASSWORD, "new": new, "confirm": new + "x"})
    assert r.status_code == 400
    r = here.post("/console/password", {"current": PASSWORD, "new": "corta", "confirm": "corta"})
    assert r.status_code == 400 and "10" in r.get_data(as_text=True)
    r = here.post("/console/password", {"current": PASSWORD, "new": new, "confirm": new})
    assert r.status_code == 303
    assert here.get("/console/triage").status_code == 200  # this login goes on
    assert elsewhere.get("/console/triage").status_code == 302  # the other one ended
    assert Browser(app).login("urp").status_code == 401
    assert Browser(app).login("urp", new).status_code == 302


def test_no_cookie_session_outside_the_console(app: Flask, team: dict[str, Any]) -> None:
    """Webhooks, the API and the status page never read or set the console's login cookie."""
    b = browser(app, "urp")
    r = b.client.get("/api/v1/me")  # the console's cookie does not log anyone in to the API
    assert r.status_code == 401 and "Set-Cookie" not in r.headers
    assert "Set-Cookie" not in b.client.get("/track/2026-0000001").headers
    assert b.get("/console/triage").status_code == 200


def test_login_attempts_are_throttled_per_address(app: Flask, team: dict[str, Any]) -> None:
    app.config["CONSOLE_LOGINS_PER_MINUTE"] = 3  # a burst of 4, then one every 20 s
    here = Browser(app)
    here.client.environ_base["REMOTE_ADDR"] = "198.51.100.7"
    codes = [here.login("nobody", "sbagliata-sbagliata").status_code for _ in range(6)]
    assert codes[:4] == [401] * 4 and codes[4:] == [429, 429], codes
    assert "riprova tra" in here.login("urp").get_data(as_text=True)  # even the right one
    there = Browser(app)
    there.client.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    assert there.login("urp").status_code == 302  # another address is not held up


def test_behind_a_proxy_the_forwarded_address_is_throttled(
    db_url: str, config: Any, tmp_path: Any
) -> None:
    from infra.runtime import runtime
    from lineadiretta.app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "t",
            "DATABASE_URL": db_url,
            "LD_CONFIG": config,
            "REDIS_URL": None,
            "PROXY_HOPS": 1,
            "PUBLIC_BASE_URL": "https://comune.example.it",
            "CONSOLE_LOGINS_PER_MINUTE": 1,  # a burst of 2
        }
    )
    try:
        b = Browser(app)

        def attempt(ip: str) -> int:
            b.client.environ_base["HTTP_X_FORWARDED_FOR"] = ip
            return int(b.login("nobody", "sbagliata-sbagliata").status_code)

        assert [attempt("192.0.2.1") for _ in range(3)] == [401, 401, 429]
        assert attempt("192.0.2.2") == 401  # the proxy's own address is not what counts
    finally:
        runtime(app).engine.dispose()


def test_the_overdue_list_exports_with_local_due_dates(
    app: Flask, team: dict[str, Any], muni: Municipality
) -> None:
    from infra.runtime import runtime

    case = new_case(app, muni, "testo senza categoria, scaduto")
    due = datetime(2026, 1, 10, 23, 30, tzinfo=UTC)  # already 11 January in Rome
    with transaction(runtime(app).sessions) as s:
        got = s.get(Case, case.id)
        assert got is not None
        got.due_at = due
    body = browser(app, "boss").get("/console/dashboard?format=csv").get_data(as_text=True)
    header, row = body.strip().splitlines()[:2]
    assert header == "protocol,office,holder,days_overdue,due"
    assert row.startswith(case.protocol) and row.endswith(",2026-01-11")
