"""Open311 GeoReport v2 (/open311/v2): the civic-reporting interface outside apps speak.

Thin views: parse the request, call open311.service, render with open311.formats. Errors
always come back in the specification's format (a list of {code, description}).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from cases.apikeys import api_key_by_plaintext
from cases.clock import utcnow
from cases.config import Config
from cases.models import ApiKey
from cases.phone import mask_phone
from lineadiretta.dispatch import after_commit
from lineadiretta.web import ctx_for, db, install_error_handlers, over_limit, public_base_url
from open311 import formats
from open311.service import (
    Open311Error,
    find_requests,
    get_request,
    make_token,
    parse_request,
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
    from lineadiretta.app import runtime

    return runtime(current_app).config


def _key(required: bool) -> ApiKey | None:
    plaintext = request.values.get("api_key", "")
    key = api_key_by_plaintext(db(), plaintext, utcnow()) if plaintext else None
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
    key = _key(required=True)
    assert key is not None
    ctx = _ctx(key)
    req = parse_request(
        request.form,
        ctx.muni,
        allow_private_media=bool(current_app.config.get("OPEN311_ALLOW_PRIVATE_MEDIA")),
    )
    _rate_limit(key)
    s = db()
    case = submit_request(s, ctx, key, req)
    after_commit(s)
    log.info(
        "case %s registered via open311 by %r (phone %s, media %s)",
        case.protocol,
        key.name,
        mask_phone(case.phone),
        "yes" if req.media_url else "no",
    )
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
    muni_code, rid = read_token(current_app.config["SECRET_KEY"], token)
    ctx = _ctx(_key(False))
    if ctx.muni.code != muni_code:
        raise Open311Error(404, "unknown token")
    case = get_request(db(), ctx.muni, rid)
    return _respond("service_requests", [{"service_request_id": request_id(case), "token": token}])


def _rate_limit(key: ApiKey) -> None:
    """At most OPEN311_POSTS_PER_MINUTE reports per key (shared through Redis when present)."""
    per_minute = float(current_app.config["OPEN311_POSTS_PER_MINUTE"])
    wait = over_limit(f"open311:{key.id}", per_minute)
    if wait is not None:
        raise Open311Error(429, f"too many requests with this api_key: retry in {wait:.0f} s")
