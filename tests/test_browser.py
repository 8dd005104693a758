"""The console in a real browser (Debian's headless Chromium, driven by Playwright) against the
running service, a Celery worker on Redis, PostgreSQL and the fake provider: a citizen's text
walked from triage to close by each role, the SMS going out, the status page showing it closed.
Screenshots of the main pages land in test-artifacts/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cases.auth import set_password
from cases.db import transaction
from cases.models import Case, User
from cases.notify import Ctx
from cases.services import create_user
from tests.conftest import IN_CI, ROOT, _truncate
from tests.test_sms_e2e import Stack, reply, running_stack, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
CITIZEN = "+393331234999"
PASSWORD = "password-di-prova-lunga"
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "test-artifacts" / "screenshots"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if IN_CI:
            pytest.fail("Debian's chromium is required for the browser tests in CI")
        pytest.skip("chromium not installed (the test command installs it)")
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[Stack]:
    _truncate(pg_url)
    # every role logs in from 127.0.0.1: the per-address login limit would get in the way
    with running_stack(
        tmp_path_factory.mktemp("browser"), pg_url, CONSOLE_LOGINS_PER_MINUTE="120"
    ) as st:
        yield st


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def add_staff(st: Stack, name: str, role: str, office: str | None = None) -> None:
    with transaction(st.sessions) as s:
        user, _ = create_user(
            s, Ctx(st.muni, datetime.now(UTC)), name, role, office, full_name=name.title()
        )
        set_password(user, PASSWORD)


def login(chromium: Any, st: Stack, name: str, **context: Any) -> Any:
    page = chromium.new_context(**context).new_page()
    page.goto(st.base + "/console/login")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#logout")
    return page


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def case_of(st: Stack, phone: str) -> Case:
    with st.sessions() as s:
        case = s.scalar(select(Case).where(Case.phone == phone).order_by(Case.id.desc()))
        assert case is not None
        s.expunge(case)
        return case


def test_a_case_from_triage_to_close_in_the_browser(stack: Stack, chromium: Any) -> None:
    st = stack
    for args in (
        ("urp", "urp"),
        ("ref", "referent", "LLPP"),
        ("op", "operator", "LLPP"),
        ("op_pm", "operator", "PM"),
        ("boss", "supervisor"),
    ):
        add_staff(st, *args)
    # The citizen texts something the classifier cannot place: it waits for URP triage.
    first = reply(
        st.text("Buongiorno, davanti al municipio c'è una situazione da verificare", frm=CITIZEN)
    )
    case = case_of(st, CITIZEN)
    assert case.protocol in first and case.status == "received"
    path = case.protocol.replace("/", "-")

    # The referent keeps the office queue open: the case's arrival shows without a reload.
    ref = login(chromium, st, "ref")
    ref.goto(st.base + "/console/office")

    urp = login(chromium, st, "urp")
    assert urp.url.endswith("/console/triage")
    # URP keeps an answer in the archive, with placeholders.
    urp.goto(st.base + "/console/answers")
    urp.fill("#a-title", "Intervento concluso")
    urp.select_option("#a-step", "close")
    urp.fill("#a-body", "L'ufficio {office} ha concluso l'intervento per la pratica {protocol}.")
    urp.click("#answer-form button.primary")
    urp.wait_for_selector("text=Intervento concluso")
    shot(urp, "answers")

    urp.goto(st.base + "/console/triage")
    item = urp.locator(f'li[data-protocol="{case.protocol}"]')
    assert "situazione da verificare" in item.inner_text()
    shot(urp, "triage")
    item.locator("select[name=category]").select_option("strade")
    item.locator("select[name=office]").select_option("LLPP")
    item.locator("button.primary").click()
    urp.wait_for_selector(".flash.ok")
    assert urp.locator(f'li[data-protocol="{case.protocol}"]').count() == 0

    # the notification reached the referent's open page
    ref.wait_for_selector("#notif-count:not([hidden])", timeout=45000)
    ref.wait_for_selector(f".toast:has-text('{case.protocol}')", timeout=45000)
    ref.reload()
    assert case.protocol in ref.inner_text("table.cases")
    shot(ref, "office-queue")
    ref.click(f"a:has-text('{case.protocol}')")
    ref.select_option("#dispatch-operator", "op")
    ref.click("#do-dispatch")
    ref.wait_for_selector(".flash.ok")
    assert "Op" in ref.inner_text("#assignee")

    # Another office's operator cannot open it.
    other = login(chromium, st, "op_pm")
    resp = other.goto(f"{st.base}/console/cases/{path}")
    assert resp is not None and resp.status == 404

    op = login(chromium, st, "op")
    assert op.url.endswith("/console/mine")
    op.click(f"a:has-text('{case.protocol}')")
    assert op.locator("#form-close").count() == 0  # only what an operator may do
    op.click("#do-take")
    op.wait_for_selector("#case-status[data-status=in_progress]")
    op.fill("#resolve-note", "Verificato e sistemato")
    op.click("#do-resolve")
    op.wait_for_selector("#case-status[data-status=resolved]")
    shot(op, "case-operator")

    urp.goto(st.base + "/console/triage?tab=to_close")
    urp.click(f"a:has-text('{case.protocol}')")
    # the page's script fills the box when an answer is picked: under load the click's
    # navigation may return before that script has run, so wait for the page, then the box
    urp.wait_for_load_state("load")
    urp.select_option("#pick-close", label="Intervento concluso")
    urp.wait_for_function("document.querySelector('#close-reply').value !== ''")
    filled = urp.input_value("#close-reply")
    assert case.protocol in filled and "{office}" not in filled
    urp.wait_for_selector("#seg-close-reply[data-segments]")
    segments = urp.inner_text("#seg-close-reply")
    assert re.search(r"\b[12]\b", segments), segments
    shot(urp, "case-close")
    urp.click("#do-close")
    urp.wait_for_selector("#case-status[data-status=closed]")

    # The citizen's text goes out through the worker and the (fake) provider.
    def closing_text() -> str | None:
        for m in st.fake.sent_to(CITIZEN):
            if "ha concluso l'intervento" in m["body"]:
                return str(m["body"])
        return None

    wait_until(closing_text, 90, "the closing SMS")
    # the link the citizen got with the protocol number, in the reply to their first text
    link = re.search(r"https?://\S+/track/[0-9-]+\?t=[\w-]+", first)
    assert link, first

    # The status page from the SMS link, on a phone-sized screen.
    citizen = chromium.new_context(viewport={"width": 390, "height": 844}).new_page()
    citizen.goto(link.group(0))
    text = citizen.inner_text("body")
    assert case.protocol in text and "conclus" in text.lower()
    assert "ha concluso l'intervento" in text
    assert CITIZEN[-7:] not in citizen.content()
    shot(citizen, "track")

    boss = login(chromium, st, "boss")
    assert boss.url.endswith("/console/dashboard")
    assert boss.locator("#chart-week rect").count() >= 1
    shot(boss, "dashboard")
    boss.goto(f"{st.base}/console/cases/{path}")
    history = boss.inner_text("#history")
    for step in ("Assegnato", "Affidato", "Preso in carico", "Risolto", "Chiuso"):
        assert step in history, history
    shot(boss, "case-history")


def test_keyboard_and_login_errors_in_the_browser(stack: Stack, chromium: Any) -> None:
    st = stack
    with st.sessions() as s:
        if s.scalar(select(User).where(User.name == "urp")) is None:
            add_staff(st, "urp", "urp")
    page = chromium.new_context().new_page()
    page.goto(st.base + "/console/login")
    page.fill("#username", "urp")
    page.fill("#password", "sbagliata-sbagliata")
    page.click("button[type=submit]")
    assert "errati" in page.inner_text("#error")
    shot(page, "login-error")
    page = login(chromium, st, "urp")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q-top"
    page.keyboard.type("municipio")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/console/search\?q=municipio"))
    page.click("body")
    page.keyboard.press("g")
    page.keyboard.press("n")
    page.wait_for_url(re.compile(r".*/console/notifications$"))
    # every role logs in to its own home: admin too (the others in the walk above)
    with st.sessions() as s:
        if s.scalar(select(User).where(User.name == "admin1")) is None:
            add_staff(st, "admin1", "admin")
    admin = login(chromium, st, "admin1")
    assert admin.url.endswith("/console/dashboard")
    for nav in ("Smistamento", "Coda dell'ufficio", "Archivio risposte", "Statistiche"):
        assert nav in admin.inner_text("header nav")
    admin.click("#logout")
    admin.wait_for_selector("#login-form")
