"""The citizen's status page: full with the SMS link's token, status and office without it,
nothing personal either way, on both backends."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cases.config import Config, Municipality
from cases.db import transaction
from cases.models import Case, OutboxMessage, User
from cases.notify import Ctx
from cases.protocol import url_protocol
from cases.registration import NewAttachment, register
from cases.services import create_user
from cases.workflow import perform
from infra.runtime import runtime

T0 = datetime(2026, 3, 10, 9, 15, tzinfo=UTC)  # 10:15 in Rome
PHONE = "+393331234567"
TEXT = "Problema in via Verdi 3 da una settimana, nessuno interviene"
SECRET_NOTE = "Il segnalante è il cugino del sindaco, chiamare prima"


class Town:
    """Staff and helpers to put a case in any state at controlled times."""

    def __init__(self, app: Flask, muni: Municipality):
        self.sessions = runtime(app).sessions
        self.muni = muni
        self.office = next(o.code for o in muni.offices if not o.urp)
        with transaction(self.sessions) as s:
            c = self.ctx(T0)
            create_user(s, c, "urp", "urp", full_name="Ufficio URP")
            op, _ = create_user(s, c, "mrossi", "operator", self.office, full_name="Mario Rossi")
            op.email = "mario.rossi@comune.example.it"
            create_user(s, c, "boss", "supervisor")

    def ctx(self, now: datetime) -> Ctx:
        return Ctx(self.muni, now, base_url="https://comune.example.it")

    def new(self, text: str = TEXT, language: str = "it", photos: int = 0) -> int:
        with transaction(self.sessions) as s:
            atts = [NewAttachment("photo", f"https://media.example/{i}") for i in range(photos)]
            case = register(
                s,
                self.ctx(T0),
                confirm=True,
                channel="sms",
                phone=PHONE,
                text=text,
                language=language,
                attachments=atts,
            ).case
            return case.id

    def do(self, cid: int, who: str, action: str, body: dict[str, Any], at: datetime) -> None:
        with transaction(self.sessions) as s:
            case = s.get(Case, cid)
            user = s.scalar(select(User).where(User.name == who))
            assert case is not None and user is not None
            perform(s, self.ctx(at), user, case, action, body)

    def path(self, cid: int, token: bool = True) -> str:
        with self.sessions() as s:
            case = s.get(Case, cid)
            assert case is not None
            p = f"/track/{url_protocol(case.year, case.number)}"
            return f"{p}?t={case.track_token}" if token else p

    def worked(self, cid: int) -> None:
        """Assigned, taken, an internal and a public note, resolved, closed with a reply."""
        self.do(cid, "urp", "assign", {"office": self.office}, T0 + timedelta(hours=1))
        self.do(cid, "mrossi", "take", {}, T0 + timedelta(hours=2))
        self.do(cid, "mrossi", "note", {"text": SECRET_NOTE}, T0 + timedelta(hours=3))
        self.do(
            cid,
            "mrossi",
            "note",
            {"text": "Sopralluogo previsto per giovedì", "public": True},
            T0 + timedelta(hours=4),
        )


@pytest.fixture
def town(app: Flask, muni: Municipality) -> Town:
    return Town(app, muni)


def page(client: FlaskClient, path: str, **kw: Any) -> tuple[int, str, Any]:
    r = client.get(path, **kw)
    return r.status_code, unescape(r.get_data(as_text=True)), r.headers


def assert_private(html: str) -> None:
    digits = re.sub(r"\D", "", html)
    assert "3331234567" not in digits and "1234567" not in html
    assert SECRET_NOTE not in html
    assert "@" not in html  # no staff or office e-mail


def test_full_view_with_the_token(client: FlaskClient, town: Town, muni: Municipality) -> None:
    cid = town.new(photos=2)
    town.worked(cid)
    status, html, headers = page(client, town.path(cid))
    assert status == 200
    assert "2026/0000001" in html and muni.name in html
    assert "in lavorazione" in html  # status label
    assert "Mario Rossi" in html  # the person responsible (L. 241/1990 art. 8)
    office = muni.office(town.office)
    assert office is not None and office.name in html
    assert "09/04/2026" in html  # due date: 30 days, local date
    assert TEXT in html  # what the citizen sent
    assert "2 foto allegate" in html
    # the public timeline, in local time (UTC+1 in March)
    assert "10/03/2026 10:15" in html and "Segnalazione registrata" in html
    assert "Assegnato all'ufficio" in html and "Preso in carico" in html
    assert "Sopralluogo previsto per giovedì" in html and "10/03/2026 14:15" in html
    assert_private(html)
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "noindex" in headers["X-Robots-Tag"]
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "style-src 'self' 'unsafe-inline'" in csp
    assert "script-src" not in csp
    assert '<html lang="it">' in html and 'name="viewport"' in html
    assert "<script" not in html and "http://" not in html.replace("http://localhost", "")


def test_without_the_token_only_status_and_office(
    client: FlaskClient, town: Town, muni: Municipality
) -> None:
    cid = town.new()
    town.worked(cid)
    status, html, headers = page(client, town.path(cid, token=False))
    assert status == 200 and headers["Cache-Control"] == "no-store"
    office = muni.office(town.office)
    assert office is not None and office.name in html and "in lavorazione" in html
    for hidden in (TEXT, "Mario Rossi", "Sopralluogo", "09/04/2026", "Preso in carico"):
        assert hidden not in html
    assert_private(html)


def test_a_wrong_token_gets_the_same_page_as_none_and_a_log_line(
    client: FlaskClient, town: Town, caplog: pytest.LogCaptureFixture
) -> None:
    cid = town.new()
    town.worked(cid)
    _, without, _ = page(client, town.path(cid, token=False))
    good = town.path(cid)
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    with caplog.at_level(logging.WARNING, logger="track.views"):
        status, html, _ = page(client, forged)
    assert status == 200 and html == without
    assert any(
        "wrong token" in r.getMessage() and "2026/0000001" in r.getMessage() for r in caplog.records
    )
    status, html, _ = page(client, town.path(cid, token=False) + "?t=" + "x" * 5000)
    assert status == 200 and html == without


@pytest.mark.parametrize(
    "path", ["/track/2026-0009999", "/track/not-a-number", "/track/2026-0000000", "/track/1-1"]
)
def test_unknown_or_malformed_protocol_is_a_404_page(
    client: FlaskClient, town: Town, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    town.new()
    with caplog.at_level(logging.INFO, logger="track.views"):
        status, html, headers = page(client, path + "?t=whatever")
    assert status == 404 and "<html" in html and "non trovata" in html
    assert headers["Cache-Control"] == "no-store"
    assert any(r.name == "track.views" for r in caplog.records)


def test_english_by_parameter_by_case_language_and_by_browser(
    client: FlaskClient, town: Town
) -> None:
    cid = town.new()
    town.worked(cid)
    _, html, _ = page(client, town.path(cid) + "&lang=en")
    assert '<html lang="en">' in html and "in progress" in html and "Taken in charge" in html
    assert "History" in html and "Italiano" in html  # a link back to Italian
    en_case = town.new(text="Broken street light in via Dante", language="en")
    _, html, _ = page(client, town.path(en_case))
    assert '<html lang="en">' in html and "Report registered" in html
    _, html, _ = page(client, town.path(en_case) + "&lang=it")
    assert '<html lang="it">' in html
    _, html, _ = page(client, "/track/2026-0009999", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert '<html lang="en">' in html and "Report not found" in html


def test_a_closed_case_shows_the_reply(client: FlaskClient, town: Town) -> None:
    cid = town.new()
    town.worked(cid)
    town.do(cid, "mrossi", "resolve", {"note": "nota interna per URP"}, T0 + timedelta(days=1))
    reply = "Il lampione è stato sostituito. Grazie della segnalazione."
    town.do(cid, "urp", "close", {"reply": reply}, T0 + timedelta(days=2))
    _, html, _ = page(client, town.path(cid))
    assert "conclusa" in html and "La nostra risposta" in html and reply in html
    assert "12/03/2026 10:15" in html  # closed at, local time
    assert "nota interna per URP" not in html
    assert "Termine" not in html  # no due date once it is closed
    _, reduced, _ = page(client, town.path(cid, token=False))
    assert reply not in reduced and "conclusa" in reduced


def test_an_annulled_case_stays_visible_as_annulled(client: FlaskClient, town: Town) -> None:
    cid = town.new()
    reason = "registrazione doppia per errore dell'operatore"
    town.do(cid, "boss", "annul", {"reason": reason}, T0 + timedelta(hours=1))
    status, html, _ = page(client, town.path(cid))
    assert status == 200 and "annullata" in html and "2026/0000001" in html
    assert "10/03/2026 11:15" in html  # when it was annulled
    assert reason not in html  # the reason is staff's, not for the web
    _, reduced, _ = page(client, town.path(cid, token=False))
    assert "annullata" in reduced


def test_the_link_in_a_real_sms_opens_the_full_page(client: FlaskClient, town: Town) -> None:
    cid = town.new()
    town.do(cid, "urp", "assign", {"office": town.office}, T0 + timedelta(hours=1))
    with town.sessions() as s:
        bodies = [m.body for m in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
    assert len(bodies) == 2  # registered, then assigned
    link = re.search(r"https://\S+", bodies[0])
    assert link is not None
    parts = urlsplit(link.group(0).rstrip("."))
    assert parts.netloc == "comune.example.it"
    status, html, _ = page(client, f"{parts.path}?{parts.query}")
    assert status == 200 and TEXT in html and "Assegnato all'ufficio" in html


def test_the_municipality_comes_from_the_token_or_the_m_parameter(
    app: Flask, client: FlaskClient, config: Config
) -> None:
    """Both municipalities have a 2026/0000001: the token tells them apart, else `m`, else ask."""
    m1, m2 = config.municipality[0], config.municipality[1]
    ids = []
    with transaction(runtime(app).sessions) as s:
        for m, text in ((m1, "buca in via Roma"), (m2, "rami caduti in piazza")):
            ids.append(
                register(s, Ctx(m, T0), confirm=True, channel="sms", phone=PHONE, text=text).case.id
            )
    with runtime(app).sessions() as s:
        tokens = [s.get(Case, i).track_token for i in ids]  # type: ignore[union-attr]
    _, html, _ = page(client, f"/track/2026-0000001?t={tokens[1]}")
    assert "rami caduti" in html and m2.name in html
    _, html, _ = page(client, f"/track/2026-0000001?t={tokens[0]}")
    assert "buca in via Roma" in html and m1.name in html
    _, html, _ = page(client, f"/track/2026-0000001?m={m2.code}")
    assert m2.name in html and "rami caduti" not in html
    status, html, _ = page(client, "/track/2026-0000001")
    assert status == 200 and f"m={m1.code}" in html and f"m={m2.code}" in html
    status, _, _ = page(client, "/track/2026-0000001?m=nowhere")
    assert status == 404
    # a token of one municipality does not open the other's case of the same number
    _, html, _ = page(client, f"/track/2026-0000001?m={m1.code}&t={tokens[1]}")
    assert "rami caduti" not in html and "buca in via Roma" not in html


def test_the_number_as_printed_with_a_slash_finds_the_same_page(
    client: FlaskClient, town: Town
) -> None:
    cid = town.new()
    dash = town.path(cid)
    year, number = dash.split("/track/")[1].split("?")[0].split("-")
    slash = f"/track/{year}/{number}?" + dash.split("?", 1)[1]
    assert page(client, slash)[:2] == page(client, dash)[:2]
    status, html, _ = page(client, "/track/2026/9999999")
    assert status == 404 and "<html" in html
