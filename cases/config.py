"""The municipality's configuration as data: parsed strictly from config.toml, pure Python."""

from __future__ import annotations

import re
import string
import tomllib
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cases.phone import InvalidPhone, normalise_phone

Language = Literal["it", "en"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_CODE = r"^[a-z0-9][a-z0-9_-]*$"

# Every citizen-facing template the code renders; each language must define all of them.
TEMPLATE_KEYS = (
    "registered",
    "assigned",
    "taken",
    "public_note",
    "closed",
    "reopened",
    "duplicate",
    "not_competent",
    "master_closed",
    # replies to texts (sms/)
    "sms_followup",
    "sms_status_own",
    "sms_status_other",
    "sms_status_unknown",
    "sms_optout",
    "sms_optin",
    "sms_help",
    "sms_flood",
    "sms_spooled",
    "sms_unavailable",
)
PLACEHOLDERS = frozenset(
    {
        "municipality",
        "protocol",
        "office",
        "operator",
        "due",
        "link",
        "reply",
        "note",
        "master",
        "status",
    }
)


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Office(_Strict):
    code: Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9_-]*$")]
    name: str
    name_en: str = ""
    urp: bool = False
    email: str = ""
    notify_referents_by_sms: bool = False
    notify_referents_by_email: bool = False  # voice cases e-mailed to referents (or `email`)


class Category(_Strict):
    code: Annotated[str, Field(pattern=_CODE)]
    name_it: str
    name_en: str
    office: str
    keywords: list[str] = []
    due_days: Annotated[int, Field(ge=1, le=365)] | None = None

    def name(self, language: str) -> str:
        return self.name_en if language == "en" else self.name_it


class TimeSpan(_Strict):
    start: time
    end: time


def _parse_span(value: str) -> TimeSpan:
    m = _SPAN.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if not (h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60):
        raise ValueError(f"{value!r} is not a valid time span")
    return TimeSpan(start=time(h1, m1), end=time(h2, m2))


class Hours(_Strict):
    """Opening hours per weekday, each a list of "HH:MM-HH:MM" spans."""

    mon: list[str] = []
    tue: list[str] = []
    wed: list[str] = []
    thu: list[str] = []
    fri: list[str] = []
    sat: list[str] = []
    sun: list[str] = []

    @field_validator("*")
    @classmethod
    def _spans(cls, value: list[str]) -> list[str]:
        for span in value:
            s = _parse_span(span)
            if s.end <= s.start:
                raise ValueError(f"{span!r} ends before it starts")
        return value

    def spans(self, weekday: int) -> list[TimeSpan]:
        return [_parse_span(s) for s in getattr(self, WEEKDAYS[weekday])]


class QuietHours(_Strict):
    start: time = time(21, 0)
    end: time = time(8, 0)


class Sms(_Strict):
    numbers: list[str]
    followup_days: Annotated[int, Field(ge=0)] = 14
    rate_per_second: Annotated[float, Field(ge=0)] = (
        1.0  # segments per second per sender; 0: no limit
    )
    flood_per_minute: Annotated[int, Field(ge=1)] = 10
    max_media_bytes: Annotated[int, Field(ge=1)] = 5_000_000
    media_types: list[str] = ["image/jpeg", "image/png", "image/gif", "image/webp"]
    quiet_hours: QuietHours = QuietHours()
    stop_words: list[str] = [
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
        "ANNULLA",
        "BASTA",
        "FINE",
        "DISISCRIVI",
        "CANCELLAMI",
    ]
    start_words: list[str] = ["START", "YES", "UNSTOP", "INIZIA", "RIPRENDI", "SI"]
    # the provider itself answers its own keywords: for those our reply would not be delivered
    provider_keywords: list[str] = [
        "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
        "START", "YES", "UNSTOP", "HELP", "INFO",
    ]  # fmt: skip
    new_words: list[str] = ["NUOVA", "NUOVO", "NEW"]
    status_words: list[str] = ["STATO", "STATUS"]
    help_words: list[str] = ["HELP", "INFO", "AIUTO"]

    @field_validator("numbers")
    @classmethod
    def _e164(cls, value: list[str]) -> list[str]:
        return [_e164(v) for v in value]


class Voice(_Strict):
    numbers: list[str]
    operator_numbers: list[str] = []
    queue_wait_seconds: Annotated[int, Field(ge=5, le=600)] = 60
    max_retries: Annotated[int, Field(ge=1, le=5)] = 3
    # order of the categories in the phone menu (keys 1-8, 9 for more); default: all
    menu_categories: list[str] = []
    voice_it: str = "Polly.Bianca"
    voice_en: str = "Polly.Amy"
    hold_music_url: str = ""

    @field_validator("numbers", "operator_numbers")
    @classmethod
    def _e164(cls, value: list[str]) -> list[str]:
        return [_e164(v) for v in value]


def _e164(value: str) -> str:
    try:
        return normalise_phone(value)
    except InvalidPhone as exc:
        raise ValueError(str(exc)) from exc


class Templates(_Strict):
    model_config = ConfigDict(extra="allow", frozen=True)

    registered: str
    assigned: str
    taken: str
    public_note: str
    closed: str
    reopened: str
    duplicate: str
    not_competent: str
    master_closed: str
    sms_followup: str
    sms_status_own: str
    sms_status_other: str
    sms_status_unknown: str
    sms_optout: str
    sms_optin: str
    sms_help: str
    sms_flood: str
    # while the register is away: a report kept in the host's spool, and a status query
    sms_spooled: str
    sms_unavailable: str

    @model_validator(mode="after")
    def _placeholders(self) -> Templates:
        for key in TEMPLATE_KEYS:
            for _, name, _, _ in string.Formatter().parse(getattr(self, key)):
                if name is not None and name not in PLACEHOLDERS:
                    raise ValueError(f"{key}: unknown placeholder {{{name}}}")
        return self

    def get(self, key: str) -> str:
        value = getattr(self, key, None)
        if not isinstance(value, str):
            raise KeyError(key)
        return value


class Municipality(_Strict):
    code: Annotated[str, Field(pattern=_CODE)]
    name: str
    timezone: str = "Europe/Rome"
    language: Language = "it"
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "IT"
    due_days: Annotated[int, Field(ge=1, le=365)] = 30
    reopen_days: Annotated[int, Field(ge=0, le=365)] = 30
    classifier_threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    # True: a confidently categorised case goes straight to its office (the system assigns);
    # False: every case waits in the URP triage inbox.
    auto_assign: bool = True
    sms: Sms
    voice: Voice
    office_hours: Hours
    offices: list[Office]
    categories: list[Category]
    templates: dict[Language, Templates]

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _references(self) -> Municipality:
        codes = [o.code for o in self.offices]
        if len(set(codes)) != len(codes):
            raise ValueError("offices: duplicate office code")
        if sum(1 for o in self.offices if o.urp) != 1:
            raise ValueError("offices: exactly one office must have urp = true")
        cats = [c.code for c in self.categories]
        if len(set(cats)) != len(cats):
            raise ValueError("categories: duplicate category code")
        for i, c in enumerate(self.categories):
            if c.office not in codes:
                raise ValueError(f"categories[{i}].office: unknown office {c.office!r}")
        for code in self.voice.menu_categories:
            if self.category(code) is None:
                raise ValueError(f"voice.menu_categories: unknown category {code!r}")
        if self.language not in self.templates:
            raise ValueError(f"templates: no templates for the default language {self.language!r}")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def urp_office(self) -> Office:
        return next(o for o in self.offices if o.urp)

    def office(self, code: str | None) -> Office | None:
        return next((o for o in self.offices if o.code == code), None)

    def category(self, code: str | None) -> Category | None:
        return next((c for c in self.categories if c.code == code), None)

    def in_office_hours(self, when: datetime) -> bool:
        local = when.astimezone(self.tz)
        t = local.time().replace(tzinfo=None)
        return any(span.start <= t < span.end for span in self.office_hours.spans(local.weekday()))

    def template(self, key: str, language: str) -> str:
        lang: Language = "en" if language == "en" and "en" in self.templates else self.language
        return self.templates[lang].get(key)


class Config(_Strict):
    municipality: list[Municipality]

    @model_validator(mode="after")
    def _unique(self) -> Config:
        codes = [m.code for m in self.municipality]
        if len(set(codes)) != len(codes):
            raise ValueError("municipality: duplicate code")
        seen: dict[str, str] = {}
        for m in self.municipality:
            for n in [*m.sms.numbers, *m.voice.numbers]:
                if seen.get(n, m.code) != m.code:
                    raise ValueError(f"number {n} belongs to both {seen[n]} and {m.code}")
                seen[n] = m.code
        return self

    def get(self, code: str) -> Municipality:
        for m in self.municipality:
            if m.code == code:
                return m
        raise KeyError(code)

    def by_number(self, number: str) -> Municipality | None:
        """The municipality a called number (SMS or voice) belongs to."""
        try:
            n = normalise_phone(number)
        except InvalidPhone:
            return None
        for m in self.municipality:
            if n in m.sms.numbers or n in m.voice.numbers:
                return m
        return None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(data: dict[str, object], source: str = "config") -> Config:
    """Validate a parsed TOML document; raise ConfigError naming the first bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {_loc(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid configuration\n" + "\n".join(lines)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate config.toml."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: configuration file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_config(data, str(p))
