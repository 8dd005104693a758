"""Open311 GeoReport v2 over the case register: jurisdictions, services, requests, tokens.

No Flask here: the views parse HTTP and render, this module decides. Every refusal is an
`Open311Error` carrying the HTTP status the specification expects (400, 403, 404, 429).

Public-data rule: what a reporter sent through Open311 (description, photo URL) is public, as
in every GeoReport server; what citizens said on the phone, by text or at the counter is not,
so those cases are listed with their service, status, office and dates only. Names, e-mail
and phone numbers are never returned by any endpoint.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from cases.config import Config, Municipality
from cases.errors import Invalid
from cases.models import OPEN_STATUSES, ApiKey, Case, CaseEvent, Channel, Status
from cases.notify import Ctx, local_date, office_name, status_label
from cases.protocol import case_by_number, parse_protocol, url_protocol
from cases.registration import NewAttachment, register
from cases.services import is_email
from cases.workflow import step_label
from infra.inputs import FIRST_DAY, LAST_DAY

# Closed for Open311 = nothing more will happen unless URP reopens it: replied to, handed to
# the competent body, merged into another case, or annulled. `resolved` is still open: the
# office is done but URP has not answered the citizen yet.
CLOSED_STATUSES = frozenset(Status) - frozenset(OPEN_STATUSES)

MAX_RESULTS = 1000  # the specification's default ceiling
DEFAULT_WINDOW = timedelta(days=90)  # ... and default (and maximum) date span
MAX_IDS = 200
MAX_DESCRIPTION = 4000  # the specification's limit for `description`
MAX_ADDRESS = 300  # Case.address
MAX_NAME = 100
MAX_EMAIL = 254
MAX_URL = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not storable or not valid XML
TOKEN_SALT = "open311-token"


class Open311Error(Exception):
    """A refusal in the specification's error format: HTTP status and a description."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def open311_status(case: Case) -> str:
    """`open` or `closed`, as GeoReport knows only these two."""
    return "open" if case.is_open else "closed"


# ---------------------------------------------------------------- jurisdictions


def resolve_jurisdiction(
    config: Config, jurisdiction_id: str | None, key: ApiKey | None
) -> Municipality:
    """Which municipality a call is about.

    `jurisdiction_id` (the municipality code) wins when given; otherwise the API key's own
    municipality; otherwise the only one a single-municipality deployment serves. A deployment
    serving several needs one of the two, and a key is valid only for its own municipality.
    """
    known = ", ".join(m.code for m in config.municipality)
    if jurisdiction_id:
        try:
            muni = config.get(jurisdiction_id.strip())
        except KeyError:
            raise Open311Error(
                404, f"unknown jurisdiction_id {jurisdiction_id[:64]!r}; served here: {known}"
            ) from None
        if key is not None and key.municipality != muni.code:
            raise Open311Error(403, f"this api_key is not valid for jurisdiction_id {muni.code!r}")
        return muni
    if key is not None:
        try:
            return config.get(key.municipality)
        except KeyError:  # a key left behind by a municipality no longer served
            raise Open311Error(403, "this api_key's municipality is not served here") from None
    if len(config.municipality) == 1:
        return config.municipality[0]
    raise Open311Error(400, f"jurisdiction_id is required: this endpoint serves {known}")


# ---------------------------------------------------------------- services


def services(muni: Municipality) -> list[dict[str, Any]]:
    """GET services: one service per category of the municipality."""
    lang = muni.language
    return [
        {
            "service_code": c.code,
            "service_name": c.name(lang),
            "description": f"{c.name(lang)} ({office_name(muni, c.office, lang)})",
            "metadata": False,
            "type": "realtime",
            "keywords": ", ".join(c.keywords),
            "group": office_name(muni, c.office, lang),
        }
        for c in muni.categories
    ]


def service_definition(muni: Municipality, code: str) -> dict[str, Any]:
    """GET services/{code}: no extra attributes are asked for any service."""
    if muni.category(code) is None:
        raise Open311Error(404, f"unknown service_code {code[:64]!r}")
    return {"service_code": code, "attributes": []}


# ---------------------------------------------------------------- POST requests


def _field(form: Mapping[str, Any], name: str, limit: int) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Open311Error(400, f"{name} must be text")
    value = value.strip()
    if _CONTROL.search(value):
        raise Open311Error(400, f"{name} contains control characters")
    if len(value) > limit:
        raise Open311Error(400, f"{name} is longer than {limit} characters")
    return value or None


def _coordinate(form: Mapping[str, Any], name: str, bound: float) -> float | None:
    raw = _field(form, name, 40)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Open311Error(400, f"{name} must be a decimal number (WGS84)") from None
    if not math.isfinite(value) or not -bound <= value <= bound:
        raise Open311Error(400, f"{name} must be between -{bound:g} and {bound:g}")
    return value


def check_media_url(url: str, *, allow_private: bool = False) -> str:
    """An http(s) URL of a public host: the worker will download it, so no internal targets."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise Open311Error(400, "media_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise Open311Error(400, "media_url must be an http or https URL")
    if allow_private:
        return url
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise Open311Error(400, "media_url must point to a public host")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return url  # a name: resolved by the worker, whose download is size- and type-checked
    if not ip.is_global:
        raise Open311Error(400, "media_url must point to a public host")
    return url


@dataclass(frozen=True)
class NewRequest:
    """A POSTed service request, validated."""

    service_code: str
    description: str | None
    lat: float | None
    long: float | None
    address: str | None
    phone: str | None
    media_url: str | None
    first_name: str | None
    last_name: str | None
    email: str | None


def parse_request(
    form: Mapping[str, Any], muni: Municipality, *, allow_private_media: bool = False
) -> NewRequest:
    """Validate a POST requests body against the specification and the municipality."""
    code = _field(form, "service_code", 64)
    if code is None:
        raise Open311Error(400, "service_code is required")
    if muni.category(code) is None:
        raise Open311Error(404, f"unknown service_code {code!r}")
    lat = _coordinate(form, "lat", 90)
    long = _coordinate(form, "long", 180)
    if (lat is None) != (long is None):
        raise Open311Error(400, "lat and long go together: send both, or address_string")
    address = _field(form, "address_string", MAX_ADDRESS)
    if lat is None and address is None:
        raise Open311Error(400, "a location is required: lat and long, or address_string")
    email = _field(form, "email", MAX_EMAIL)
    if email is not None and not is_email(email):
        raise Open311Error(400, "email is not an e-mail address")
    media = _field(form, "media_url", MAX_URL)
    return NewRequest(
        service_code=code,
        description=_field(form, "description", MAX_DESCRIPTION),
        lat=lat,
        long=long,
        address=address,
        phone=_field(form, "phone", 40),
        media_url=check_media_url(media, allow_private=allow_private_media) if media else None,
        first_name=_field(form, "first_name", MAX_NAME),
        last_name=_field(form, "last_name", MAX_NAME),
        email=email,
    )


def intake_key(key_hash: str, idempotency_key: str) -> str:
    """What registers a client's request once however often it retries: its API key (by
    hash, known even while the register is away) and the `Idempotency-Key` it sent."""
    return f"o311:{key_hash[:24]}:{idempotency_key}"


def submit_request(
    s: Session,
    ctx: Ctx,
    key: ApiKey,
    req: NewRequest,
    *,
    intake: str | None = None,
    received_at: datetime | None = None,
) -> Case:
    """Register the request as a case (channel api), in the caller's transaction (with the
    key's use). `intake`: the request's `intake_key` (a second registration with it fails);
    `received_at`: when it reached us, if it waited in the spool."""
    category = ctx.muni.category(req.service_code)
    assert category is not None  # parse_request checked it
    reporter = {
        k: v
        for k, v in (
            ("first_name", req.first_name),
            ("last_name", req.last_name),
            ("email", req.email),
        )
        if v
    }
    try:
        return register(
            s,
            ctx,
            confirm=True,
            channel=Channel.API,
            # The registered text is what was sent; with no description, the service asked for.
            text=req.description or category.name(ctx.muni.language),
            phone=req.phone,
            category=req.service_code,
            attachments=[NewAttachment("photo", req.media_url)] if req.media_url else None,
            address=req.address,
            lat=req.lat,
            long=req.long,
            registration_data={
                "source": "open311",
                "app": key.name,
                "api_key_id": key.id,
                "reporter": reporter,
            },
            intake_key=intake,
            received_at=received_at,
        ).case
    except Invalid as exc:  # e.g. a phone number that is not one
        raise Open311Error(400, str(exc)) from None


def pending_notice(muni: Municipality) -> str:
    """What the reporter should know of a request kept while the register is away."""
    if muni.language == "en":
        return (
            "Received; the register is briefly unavailable: the protocol number follows "
            "(GET /tokens/{token})."
        )
    return (
        "Ricevuta; il registro è momentaneamente non disponibile: il numero di protocollo "
        "seguirà (GET /tokens/{token})."
    )


def service_notice(ctx: Ctx, case: Case) -> str:
    """What the reporter should know: the protocol number and the term (L. 241/1990)."""
    if ctx.muni.language == "en":
        return (
            f"Registered as no. {case.protocol}; to be concluded by {local_date(ctx, case.due_at)}."
        )
    return f"Protocollata con n. {case.protocol}; da concludere entro il {local_date(ctx, case.due_at)}."


# ---------------------------------------------------------------- GET requests


def request_id(case: Case) -> str:
    """service_request_id: the protocol number as written in URLs (2026-0000123)."""
    return url_protocol(case.year, case.number)


def parse_request_id(text: str) -> tuple[int, int]:
    """'2026-0000123' or '2026/0000123' -> (year, number); the year is required."""
    try:
        return parse_protocol(text, None)
    except Invalid:
        raise Open311Error(404, f"no service request {text[:40]!r}") from None


def get_request(s: Session, muni: Municipality, rid: str) -> Case:
    case = case_by_number(s, muni.code, *parse_request_id(rid))
    if case is None:
        raise Open311Error(404, f"no service request {rid[:40]!r}")
    return case


def _when(value: str, name: str, muni: Municipality) -> datetime:
    try:
        when = datetime.fromisoformat(value.strip().replace(" ", "+"))  # '+' arrives as ' '
    except ValueError:
        raise Open311Error(
            400, f"{name} must be a W3C date-time, e.g. 2026-01-31T08:00:00+01:00"
        ) from None
    if not FIRST_DAY <= when.date() <= LAST_DAY:  # a day either side must still exist
        raise Open311Error(400, f"{name} must be between {FIRST_DAY} and {LAST_DAY}")
    return when if when.tzinfo else when.replace(tzinfo=muni.tz)


def _list(value: str | None, name: str, limit: int = MAX_IDS) -> list[str]:
    items = [x.strip() for x in (value or "").split(",") if x.strip()]
    if len(items) > limit:
        raise Open311Error(400, f"at most {limit} values in {name}")
    return items


def find_requests(s: Session, ctx: Ctx, args: Mapping[str, str]) -> list[Case]:
    """GET requests with the specification's filters, newest first, at most 1000.

    `service_request_id` (comma list) overrides every other filter. Otherwise the window is
    start_date..end_date on the requested time, at most 90 days, by default the last 90 days.
    """
    muni = ctx.muni
    q = select(Case).where(Case.municipality == muni.code)
    ids = _list(args.get("service_request_id"), "service_request_id")
    if ids:
        wanted: list[tuple[int, int]] = []
        for rid in ids:
            try:
                wanted.append(parse_protocol(rid, None))
            except Invalid:
                raise Open311Error(400, f"not a service_request_id: {rid[:40]!r}") from None
        q = q.where(or_(*(and_(Case.year == y, Case.number == n) for y, n in wanted)))
        return list(s.scalars(q.order_by(Case.registered_at.desc(), Case.id.desc())))

    codes = _list(args.get("service_code"), "service_code")
    unknown = [c for c in codes if muni.category(c) is None]
    if unknown:
        raise Open311Error(400, f"unknown service_code {unknown[0][:64]!r}")
    if codes:
        q = q.where(Case.category.in_(codes))

    statuses = _list(args.get("status"), "status", 2)
    bad = [x for x in statuses if x not in ("open", "closed")]
    if bad:
        raise Open311Error(400, f"status must be open, closed or both, not {bad[0][:20]!r}")
    if set(statuses) == {"open"}:
        q = q.where(Case.status.in_([x.value for x in OPEN_STATUSES]))
    elif set(statuses) == {"closed"}:
        q = q.where(Case.status.in_([x.value for x in CLOSED_STATUSES]))

    start_s, end_s = args.get("start_date"), args.get("end_date")
    start = _when(start_s, "start_date", muni) if start_s else None
    end = _when(end_s, "end_date", muni) if end_s else None
    if start is None and end is None:
        end = ctx.now
    if start is None:
        assert end is not None
        start = end - DEFAULT_WINDOW
    if end is None:
        end = start + DEFAULT_WINDOW
    if end < start:
        raise Open311Error(400, "end_date is before start_date")
    if end - start > DEFAULT_WINDOW:
        raise Open311Error(400, "start_date and end_date may not span more than 90 days")
    q = q.where(Case.registered_at >= start, Case.registered_at <= end)
    return list(s.scalars(q.order_by(Case.registered_at.desc(), Case.id.desc()).limit(MAX_RESULTS)))


def _public_events(case: Case) -> list[CaseEvent]:
    """History the public may read: staff's public steps, not the citizen's own messages."""
    return [e for e in case.events if e.public and e.action != "citizen_message"]


def _iso(ctx: Ctx, when: datetime | None) -> str | None:
    return when.astimezone(ctx.muni.tz).isoformat(timespec="seconds") if when else None


def _shows_content(case: Case) -> bool:
    return case.channel == Channel.API.value and case.status != Status.ANNULLED


def request_dict(ctx: Ctx, case: Case, *, extensions: bool = False) -> dict[str, Any]:
    """One service request in the specification's field names (no personal data)."""
    lang = ctx.muni.language
    cat = ctx.muni.category(case.category)
    events = _public_events(case)
    notes = [e.note for e in events if e.note.strip()]
    photo = next((a for a in case.attachments if a.kind == "photo"), None)
    content = _shows_content(case)
    out: dict[str, Any] = {
        "service_request_id": request_id(case),
        "status": open311_status(case),
        "status_notes": notes[-1] if notes else status_label(case.status, lang),
        "service_name": cat.name(lang) if cat else "",
        "service_code": case.category or "",
        "description": case.original_text if content else "",
        "agency_responsible": office_name(ctx.muni, case.office, lang),
        "service_notice": "",
        "requested_datetime": _iso(ctx, case.registered_at),
        "updated_datetime": _iso(ctx, case.updated_at),
        "expected_datetime": _iso(ctx, case.due_at),
        "address": case.address or "",
        "address_id": "",
        "zipcode": "",
        "lat": case.lat,
        "long": case.long,
        "media_url": photo.source_url if photo and content else "",
    }
    if extensions:
        out["notes"] = [_note(ctx, e) for e in events]
    return out


def _note(ctx: Ctx, e: CaseEvent) -> dict[str, Any]:
    lang = ctx.muni.language
    closed = e.to_status in CLOSED_STATUSES
    if e.action == "register":
        kind = "opened"
    elif closed and e.from_status not in CLOSED_STATUSES:
        kind = "closed"
    else:
        kind = "activity"
    summary = step_label(e.action, lang) or status_label(e.to_status or "", lang)
    return {
        "datetime": _iso(ctx, e.at),
        "type": kind,
        "summary": summary,
        "description": e.note,
        "status": "closed" if closed else "open",
    }


# ---------------------------------------------------------------- tokens


def make_pending_token(secret: str, muni: Municipality, intake: str) -> str:
    """The token of a request kept in the spool: it finds the case once registered."""
    return str(URLSafeSerializer(secret, salt=TOKEN_SALT).dumps([muni.code, "", intake]))


def make_token(secret: str, case: Case) -> str:
    """A token for a request: signed, so it resolves without any table (requests are
    registered synchronously, so the id is known at once; the token is for clients that
    expect one)."""
    return str(
        URLSafeSerializer(secret, salt=TOKEN_SALT).dumps([case.municipality, request_id(case)])
    )


def read_token(secret: str, token: str) -> tuple[str, str, str | None]:
    """(municipality code, service_request_id or "", the intake key of a request that was
    kept in the spool, else None) of a token we issued; 404 otherwise."""
    try:
        value = URLSafeSerializer(secret, salt=TOKEN_SALT).loads(token)
    except BadData:
        raise Open311Error(404, "unknown token") from None
    if not (
        isinstance(value, list) and len(value) in (2, 3) and all(isinstance(v, str) for v in value)
    ):
        raise Open311Error(404, "unknown token")
    return value[0], value[1], value[2] if len(value) == 3 else None
