"""config.toml: the example's shape, strict validation errors, and SMS-safe citizen templates."""

from __future__ import annotations

import copy
import string
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cases.config import (
    PLACEHOLDERS,
    TEMPLATE_KEYS,
    Config,
    ConfigError,
    Municipality,
    load_config,
    parse_config,
)
from cases.gsm import GSM7_BASIC, GSM7_EXT, is_gsm7, segments, septets
from cases.notify import Ctx, render
from cases.phone import is_mobile, normalise_phone

CONFIG = Path(__file__).resolve().parent.parent / "config.toml"

# Realistic worst-case values for the placeholders.
PROTOCOL = "2026/0000123"
MASTER = "2026/0000098"
OPERATOR = "Mario Rossi"
BASE_URL = "https://segnalazioni.comune.example.it"
TRACK_TOKEN = "AbCdEfGhIjKlMnOpQrStUv"  # secrets.token_urlsafe(16), as services.py makes it
REPLY = (
    "Il tratto di via Roma è stato riasfaltato il 12/03. La buca davanti al civico 24 è "
    "stata chiusa in modo definitivo. Grazie per la segnalazione e la collaborazione."
)[:160]
NOTE = (
    "Il sopralluogo è fissato per lunedì 14/09 alle ore 10. Per motivi di sicurezza il "
    "tratto resterà chiuso al traffico fino alla fine dei lavori, previsti in tre giorni."
)[:160]
MAX_SEGMENTS = 2
# Plain ASCII quotes are GSM-7, but some providers count them as UCS-2: templates avoid them.
FORBIDDEN = set("'\"`’‘“”«»…–—")


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(CONFIG)


@pytest.fixture()
def raw() -> dict[str, Any]:
    return tomllib.loads(CONFIG.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ the example


def test_example_shape(config: Config) -> None:
    assert [m.code for m in config.municipality] == ["monteverde", "valfiorita"]
    main = config.get("monteverde")
    assert main.name == "Comune di Monteverde"
    assert main.timezone == "Europe/Rome"
    assert main.language == "it"
    assert set(main.templates) == {"it", "en"}
    assert len(main.offices) >= 6
    assert len(main.categories) >= 12
    assert main.auto_assign is True
    assert main.classifier_threshold == 0.5
    assert main.due_days == 30
    assert main.reopen_days == 30
    assert main.urp_office.code == "URP"
    assert any(o.notify_referents_by_sms for o in main.offices)
    # Every office has an English name, and every one has at least one category.
    assert all(o.name_en for o in main.offices)
    assert {c.office for c in main.categories} == {o.code for o in main.offices}


def test_example_catch_all_category_goes_to_urp(config: Config) -> None:
    for m in config.municipality:
        altro = m.category("altro")
        assert altro is not None
        assert altro.office == m.urp_office.code
        assert altro.keywords == []


def test_example_second_municipality(config: Config) -> None:
    small = config.get("valfiorita")
    assert small.auto_assign is False
    assert small.timezone == "Europe/Rome"
    assert set(small.templates) == {"it", "en"}
    assert len(small.offices) == 4
    assert len(small.categories) >= 5


def test_example_due_days(config: Config) -> None:
    main = config.get("monteverde")
    urgent = {c.code for c in main.categories if c.due_days is not None and c.due_days <= 7}
    assert {"acqua", "alberi", "semafori", "sosta"} <= urgent
    assert all(c.due_days is None or c.due_days < main.due_days for c in main.categories)


def test_example_office_and_quiet_hours(config: Config) -> None:
    main = config.get("monteverde")
    morning = [
        (s.start.isoformat("minutes"), s.end.isoformat("minutes"))
        for s in main.office_hours.spans(0)
    ]
    assert morning == [("08:30", "12:30")]
    for weekday in range(5):
        assert main.office_hours.spans(weekday)[0].start.isoformat("minutes") == "08:30"
    assert len(main.office_hours.spans(1)) == 2  # Tuesday afternoon
    assert len(main.office_hours.spans(3)) == 2  # Thursday afternoon
    assert main.office_hours.spans(5) == main.office_hours.spans(6) == []
    assert main.sms.quiet_hours.start.isoformat("minutes") == "21:00"
    assert main.sms.quiet_hours.end.isoformat("minutes") == "08:00"


def test_example_numbers(config: Config) -> None:
    for m in config.municipality:
        for n in m.sms.numbers:
            assert normalise_phone(n) == n
            assert is_mobile(n), f"{m.code}: SMS number {n} is not a mobile number"
        for n in [*m.voice.numbers, *m.voice.operator_numbers]:
            assert normalise_phone(n) == n
            assert n.startswith("+390"), f"{m.code}: voice number {n} is not a landline"
            assert not is_mobile(n)


def test_called_number_picks_the_municipality(config: Config) -> None:
    for m in config.municipality:
        for n in [*m.sms.numbers, *m.voice.numbers]:
            assert config.by_number(n) is m
            assert config.by_number("0039" + n[3:]) is m  # international prefix form
    assert config.by_number("+393330000000") is None
    assert config.by_number("not a number") is None


# ------------------------------------------------------------------------ broken configs

Mutation = Callable[[dict[str, Any]], None]


def _muni(doc: dict[str, Any], i: int = 0) -> dict[str, Any]:
    muni: dict[str, Any] = doc["municipality"][i]
    return muni


def _set(path: tuple[str | int, ...], value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return mutate


def _delete(path: tuple[str | int, ...]) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return mutate


def _share_number(doc: dict[str, Any]) -> None:
    _muni(doc, 1)["voice"]["numbers"] = list(_muni(doc, 0)["voice"]["numbers"])


def _two_urp(doc: dict[str, Any]) -> None:
    for office in _muni(doc)["offices"]:
        office["urp"] = True


def _duplicate_office(doc: dict[str, Any]) -> None:
    offices = _muni(doc)["offices"]
    offices.append(dict(offices[1]))


M0 = ("municipality", 0)

BROKEN: list[tuple[str, Mutation, list[str]]] = [
    (
        "category with an unknown office",
        _set((*M0, "categories", 2, "office"), "NOPE"),
        ["municipality[0]", "categories[2].office", "NOPE"],
    ),
    (
        "unknown key in a municipality",
        _set((*M0, "mayor"), "Giuseppe Verdi"),
        ["municipality[0].mayor", "Extra inputs"],
    ),
    (
        "unknown key in an office",
        _set((*M0, "offices", 1, "phone"), "+390575123401"),
        ["municipality[0].offices[1].phone"],
    ),
    (
        "invalid time zone",
        _set((*M0, "timezone"), "Europe/Monteverde"),
        ["municipality[0].timezone", "Europe/Monteverde"],
    ),
    (
        "template with an unknown placeholder",
        _set((*M0, "templates", "it", "closed"), "{municipality}: {citizen}, chiusa. {reply}"),
        ["municipality[0].templates.it", "closed", "{citizen}"],
    ),
    (
        "missing template",
        _delete((*M0, "templates", "en", "taken")),
        ["municipality[0].templates.en.taken", "Field required"],
    ),
    (
        "no templates for the default language",
        _delete((*M0, "templates", "it")),
        ["municipality[0]", "templates", "'it'"],
    ),
    (
        "bad SMS number",
        _set((*M0, "sms", "numbers"), ["+39 123"]),
        ["municipality[0].sms.numbers", "not a valid phone number"],
    ),
    (
        "bad operator number",
        _set((*M0, "voice", "operator_numbers"), ["ufficio"]),
        ["municipality[0].voice.operator_numbers", "not a phone number"],
    ),
    (
        "two municipalities sharing a number",
        _share_number,
        ["+390575123400", "belongs to both monteverde and valfiorita"],
    ),
    (
        "office hours span ending before it starts",
        _set((*M0, "office_hours", "tue"), ["08:30-12:30", "17:30-14:30"]),
        ["municipality[0].office_hours.tue", "ends before it starts"],
    ),
    (
        "office hours span in a wrong format",
        _set((*M0, "office_hours", "mon"), ["8.30-12.30"]),
        ["municipality[0].office_hours.mon", "HH:MM-HH:MM"],
    ),
    (
        "office hours span with an impossible hour",
        _set((*M0, "office_hours", "fri"), ["08:30-25:00"]),
        ["municipality[0].office_hours.fri", "not a valid time span"],
    ),
    (
        "unknown weekday",
        _set((*M0, "office_hours", "lun"), ["08:30-12:30"]),
        ["municipality[0].office_hours.lun"],
    ),
    (
        "two URP offices",
        _two_urp,
        ["municipality[0]", "offices", "exactly one office must have urp = true"],
    ),
    (
        "duplicate office code",
        _duplicate_office,
        ["municipality[0]", "offices", "duplicate office code"],
    ),
    (
        "lower-case office code",
        _set((*M0, "offices", 0, "code"), "urp"),
        ["municipality[0].offices[0].code"],
    ),
    (
        "category due days out of range",
        _set((*M0, "categories", 0, "due_days"), 0),
        ["municipality[0].categories[0].due_days"],
    ),
    (
        "classifier threshold above one",
        _set((*M0, "classifier_threshold"), 1.5),
        ["municipality[0].classifier_threshold"],
    ),
    (
        "duplicate municipality code",
        _set(("municipality", 1, "code"), "monteverde"),
        ["municipality: duplicate code"],
    ),
]


def test_unmodified_document_is_valid(raw: dict[str, Any]) -> None:
    assert [m.code for m in parse_config(raw).municipality] == ["monteverde", "valfiorita"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [pytest.param(mutate, expected, id=name) for name, mutate, expected in BROKEN],
)
def test_broken_config_names_the_bad_key(
    raw: dict[str, Any], mutate: Mutation, expected: list[str]
) -> None:
    doc = copy.deepcopy(raw)
    mutate(doc)
    with pytest.raises(ConfigError) as exc:
        parse_config(doc, "config.toml")
    message = str(exc.value)
    assert message.startswith("invalid configuration\nconfig.toml: ")
    for part in expected:
        assert part in message


def test_load_config_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="configuration file not found") as exc:
        load_config(missing)
    assert str(missing) in str(exc.value)


def test_load_config_invalid_toml(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('[[municipality]]\ncode = "monteverde\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as exc:
        load_config(bad)
    assert str(bad) in str(exc.value)


def test_load_config_reports_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "other.toml"
    bad.write_text(
        CONFIG.read_text(encoding="utf-8").replace(
            'timezone = "Europe/Rome"', 'timezone = "Rome"', 1
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert f"{bad}: municipality[0].timezone" in str(exc.value)


# ----------------------------------------------------------------------- citizen templates

REQUIRED = {
    "registered": {"protocol", "link"},
    "assigned": {"office", "due"},
    "taken": {"operator", "office"},
    "public_note": {"note"},
    "closed": {"reply"},
    "reopened": {"protocol"},
    "duplicate": {"master"},
    "not_competent": {"reply"},
    "master_closed": {"master", "reply"},
    "sms_followup": {"protocol"},
    "sms_status_own": {"protocol", "status", "office", "due"},
    "sms_status_other": {"protocol", "status"},
    "sms_status_unknown": {"protocol"},
    "sms_optout": set(),
    "sms_optin": set(),
    "sms_help": set(),
    "sms_flood": set(),
    "sms_spooled": set(),
    "sms_unavailable": set(),
}

CASES = [
    pytest.param(muni, lang, key, id=f"{muni}-{lang}-{key}")
    for muni in ("monteverde", "valfiorita")
    for lang in ("it", "en")
    for key in TEMPLATE_KEYS
]


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _renderings(muni: Municipality, lang: str, key: str) -> list[str]:
    """The template rendered by the real render(), once per office, with long values."""
    out = []
    for office in muni.offices:
        case = SimpleNamespace(
            office=office.code,
            language=lang,
            assignee=SimpleNamespace(display_name=OPERATOR),
            due_at=datetime(2026, 12, 31, 11, 0, tzinfo=UTC),
            year=2026,
            number=123,
            track_token=TRACK_TOKEN,
            protocol=PROTOCOL,
            status="duplicate",  # the longest status label
        )
        ctx = Ctx(muni=muni, now=datetime(2026, 6, 1, 9, 0, tzinfo=UTC), base_url=BASE_URL)
        out.append(render(ctx, key, case, reply=REPLY, note=NOTE, master=MASTER))  # type: ignore[arg-type]
    return out


def test_sample_values_are_realistic_worst_cases() -> None:
    assert len(REPLY) == len(NOTE) == 160
    assert is_gsm7(REPLY) and is_gsm7(NOTE)
    link = f"{BASE_URL}/track/2026-0000123?t={TRACK_TOKEN}"
    assert len(link) >= 75


def test_every_language_defines_every_template(config: Config) -> None:
    for m in config.municipality:
        for lang, templates in m.templates.items():
            for key in TEMPLATE_KEYS:
                assert templates.get(key).strip(), f"{m.code}.{lang}.{key} is empty"


@pytest.mark.parametrize(("code", "lang", "key"), CASES)
def test_template_text(config: Config, code: str, lang: str, key: str) -> None:
    template = config.get(code).templates[lang].get(key)  # type: ignore[index]
    assert template.startswith("{municipality}: ")
    assert _fields(template) <= PLACEHOLDERS
    assert REQUIRED[key] <= _fields(template), f"{key} must mention {REQUIRED[key]}"
    assert not FORBIDDEN & set(template), f"{key}: quotes or typographic characters"
    assert not GSM7_EXT & set(template.replace("{", "").replace("}", "")), "costs double"


@pytest.mark.parametrize(("code", "lang", "key"), CASES)
def test_rendered_template_fits_two_gsm7_segments(
    config: Config, code: str, lang: str, key: str
) -> None:
    muni = config.get(code)
    texts = _renderings(muni, lang, key)
    for text in texts:
        assert is_gsm7(text), f"{text!r} is not GSM-7"
        assert segments(text) <= MAX_SEGMENTS, f"{len(text)} characters: {text!r}"
        assert "{" not in text and "}" not in text
        assert text.startswith(f"{muni.name}: ")
    if key == "registered":
        assert all(f"/track/2026-0000123?t={TRACK_TOKEN}" in t for t in texts)
    if key == "taken":
        assert all(OPERATOR in t for t in texts)
        english = {o.name_en for o in muni.offices}
        italian = {o.name for o in muni.offices}
        assert all(any(name in t for name in (english if lang == "en" else italian)) for t in texts)
    if key == "assigned":
        assert all("31/12/2026" in t for t in texts)


# --------------------------------------------------------------------------- cases.gsm helper


def test_gsm7_alphabet_tables() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes minus ESC
    assert len(GSM7_EXT) == 10
    assert not GSM7_BASIC & GSM7_EXT
    assert set("àèéìòù") <= GSM7_BASIC  # Italian accented letters are GSM-7
    assert set("@£$¥\n\r _!?&%#") <= GSM7_BASIC
    assert set("€[]{}\\^~|") <= GSM7_EXT


def test_is_gsm7() -> None:
    assert is_gsm7("Città: è già più così, perché no? 10% @ 2€ [sic]")
    assert is_gsm7("")
    assert not is_gsm7("l’ufficio")  # typographic apostrophe
    assert not is_gsm7("“virgolette”")
    assert not is_gsm7("È")  # capital E grave is not in the alphabet (É is)
    assert not is_gsm7("ciao 😀")


def test_septets_count_extension_characters_twice() -> None:
    assert septets("abc") == 3
    assert septets("€") == 2
    assert septets("{x}") == 5
    with pytest.raises(ValueError):
        septets("’")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 1),
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("à" * 160, 1),  # accented letters stay GSM-7
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("a" * 459, 3),
        ("a" * 460, 4),
        ("€" * 80, 1),  # 160 septets
        ("€" * 81, 2),  # 162 septets
        ("a" * 159 + "{", 2),  # 161 septets
        ("a" * 158 + "}", 1),  # 160 septets
        ("a" * 304 + "[", 2),  # 306 septets
        ("a" * 305 + "]", 3),  # 307 septets
        ("’" * 70, 1),
        ("’" * 71, 2),
        ("’" * 134, 2),
        ("’" * 135, 3),
        ("a" * 69 + "’", 1),  # one non-GSM character makes the whole text UCS-2
        ("a" * 70 + "’", 2),
        ("😀" * 35, 1),  # outside the BMP: two UTF-16 code units each
        ("😀" * 36, 2),
    ],
)
def test_segments(text: str, expected: int) -> None:
    assert segments(text) == expected


def test_worst_case_segments_report(config: Config) -> None:
    """The largest rendering of each template (shown with pytest -rP); all within two."""
    worst: dict[str, int] = {}
    for m in config.municipality:
        for lang in m.templates:
            for key in TEMPLATE_KEYS:
                for text in _renderings(m, lang, key):
                    worst[key] = max(worst.get(key, 0), septets(text))
    for key in TEMPLATE_KEYS:
        print(f"{key:14} {worst[key]:3} septets, {segments('a' * worst[key])} segment(s)")
    assert max(worst.values()) <= 306
