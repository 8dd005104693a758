"""Per-request plumbing shared by the blueprints: one DB session per request, the Ctx."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import date
from typing import Any

from flask import Blueprint, Flask, g, request
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from cases.config import Municipality
from cases.db import database_away
from cases.errors import DomainError, Forbidden, IllegalTransition, Invalid, NotFound
from cases.notify import Ctx
from infra.inputs import day, json_document
from infra.runtime import runtime

log = logging.getLogger(__name__)


def db() -> Session:
    """The request's session (one transaction per request; views commit explicitly)."""
    if "db" not in g:
        g.db = runtime().sessions()
    s: Session = g.db
    return s


def public_base_url() -> str:
    """The service's public address, from configuration only (never the Host header)."""
    return runtime().public_base_url or ""


def ctx_for(muni: Municipality) -> Ctx:
    return Ctx(muni=muni, now=runtime().clock(), base_url=public_base_url())


def _teardown(_exc: BaseException | None) -> None:
    s: Session | None = g.pop("db", None)
    if s is not None:
        s.rollback()  # anything not committed by the view is discarded, never half-written
        s.close()


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, for the console only."""

    def open_session(self, app: Flask, request: Any) -> Any:
        """Only the console has a login cookie; webhooks, APIs and the status page get the null
        session (reading it is harmless, writing to it raises: no cookie leaks into them)."""
        if not request.path.startswith("/console"):
            return self.make_null_session(app)
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    app.session_interface = SessionInterface()
    app.teardown_appcontext(_teardown)


def json_body() -> dict[str, Any]:
    """The request's JSON object, or an Invalid error that says what is wrong."""
    if not request.data:
        return {}
    data = json_document(request.get_data())
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object")
    return data


def domain_status(exc: Exception) -> int:
    """The HTTP status of a refusal by the domain: the same answer from every front end."""
    for kind, status in ((NotFound, 404), (Forbidden, 403), (IllegalTransition, 409)):
        if isinstance(exc, kind):
            return status
    return 400  # Invalid, and any other refusal: the request is what is wrong


def install_error_handlers(bp: Blueprint, render: Callable[[int, str], Any]) -> None:
    """Domain refusals as 4xx, a conflicting write as 409, the database away as 503, each
    logged once and rendered in the blueprint's own format (JSON, HTML, Open311)."""

    def _where() -> str:
        return f"{bp.name} {request.method} {request.path}"

    @bp.errorhandler(DomainError)
    def _domain(exc: DomainError) -> Any:
        status = domain_status(exc)
        log.info("%s -> %s: %s", _where(), status, exc)
        return render(status, str(exc))

    @bp.errorhandler(IntegrityError)
    def _integrity(exc: IntegrityError) -> Any:
        log.warning("%s -> 409: integrity error %s", _where(), exc.orig)
        return render(409, "the change conflicts with the register's rules; reload and retry")

    @bp.errorhandler(DataError)
    def _unstorable(exc: DataError) -> Any:
        log.warning("%s -> 400: value refused by the database %s", _where(), exc.orig)
        return render(
            400, "a value cannot be stored as given (a NUL character, a number out of range)"
        )

    @bp.errorhandler(OperationalError)
    def _unavailable(exc: OperationalError) -> Any:
        log.error("%s -> 503: database error %s", _where(), exc.orig)
        return render(503, "the register is temporarily unavailable; retry shortly")


def over_limit(key: str, per_minute: float) -> float | None:
    """Seconds to wait when `key` has used its `per_minute` (a burst of as many is allowed),
    else None. A limiter that cannot be reached limits nothing (and says so in the log)."""
    if per_minute <= 0:
        return None
    try:
        wait = runtime().limiter.reserve(key, 1, per_minute / 60.0, 60.0)
    except Exception as exc:
        log.warning("rate limit %s unavailable (%s): not applied", key.split(":")[0], exc)
        return None
    return -wait if wait < 0 else None


def date_arg(name: str) -> date | None:
    """The query argument `name` as a date (YYYY-MM-DD), None when absent; Invalid otherwise."""
    value = request.args.get(name)
    if not value:
        return None
    return day(value, name)


def went_away(exc: BaseException) -> bool:
    """True when `exc` means the register is away (`cases.db.database_away`); the request's
    session is then rolled back, quietly (its connection may be dead), for the caller to keep
    the contact in the spool."""
    if not database_away(exc):
        return False
    s: Session | None = g.get("db")
    if s is not None:
        with suppress(Exception):
            s.rollback()
    return True


def keep_while_away(kind: str, key: str, municipality: str, payload: dict[str, Any]) -> bool:
    """Keep a contact in this host's spool (on disk before this returns) because the register
    is away; the drainer registers it when the register answers. False when it was already
    kept (a provider's retry)."""
    rt = runtime()
    kept: bool = rt.spool.append(kind, key, municipality, payload, runtime().clock())
    rt.drainer.wake()
    log.warning(
        "%s %s: the register is away; %s in this host's spool",
        kind,
        request.path,
        "kept" if kept else "already",
    )
    return kept
