"""Open311 GeoReport v2 (/open311/v2): the civic-reporting interface outside apps speak.

Thin views: parse the request, call open311.service, render with open311.formats. Errors
always come back in the specification's format (a list of {code, description}).
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from cases.apikeys import MAX_KEY_LENGTH, api_key_by_hash, api_key_by_plaintext
from cases.config import Config, Municipality
from cases.models import ApiKey, Case
from cases.notify import Ctx
from cases.phone import mask_phone
from cases.registration import case_by_intake_key
from cases.services import hash_token
from infra.dispatch import after_commit
from infra.runtime import runtime
from infra.spool import SpoolItem
from infra.web import (
    ctx_for,
    db,
    install_error_handlers,
    keep_while_away,
    over_limit,
    public_base_url,
    went_away,
)
from open311 import formats
from open311.service import (
    NewRequest,
    Open311Error,
    find_requests,
    get_request,
    intake_key,
    make_pending_token,
    make_token,
    parse_request,
    pending_notice,
    read_token,
    request_dict,
    request_id,
    resolve_jurisdiction,
    service_definition,
    service_notice,
    services,
    submit_request,
)

log = logging.getLogger(__name__)
bp = Blueprint("open311", __name__, url_prefix="/open311/v2")

SPEC_URL = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2026-11-25T00:00:00Z"  # when this endpoint's behaviour last changed
MAX_POST_BYTES = 64 * 1024  # a report is text and a URL: no need for the app-wide 2 MB
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,80}")


def _fmt() -> str:
    fmt = (request.view_args or {}).get("fmt", "json")
    return fmt if fmt in formats.FORMATS else "json"


def _respond(root: str, value: Any, status: int = 200) -> Response:
    body, ctype = formats.render(_fmt(), root, value)
    return Response(body, status=status, content_type=ctype)


def _error(status: int, description: str) -> Response:
    log.info("open311 %s %s -> %s: %s", request.method, request.path, status, description)
    body, ctype = formats.errors(_fmt(), status, description)
    return Response(body, status=status, content_type=ctype)


@bp.errorhandler(Open311Error)
def open311_error(exc: Open311Error) -> Response:
    return _error(exc.status, exc.description)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    if exc.code == 413:
        return _error(413, f"the request is larger than {MAX_POST_BYTES // 1024} KB")
    return _error(exc.code or 400, exc.description or exc.name)


install_error_handlers(bp, _error)


@bp.before_request
def check_format() -> Response | None:
    fmt = (request.view_args or {}).get("fmt")
    if fmt is not None and fmt not in formats.FORMATS:
        return _error(404, f"unknown format {fmt[:10]!r}: use .json or .xml")
    request.max_content_length = MAX_POST_BYTES
    return None


def _config() -> Config:
    return runtime().config


def _key(required: bool) -> ApiKey | None:
    plaintext = _key_value()
    key = api_key_by_plaintext(db(), plaintext, runtime().clock()) if plaintext else None
    if key is None and (plaintext or required):
        raise Open311Error(403, "api_key is missing or not valid")
    return key


def _ctx(key: ApiKey | None = None) -> Any:
    return ctx_for(resolve_jurisdiction(_config(), request.values.get("jurisdiction_id"), key))


def _flag(name: str) -> bool:
    return request.args.get(name, "").lower() in ("true", "1", "yes")


@bp.get("/discovery.<fmt>")
def discovery(fmt: str) -> Response:
    cfg = _config()
    jid = request.args.get("jurisdiction_id")
    munis = [resolve_jurisdiction(cfg, jid, None)] if jid else list(cfg.municipality)
    contact = "; ".join(
        f"{m.name}: {m.urp_office.name}"
        + (f" <{m.urp_office.email}>" if m.urp_office.email else "")
        for m in munis
    )
    return _respond(
        "discovery",
        {
            "changeset": CHANGESET,
            "contact": contact,
            "key_service": "API keys are issued by the municipality's URP on request.",
            "endpoints": [
                {
                    "specification": SPEC_URL,
                    "url": public_base_url() + bp.url_prefix,  # type: ignore[operator]
                    "changeset": CHANGESET,
                    "type": "production",
                    "formats": ["text/xml", "application/json"],
                }
            ],
        },
    )


@bp.get("/services.<fmt>")
def service_list(fmt: str) -> Response:
    return _respond("services", services(_ctx(_key(required=False)).muni))


@bp.get("/services/<code>.<fmt>")
def service_detail(code: str, fmt: str) -> Response:
    return _respond("service_definition", service_definition(_ctx(_key(False)).muni, code))


@bp.post("/requests.<fmt>")
def request_create(fmt: str) -> Response:
    idem = _idempotency_key()
    plaintext = _key_value()
    try:
        key = _key(required=True)
    except Exception as exc:
        if not went_away(exc):
            raise
        return _keep(idem, plaintext)  # the key is checked when the register is back
    assert key is not None
    ctx = _ctx(key)
    req = _parsed(ctx.muni)
    _remember_municipality(key)
    intake = intake_key(key.key_hash, idem) if idem else None
    s = db()
    if intake is not None:
        done = case_by_intake_key(s, ctx.muni, intake)
        if done is not None:
            log.info("open311 request %s repeated with its Idempotency-Key", done.protocol)
            return _created(ctx, done)
    _rate_limit(key)
    try:
        case = submit_request(s, ctx, key, req, intake=intake)
        after_commit(s)
    except IntegrityError:
        s.rollback()
        done = case_by_intake_key(s, ctx.muni, intake) if intake is not None else None
        if done is None:
            raise
        return _created(ctx, done)  # the same key raced in on another worker
    except Exception as exc:
        if not went_away(exc):
            raise
        return _keep(idem, plaintext)
    log.info(
        "case %s registered via open311 by %r (phone %s, media %s)",
        case.protocol,
        key.name,
        mask_phone(case.phone),
        "yes" if req.media_url else "no",
    )
    return _created(ctx, case)


def _created(ctx: Ctx, case: Case) -> Response:
    return _respond(
        "service_requests",
        [
            {
                "service_request_id": request_id(case),
                "token": make_token(current_app.config["SECRET_KEY"], case),
                "service_notice": service_notice(ctx, case),
                "account_id": None,
            }
        ],
        201,
    )


def _key_value() -> str:
    """The client's API key: on a POST, in the body (the specification's api_key field) or
    the X-Api-Key header, never in the URL, which proxies and access logs keep; a GET may
    still name it in the query (for the jurisdiction), and logs redact it."""
    header = request.headers.get("X-Api-Key", "")
    if request.method == "POST":
        if "api_key" in request.args:
            raise Open311Error(
                400, "api_key goes in the request body or the X-Api-Key header, not in the URL"
            )
        return request.form.get("api_key", "") or header
    return request.args.get("api_key", "") or header


def _idempotency_key() -> str:
    """The `Idempotency-Key` header: a client's retries of one request make one case."""
    value = request.headers.get("Idempotency-Key", "").strip()
    if value and not IDEMPOTENCY_KEY.fullmatch(value):
        raise Open311Error(400, "Idempotency-Key must be 1 to 80 printable ASCII characters")
    return value


def _parsed(muni: Municipality) -> NewRequest:
    return parse_request(
        request.form,
        muni,
        allow_private_media=bool(current_app.config.get("OPEN311_ALLOW_PRIVATE_MEDIA")),
    )


def _keep(idem: str, plaintext: str) -> Response:
    """The register is away: the request is checked as far as it can be without it, kept in
    this host's spool, and answered 202 with a token that finds the case once registered."""
    if not plaintext or len(plaintext) > MAX_KEY_LENGTH:
        raise Open311Error(403, "api_key is missing or not valid")
    key_hash = hash_token(plaintext)
    jid = request.values.get("jurisdiction_id")
    known = runtime().spool.recall("open311-key", key_hash)
    if known is not None and jid and jid.strip() != known:
        raise Open311Error(403, f"this api_key is not valid for jurisdiction_id {jid[:64]!r}")
    muni = resolve_jurisdiction(_config(), jid or known, None)
    req = _parsed(muni)
    # without an Idempotency-Key, each POST is its own request (as the specification says)
    intake = intake_key(key_hash, idem or f"spool-{uuid.uuid4().hex}")
    wait = over_limit(
        f"open311:away:{key_hash[:24]}", float(current_app.config["OPEN311_POSTS_PER_MINUTE"])
    )
    if wait is not None:
        raise Open311Error(429, f"too many requests with this api_key: retry in {wait:.0f} s")
    payload = {"request": asdict(req), "key_hash": key_hash, "intake": intake}
    keep_while_away("open311", intake, muni.code, payload)
    token = make_pending_token(current_app.config["SECRET_KEY"], muni, intake)
    return _respond(
        "service_requests",
        [{"token": token, "service_notice": pending_notice(muni), "account_id": None}],
        202,
    )


def _remember_municipality(key: ApiKey) -> None:
    """Note on this host which municipality the key belongs to, for while the register is
    away (a POST without jurisdiction_id needs it then)."""
    try:
        runtime().spool.remember("open311-key", key.key_hash, key.municipality)
    except Exception as exc:  # the host's disk: /healthz says so too
        log.warning("open311: spool unusable: %s", exc.__class__.__name__)


def register_spooled_request(app: Flask, item: SpoolItem) -> None:
    """The drainer's handler for Open311 requests kept while the register was away. A key
    that turns out not to be valid registers nothing (logged)."""
    p = item.payload
    with app.app_context():
        s = db()
        muni = runtime(app).config.get(item.municipality)
        key = api_key_by_hash(s, p["key_hash"])
        if key is None or key.municipality != muni.code:
            log.error("open311 request kept while away: its api_key is not valid; not registered")
            return
        if case_by_intake_key(s, muni, p["intake"]) is not None:
            return  # registered by an earlier try
        ctx = Ctx(muni, runtime().clock(), runtime(app).public_base_url or "")
        req = NewRequest(**p["request"])
        try:
            case = submit_request(
                s, ctx, key, req, intake=p["intake"], received_at=item.received_at
            )
        except Open311Error as exc:
            log.error("open311 request kept while away cannot be registered: %s", exc.description)
            return
        after_commit(s)
        log.info("case %s registered via open311 after the register was away", case.protocol)


@bp.get("/requests.<fmt>")
def request_list(fmt: str) -> Response:
    ctx = _ctx(_key(False))
    cases = find_requests(db(), ctx, request.args)
    ext = _flag("extensions")
    return _respond("service_requests", [request_dict(ctx, c, extensions=ext) for c in cases])


@bp.get("/requests/<path:rid>.<fmt>")
def request_detail(rid: str, fmt: str) -> Response:
    ctx = _ctx(_key(False))
    case = get_request(db(), ctx.muni, rid)
    return _respond("service_requests", [request_dict(ctx, case, extensions=_flag("extensions"))])


@bp.get("/tokens/<token>.<fmt>")
def token_lookup(token: str, fmt: str) -> Response:
    muni_code, rid, intake = read_token(current_app.config["SECRET_KEY"], token)
    ctx = _ctx(_key(False))
    if ctx.muni.code != muni_code:
        raise Open311Error(404, "unknown token")
    if intake is not None:  # kept in the spool: the id once it is registered
        found = case_by_intake_key(db(), ctx.muni, intake)
        rid_now = request_id(found) if found is not None else None
        return _respond("service_requests", [{"service_request_id": rid_now, "token": token}])
    case = get_request(db(), ctx.muni, rid)
    return _respond("service_requests", [{"service_request_id": request_id(case), "token": token}])


def _rate_limit(key: ApiKey) -> None:
    """At most OPEN311_POSTS_PER_MINUTE reports per key (shared through Redis when present)."""
    per_minute = float(current_app.config["OPEN311_POSTS_PER_MINUTE"])
    wait = over_limit(f"open311:{key.id}", per_minute)
    if wait is not None:
        raise Open311Error(429, f"too many requests with this api_key: retry in {wait:.0f} s")
