"""The product's words come from gettext catalogues (cases/translations/*.po): every word the
code and the templates ask for is in every catalogue, translated, with the same placeholders;
`pybabel extract` (babel.cfg) finds them as a translator's tools would."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from cases.i18n import CATALOGUES, LANGUAGES, plural, translate
from cases.models import Status
from cases.notify import status_label
from cases.tracking import CITIZEN_WORDED
from cases.workflow import MOVES, STEPS, action_label, step_label
from ivr.prompts import prompt, spoken_date
from tests.conftest import ROOT

KEYWORDS = {"t": None, "N_": None, "translate": (2,)}  # t("key"), N_("key"), translate(lang, "key")
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
PLACEHOLDER = re.compile(r"\{(\w+)\}")


# what the switchboard says: prompt(lang, "key"), t.say(target, "key"), say_status(...)
IVR_KEYWORDS = {"prompt": (2,), "say": (2,)}
# the status page: t("key"), tn("one", "many", n)
TRACK_KEYWORDS = {"t": None, "tn": (1, 2)}
# the status names and the names of the history's entries are keys the models give
DOMAINS = {
    "messages": KEYWORDS,
    "ivr": IVR_KEYWORDS,
    "track": TRACK_KEYWORDS,
    "status": {},
    "history": {},
}
PACKAGES = {
    "messages": ("console",),
    "ivr": ("ivr",),
    "track": ("track",),
    "status": (),
    "history": (),
}


def _asked(domain: str = "messages") -> dict[str, str]:
    """Every key the product asks for in `domain`'s catalogue, and where."""
    asked: dict[str, str] = {}
    for package in PACKAGES[domain]:
        for filename, lineno, message, *_ in extract_from_dir(
            ROOT / package, METHODS, keywords=DOMAINS[domain], comment_tags=()
        ):
            for key in (message,) if isinstance(message, str) else message:
                asked.setdefault(key, f"{package}/{filename}:{lineno}")
    return asked


def _catalogue(language: str, domain: str = "messages") -> dict[str, str]:
    """Key -> words; a plural entry is there under each of its ids, with all its forms (empty
    when one form is missing)."""
    words: dict[str, str] = {}
    with open(CATALOGUES / language / "LC_MESSAGES" / f"{domain}.po", "rb") as fh:
        for m in read_po(fh):
            if isinstance(m.id, str):
                words[m.id] = str(m.string) if m.id else ""
            else:
                forms = list(m.string)
                words |= dict.fromkeys(m.id, " / ".join(forms) if all(forms) else "")
    words.pop("", None)
    return words


def test_the_code_asks_for_words_and_finds_them() -> None:
    asked = _asked()
    assert len(asked) > 100  # the console's words at least: the extraction sees the templates
    assert "login" in asked and "spool_banner" in asked
    assert {"welcome", "menu", "received_later", "slash"} <= set(_asked("ivr"))
    assert {"report", "history", "recorded_message", "photo", "photos"} <= set(_asked("track"))


@pytest.mark.parametrize("domain", sorted(DOMAINS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_word_asked_for_is_in_the_catalogue_translated(language: str, domain: str) -> None:
    catalogue = _catalogue(language, domain)
    asked = _asked(domain)
    if domain == "messages":
        asked |= {name: "cases/workflow.py STEPS" for name in STEPS}  # t(action)
    if domain == "status":
        asked = {status.value: "cases/models.py Status" for status in Status}
    if domain == "history":  # every move of the table, by staff or by the system
        asked = {name: "cases/workflow.py MOVES" for name in MOVES}
    if domain == "track":
        asked |= {f"event_{a}": "cases/tracking.py CITIZEN_WORDED" for a in CITIZEN_WORDED}
    missing = {k: where for k, where in asked.items() if not catalogue.get(k)}
    assert missing == {}, f"{language}: add these to messages.po (pybabel update)"


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_the_catalogues_hold_the_same_words_with_the_same_placeholders(domain: str) -> None:
    it, en = _catalogue("it", domain), _catalogue("en", domain)
    assert set(it) == set(en)
    differ = {
        k: (it[k], en[k])
        for k in it
        if set(PLACEHOLDER.findall(it[k])) != set(PLACEHOLDER.findall(en[k]))
    }
    assert differ == {}


def test_a_word_is_translated_and_its_values_filled_in() -> None:
    assert translate("it", "login") == "Accedi" and translate("en", "login") == "Log in"
    assert "42" in translate("en", "too_many_logins", seconds=42)
    assert translate("fr", "login") == "Accedi"  # any other language: the default, Italian
    assert translate("en", "no-such-key") == "no-such-key"  # a gap shows itself
    assert prompt("en", "unknown_case", digits="1, 2") == "I cannot find case number 1, 2."
    assert spoken_date(date(2026, 3, 2), "it") == "2 marzo 2026"
    assert spoken_date(date(2026, 3, 2), "en") == "March 2, 2026"
    assert [plural("track", "it", "photo", "photos", n) for n in (1, 2)] == [
        "foto allegata",
        "foto allegate",
    ]
    assert status_label("in_progress", "en") == "in progress"
    assert action_label("assign", "it") == "Assegnato all'ufficio"
    assert action_label("overdue", "en") == "Overdue"  # a system entry: named all the same
    assert step_label("assign", "en") == "Assigned to office"
    assert step_label("register", "en") is None  # not a step staff take


def test_pybabel_extract_finds_the_words_as_a_translator_would(tmp_path: Path) -> None:
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg",
         "-k", "t", "-k", "N_", "-k", "translate:2", "-o", str(pot), "console"],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    with open(pot, "rb") as fh:
        found = {str(m.id) for m in read_po(fh) if m.id}
    assert {"login", "spool_banner", "change_password", "triage", "assignee"} <= found
