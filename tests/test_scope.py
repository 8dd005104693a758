"""Every view scoped to its viewer (issue "Hostile input and staff security", item 1).

A citizen has a Social Services case and an Environment case; another citizen has only a
Social Services case. An operator and a referent of Environment, and a member of the URP of
another municipality, visit every page of the console and every route of the API (taken from
the application's URL map, not a list kept by hand), plain, as CSV and with every search
filter, and the e-mails and notifications they are sent are read: nothing of a case outside
their scope (its protocol number, its text, its phone) appears anywhere."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import pytest
from flask import Flask
from sqlalchemy import select

from cases.auth import set_password
from cases.db import transaction
from cases.mail import voice_case_email
from cases.models import Case, EmailMessage, Role, User
from cases.notify import Ctx
from cases.registration import NewAttachment, add_attachment, register
from cases.services import create_user
from cases.workflow import can_view, visible_to
from infra.runtime import runtime
from ivr.simulator import Switchboard
from tests.conftest import Staff, signed_post
from tests.test_console import PASSWORD, Browser, team  # noqa: F401 (a fixture)

CITIZEN = "+393471234567"  # a Social Services case and an Environment case
LONER = "+393489876543"  # only a Social Services case: their phone is outside scope too
NOW = datetime.now(UTC)
PERSONAS = ("op_amb", "ref_amb", "urp_vf")


def _case(app: Flask, muni: Any, text: str, phone: str, category: str) -> Case:
    with transaction(runtime(app).sessions) as s:
        ctx = Ctx(muni, NOW, "https://comune.example.it")
        case = register(
            s, ctx, confirm=True, channel="sms", text=text, phone=phone, category=category
        ).case
        s.flush()
        add_attachment(ctx, case, NewAttachment("photo", "https://x.example/p.jpg", "image/jpeg"))
        s.flush()
        s.expunge_all()
    return case


@pytest.fixture
def world(app: Flask, staff: Staff, muni: Any, team: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    social = _case(app, muni, "SEGRETO assistenza domiciliare per mia madre", CITIZEN, "sociale")
    loner = _case(app, muni, "RISERVATO contributo per l'affitto", LONER, "sociale")
    mine = _case(app, muni, "Topi nel cortile di via Verdi 3", CITIZEN, "infestazioni")
    assert (social.office, loner.office, mine.office) == ("SOC", "SOC", "AMB")
    other = runtime(app).config.get("valfiorita")
    with transaction(runtime(app).sessions) as s:
        for name, role, office, m in (
            ("op_amb", "operator", "AMB", muni),
            ("ref_amb", "referent", "AMB", muni),
            ("urp_vf", "urp", None, other),
        ):
            email = f"{name}@comune.example.it"
            user, token = create_user(
                s, Ctx(m, NOW), name, role, office, full_name=name, email=email
            )
            set_password(user, PASSWORD)
            staff.tokens[name] = token
    with runtime(app).sessions() as s:
        ids = {
            c.protocol: [a.id for a in s.get(Case, c.id).attachments]  # type: ignore[union-attr]
            for c in (social, loner, mine)
        }
    return {"social": social, "loner": loner, "mine": mine, "attachments": ids}


def _outside(world: dict[str, Any], who: str) -> list[Case]:
    if who == "urp_vf":
        return [world["social"], world["loner"], world["mine"]]
    return [world["social"], world["loner"]]


def _tells(case: Case, in_scope_phones: set[str]) -> list[str]:
    """What would give a case away: its number as written anywhere, its text, its phone
    (unless a case in scope has the same phone), in any format."""
    tells = [case.protocol, case.protocol.replace("/", "-"), case.original_text[:16]]
    if case.phone and case.phone not in in_scope_phones:
        tells += [case.phone, case.phone[3:], case.phone[-7:]]
    return tells


def _urls(app: Flask, world: dict[str, Any]) -> list[str]:
    """Every GET route of the console and the API, each parameter filled with each case's
    (or row's) identifiers; plain, as CSV, and with every filter the views read."""
    cases = [world["social"], world["loner"], world["mine"]]
    fills = {
        "protocol": [c.protocol.replace("/", "-") for c in cases],
        "aid": [str(a) for ids in world["attachments"].values() for a in ids],
    }
    queries = ["", "format=csv", "all=1", "tab=closed", "status=assigned", "office=SOC"]
    for c in cases:
        word = quote(c.original_text.split()[0])
        queries += [f"q={word}", f"q={quote(c.phone)}", f"phone={quote(c.phone)}&format=csv"]
        queries += [f"q={quote(c.protocol)}", f"text={word}&status=assigned"]
    urls: list[str] = []
    for rule in app.url_map.iter_rules():
        methods = rule.methods or set()
        if not rule.endpoint.startswith(("console.", "api.")) or "GET" not in methods:
            continue
        if rule.endpoint in ("console.static", "console.login"):
            continue
        names = sorted(rule.arguments)
        for values in itertools.product(*(fills.get(n, ["1"]) for n in names)):
            given = dict(zip(names, values, strict=True))
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m, g=given: g[m.group(1)], rule.rule)
            urls += [f"{path}?{q}" if q else path for q in queries]
    return urls


@pytest.mark.parametrize("who", PERSONAS)
def test_no_page_or_route_shows_a_case_outside_the_viewers_scope(
    app: Flask, staff: Staff, muni: Any, world: dict[str, Any], who: str
) -> None:
    # what staff are sent: a call from the citizen routed to Environment (its operators'
    # notification and its referents' e-mail name the caller's other cases)
    call = Switchboard(
        lambda path, form: _post(app, path, form),
        from_=CITIZEN,
        to=muni.voice.numbers[0],
        inputs=["1", _digit_for(muni, "infestazioni"), "Vespe sul balcone di via Verdi 3", "1"],
    ).run()
    assert all(status == 200 for _, _, status in call.requests), call.requests
    with runtime(app).sessions() as s:
        voice = s.scalar(select(Case).where(Case.channel == "voice"))
        assert voice is not None and voice.office == "AMB"
        if who == "ref_amb":
            ctx = Ctx(muni, NOW, "https://comune.example.it")
            ref = s.scalar(select(User).where(User.name == "ref_amb"))
            assert voice_case_email(s, ctx, voice, referents=[ref]) is not None
            s.commit()

    outside = _outside(world, who)
    in_scope = {c.phone for c in (world["mine"],) if who != "urp_vf"} | {CITIZEN}
    if who == "urp_vf":
        in_scope = set()
    tells = [t for c in outside for t in _tells(c, in_scope)]
    browser = Browser(app)
    assert (
        browser.login(who, muni="valfiorita" if who == "urp_vf" else "monteverde").status_code
        == 302
    )
    auth = {"Authorization": f"Bearer {staff.tokens[who]}"}
    api = app.test_client()
    seen: list[tuple[str, int]] = []
    for url in _urls(app, world):
        r = browser.get(url) if url.startswith("/console") else api.get(url, headers=auth)
        seen.append((url, r.status_code))
        assert r.status_code < 500, (url, r.status_code)
        body = r.get_data(as_text=True)
        asked = unquote(url)  # a refusal may repeat what the viewer typed: not a leak
        leaked = [t for t in tells if t in body and t not in asked]
        assert not leaked, f"{who} sees {leaked} at {url}"
    assert sum(1 for _, status in seen if status == 200) > 20, seen
    with runtime(app).sessions() as s:
        mails = s.scalars(select(EmailMessage)).all()
        for mail in mails:
            if any(f"{who}@" in r for r in mail.recipients):
                leaked = [t for t in tells if t in f"{mail.subject}\n{mail.body}"]
                assert not leaked, f"{who} is e-mailed {leaked}"
    if who == "ref_amb":
        assert any("ref_amb@comune.example.it" in m.recipients for m in mails)


def _post(app: Flask, path: str, form: dict[str, str]) -> tuple[int, str]:
    r = signed_post(app.test_client(), path, form)
    return r.status_code, r.get_data(as_text=True)


def _digit_for(muni: Any, category: str) -> str:
    codes = [c for c in (muni.voice.menu_categories or [c.code for c in muni.categories])]
    codes = [c for c in codes if c != "altro"]
    return str(codes.index(category) + 1)


def test_the_rule_and_the_query_agree(
    app: Flask, staff: Staff, muni: Any, world: dict[str, Any]
) -> None:
    """`can_view` (a case in hand) and `visible_to` (a query) are one rule in two forms."""
    with runtime(app).sessions() as s:
        cases = s.scalars(select(Case)).all()
        users = s.scalars(select(User)).all()
        assert {u.role for u in users} >= {r.value for r in Role if r != Role.ADMIN}
        for u in users:
            listed = set(s.scalars(select(Case.id).where(visible_to(u))))
            assert listed == {c.id for c in cases if can_view(u, c)}, u.name
