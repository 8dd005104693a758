"""The composition root: the Flask application factory. Everything a process needs is built
here, once, from its settings (the runtime: config, database, spool, provider, limiter) and
reached below through `infra.runtime`; every blueprint is registered here. No work at import
time."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from api.views import bp as api_bp
from cases.clock import utcnow
from cases.config import ConfigError, load_config
from cases.db import database_away, default_database_url, make_engine, make_sessionmaker
from cases.handoff import track
from console.views import bp as console_bp
from infra import web
from infra.health import bp as health_bp
from infra.inputs import IdConverter
from infra.logs import setup_logging
from infra.runtime import Runtime
from infra.settings import load_settings
from infra.spool import Drainer, Spool
from ivr.views import apply_spooled_call
from ivr.views import bp as ivr_bp
from open311.views import bp as open311_bp
from open311.views import register_spooled_request
from sms.views import apply_spooled_status, register_spooled_text
from sms.views import bp as sms_bp
from track.views import bp as track_bp
from workers.celery_app import celery_init_app
from workers.mailer import smtp_settings

log = logging.getLogger(__name__)


def create_app(
    test_config: dict[str, Any] | None = None, *, clock: Callable[[], datetime] | None = None
) -> Flask:
    """Build the app from the environment (and, in tests, overrides and the clock)."""
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
    app = Flask(
        __name__, instance_path=os.path.abspath(os.environ.get("INSTANCE_PATH", "instance"))
    )
    app.url_map.converters["int"] = IdConverter  # before any route is added
    _settings(app, test_config)
    _public_address(app)
    _runtime(app, clock or utcnow).install(app)
    web.init_app(app)
    # CSRF is checked only where the console asks for it (webhooks and APIs carry no cookies).
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the login
    CSRFProtect(app)
    for bp in (health_bp, api_bp, sms_bp, ivr_bp, console_bp, track_bp, open311_bp):
        app.register_blueprint(bp)
    celery_init_app(app)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.name, message=exc.description), exc.code or 500

    return app


def _settings(app: Flask, test_config: dict[str, Any] | None) -> None:
    """The process's settings, from the environment (a bad value stops here, naming its
    variable), with the fixed ones and, in tests, overrides."""
    values = load_settings(os.environ).model_dump()
    values["EXTRA_TRUSTED_HOSTS"] = list(values.pop("TRUSTED_HOSTS"))
    app.config.from_mapping(values)
    app.config.from_mapping(
        # the web process drains the spool in a thread; tests drive the drainer themselves
        SPOOL_DRAIN_THREAD=True,
        LD_CONFIG=None,
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        # the console's login cookie: not readable by scripts, not sent on cross-site requests,
        # at most a working day (Flask's own defaults: SameSite unset, 31 days). Secure: below.
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=10),
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    if app.config["PROXY_HOPS"] > 0:
        hops = app.config["PROXY_HOPS"]
        # the client's address (login throttling, logs) and scheme/host as the proxy saw them
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    os.makedirs(app.instance_path, exist_ok=True)  # beat's schedule, media, embedded broker
    if not app.config["SECRET_KEY"]:
        raise ConfigError("SECRET_KEY is required (lineadiretta run makes one for you)")
    try:
        smtp_settings(app.config)
    except ValueError as exc:
        raise ConfigError(f"SMTP settings: {exc}") from None


def _runtime(app: Flask, clock: Callable[[], datetime]) -> Runtime:
    """The config, the database, and this host's spool with the drainer that hands each kind
    of kept contact to its channel."""
    config = app.config["LD_CONFIG"] or load_config(app.config["CONFIG_PATH"])
    engine = make_engine(app.config["DATABASE_URL"] or default_database_url(app.instance_path))
    sessions = make_sessionmaker(engine)
    track(sessions)
    spool = Spool(app.config["SPOOL_PATH"] or os.path.join(app.instance_path, "spool.sqlite3"))
    handlers: dict[str, Any] = {
        "sms": lambda item: register_spooled_text(app, item),
        "status": lambda item: apply_spooled_status(app, item),
        "open311": lambda item: register_spooled_request(app, item),
        "call": lambda item: apply_spooled_call(app, item),
    }
    drainer = Drainer(spool, handlers, database_away)
    if app.config["SPOOL_DRAIN_THREAD"]:
        # web processes only (a Celery worker serves no request): one thread per process,
        # of which one per host drains at a time
        app.before_request(drainer.start)
    return Runtime(
        config=config,
        engine=engine,
        sessions=sessions,
        settings=app.config,
        spool=spool,
        drainer=drainer,
        clock=clock,
    )


def _public_address(app: Flask) -> None:
    """Citizens' links and the provider's signatures are made from PUBLIC_BASE_URL alone,
    never from a request's Host header (which whoever sends the request chooses). A process
    that serves requests or sends texts cannot start without it (`lineadiretta run` sets its
    own); requests naming another host than it, localhost or TRUSTED_HOSTS are refused (400)."""
    public = (app.config["PUBLIC_BASE_URL"] or "").rstrip("/")
    if not public:
        if app.config.get("NEEDS_PUBLIC_BASE_URL", True):
            raise ConfigError(
                "PUBLIC_BASE_URL is required: the address at which citizens and the provider "
                "reach this service (e.g. https://segnalazioni.comune.example.it); the links "
                "texted to citizens and the webhook signatures are made from it"
            )
        return
    parts = urlsplit(public)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"PUBLIC_BASE_URL must be an http(s) URL, not {public!r}")
    app.config["PUBLIC_BASE_URL"] = public
    if app.config.get("TRUSTED_HOSTS") is None:
        extra = app.config.get("EXTRA_TRUSTED_HOSTS") or []
        app.config["TRUSTED_HOSTS"] = [parts.hostname, "localhost", "127.0.0.1", *extra]

    @app.before_request
    def _known_host() -> None:
        # Flask checks TRUSTED_HOSTS only when request.host is read: read it for every request
        request.host  # noqa: B018 (raises SecurityError, a 400, for any other host)

    https = parts.scheme == "https"

    @app.after_request
    def _security_headers(resp: Response) -> Response:
        # no response is sniffed into another type (JSON, TwiML, CSV as much as the pages)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        if https:  # served over https: browsers must never come back over plain http
            resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return resp
