"""The operators' JSON API (/api/v1): thin views over the case register's operations."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, g, jsonify, request

from api.openapi import spec
from api.serialize import case_json, notification_json
from cases.errors import Forbidden, NotFound
from cases.models import Role, StaffNotification, User
from cases.registration import register
from cases.services import (
    CaseFilter,
    case_for,
    list_cases,
    notifications_for,
    search_words,
    status_values,
    user_by_token,
)
from cases.step_inputs import RegisterInputs, parse
from cases.workflow import perform
from infra.dispatch import after_commit
from infra.inputs import whole_number
from infra.runtime import runtime
from infra.web import ctx_for, date_arg, db, install_error_handlers, json_body

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _error(status: int, message: str) -> Any:
    return jsonify(error=message, status=status), status


install_error_handlers(bp, _error)


@bp.before_request
def authenticate() -> Any:
    if request.endpoint == "api.openapi":
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    user = user_by_token(db(), token.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        log.info("api %s %s -> 401: missing or wrong token", request.method, request.path)
        resp = jsonify(error="missing or invalid bearer token", status=401)
        resp.headers["WWW-Authenticate"] = 'Bearer realm="lineadiretta"'
        return resp, 401
    g.user = user
    return None


def _user() -> User:
    u: User = g.user
    return u


def _ctx() -> Any:
    u = _user()
    return ctx_for(runtime().config.get(u.municipality))


def _int(name: str, default: int, lo: int, hi: int) -> int:
    value = request.args.get(name)
    return default if value is None else whole_number(value, name, lo, hi)


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(spec())


@bp.get("/me")
def me() -> Any:
    u = _user()
    return jsonify(
        name=u.name,
        full_name=u.full_name,
        role=u.role,
        office=u.office,
        municipality=u.municipality,
    )


@bp.post("/cases")
def create_case() -> Any:
    u = _user()
    if u.role not in (Role.URP, Role.SUPERVISOR, Role.ADMIN):
        raise Forbidden(f"a {u.role} cannot register contacts")
    given = parse(RegisterInputs, json_body())
    channel = given.channel
    s = db()
    ctx = _ctx()
    case = register(
        s,
        ctx,
        confirm=True,
        commit=True,
        channel=channel,
        text=given.text,
        phone=given.phone or None,
        category=given.category or None,
        language=given.language or None,
        actor=u,
        address=given.address or None,
    ).case
    after_commit(s)  # queues the confirmation text
    log.info("case %s registered by %s via api (%s)", case.protocol, u.name, channel)
    return jsonify(case_json(case, ctx, u)), 201


@bp.get("/cases")
def cases_list() -> Any:
    u = _user()
    statuses = status_values(x for x in request.args.getlist("status") for x in x.split(",") if x)
    overdue = request.args.get("overdue")
    f = CaseFilter(
        status=[str(x) for x in statuses] or None,
        office=request.args.get("office") or None,
        category=request.args.get("category") or None,
        assignee=request.args.get("assignee") or None,
        channel=request.args.get("channel") or None,
        text=(request.args.get("q") or request.args.get("text") or None),
        phone=request.args.get("phone") or None,
        date_from=date_arg("date_from") or date_arg("date"),
        date_to=date_arg("date_to") or date_arg("date"),
        overdue=overdue in ("1", "true", "yes") if overdue else None,
    )
    page = _int("page", 1, 1, 100_000)
    per_page = _int("per_page", 50, 1, 200)
    ctx = _ctx()
    after = request.args.get("after") or None
    found = list_cases(db(), ctx, u, f, page=page, per_page=per_page, after=after)
    full = len(found.cases) == per_page and not search_words(f.text)
    return jsonify(
        items=[case_json(c, ctx, u, events=False) for c in found.cases],
        total=found.total,
        total_exact=not found.more,
        next_after=found.cases[-1].protocol if full else None,
        page=page,
        per_page=per_page,
    )


@bp.get("/cases/<protocol>")
def case_detail(protocol: str) -> Any:
    u = _user()
    ctx = _ctx()
    case = case_for(db(), ctx, u, protocol)
    return jsonify(case_json(case, ctx, u))


@bp.post("/cases/<protocol>/<action>")
def case_action(protocol: str, action: str) -> Any:
    u = _user()
    ctx = _ctx()
    body = json_body()
    s = db()
    case = case_for(s, ctx, u, protocol, lock=True)
    event = perform(s, ctx, u, case, action, body)
    after_commit(s)
    log.info(
        "case %s: %s by %s (%s -> %s)",
        case.protocol,
        action,
        u.name,
        event.from_status,
        event.to_status,
    )
    return jsonify(case_json(case, ctx, u))


@bp.get("/notifications")
def notifications() -> Any:
    u = _user()
    unread = request.args.get("unread") in ("1", "true", "yes")
    rows = notifications_for(db(), u, unread_only=unread)
    return jsonify(items=[notification_json(n, _ctx()) for n in rows])


@bp.post("/notifications/<int:nid>/read")
def notification_read(nid: int) -> Any:
    s = db()
    n = s.get(StaffNotification, nid)
    if n is None or n.user_id != _user().id:
        raise NotFound(f"no notification {nid}")
    n.read_at = n.read_at or runtime().clock()
    s.commit()
    return jsonify(notification_json(n, _ctx()))
