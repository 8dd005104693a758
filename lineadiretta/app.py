"""The Flask application factory: configuration, database, blueprints. No work at import time."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import HTTPException

from cases.clock import utcnow
from cases.config import Config, ConfigError, load_config
from cases.db import default_database_url, make_engine, make_sessionmaker
from lineadiretta.settings import load_settings
from sms.provider import SmsProvider, provider_from_config

log = logging.getLogger(__name__)
SMTP_KEYS = ("SMTP_URL", "SMTP_HOST", "SMTP_PORT", "SMTP_USER", "SMTP_PASSWORD", "SMTP_FROM")


@dataclass
class Runtime:
    """What every request and task shares: the parsed config and the database."""

    config: Config
    engine: Engine
    sessions: sessionmaker[Session]
    public_base_url: str | None
    redis_url: str | None


def provider(app: Flask) -> SmsProvider:
    """The process's one client of the provider (texts, media, recordings), built on first
    use from the app's settings and shared by its threads (its HTTP client keeps what it
    records per thread)."""
    client: SmsProvider | None = app.extensions.get("provider")
    if client is None:
        client = app.extensions["provider"] = provider_from_config(app.config)
    return client


def runtime(app: Flask) -> Runtime:
    rt: Runtime = app.extensions["lineadiretta"]
    return rt


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment (and, in tests, overrides)."""
    from lineadiretta.logs import setup_logging

    setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
    app = Flask(
        __name__, instance_path=os.path.abspath(os.environ.get("INSTANCE_PATH", "instance"))
    )
    from lineadiretta.inputs import IdConverter

    app.url_map.converters["int"] = IdConverter  # before any route is added
    settings = load_settings(os.environ)  # a bad value stops here, naming its variable
    values = settings.model_dump()
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
    # staff e-mails; none of these set: the sandbox (logged, the rows kept as the record)
    app.config.from_mapping({k: os.environ.get(k) or None for k in SMTP_KEYS})
    if test_config:
        app.config.update(test_config)
    if app.config["PROXY_HOPS"] > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["PROXY_HOPS"]
        # the client's address (login throttling, logs) and scheme/host as the proxy saw them
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    os.makedirs(app.instance_path, exist_ok=True)  # beat's schedule, media, embedded broker
    if not app.config["SECRET_KEY"]:
        raise ConfigError("SECRET_KEY is required (lineadiretta run makes one for you)")

    from workers.mailer import smtp_settings

    try:
        smtp_settings(app.config)
    except ValueError as exc:
        raise ConfigError(f"SMTP settings: {exc}") from None
    _public_address(app)
    config = app.config["LD_CONFIG"] or load_config(app.config["CONFIG_PATH"])
    url = app.config["DATABASE_URL"] or default_database_url(app.instance_path)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    from lineadiretta.dispatch import track

    track(sessions)
    app.extensions["lineadiretta"] = Runtime(
        config=config,
        engine=engine,
        sessions=sessions,
        public_base_url=app.config["PUBLIC_BASE_URL"],
        redis_url=app.config["REDIS_URL"],
    )

    from lineadiretta import web

    web.init_app(app)
    _init_spool(app)

    from api.views import bp as api_bp

    app.register_blueprint(api_bp)

    from sms.views import bp as sms_bp

    app.register_blueprint(sms_bp)

    from ivr.views import bp as ivr_bp

    app.register_blueprint(ivr_bp)

    from flask_wtf.csrf import CSRFProtect

    # CSRF is checked only where the console asks for it (webhooks and APIs carry no cookies).
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the login
    CSRFProtect(app)

    from console.views import bp as console_bp

    app.register_blueprint(console_bp)

    from track.views import bp as track_bp

    app.register_blueprint(track_bp)

    from open311.views import bp as open311_bp

    app.register_blueprint(open311_bp)

    from workers.celery_app import celery_init_app

    celery_init_app(app)

    @app.get("/healthz")
    def healthz() -> Any:
        rt = runtime(app)
        checks: dict[str, Any] = {}
        try:
            with rt.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            log.warning("healthz: database unreachable: %s", exc.__class__.__name__)
            checks["database"] = "unreachable"
        if rt.redis_url:
            try:
                import redis

                redis.Redis.from_url(rt.redis_url, socket_timeout=1).ping()
                checks["broker"] = "ok"
            except Exception as exc:
                log.warning("healthz: broker unreachable: %s", exc.__class__.__name__)
                checks["broker"] = "unreachable"
        else:
            checks["broker"] = "embedded"
        try:
            spooled = app.extensions["spool"].stats(utcnow())
        except Exception as exc:  # the host's disk: nothing can be kept while the DB is away
            log.error("healthz: spool unusable: %s", exc.__class__.__name__)
            spooled = None
        if spooled is not None:
            checks["spool"] = {
                "depth": spooled.depth,
                "oldest_age_seconds": spooled.oldest_age_seconds,
                "held": spooled.held,
            }
        # The broker being down degrades sending, not intake; the database being away degrades
        # intake to the spool: still ready, as long as the spool can keep what arrives.
        if checks["database"] == "ok" and spooled is not None and spooled.depth == 0:
            status, code = "ok", 200
        elif spooled is not None:
            status, code = "degraded: spooling", 200
        elif checks["database"] == "ok":
            status, code = "degraded: no spool", 200
        else:
            status, code = "unavailable", 503
        return jsonify(status=status, **checks), code

    @app.get("/metrics")
    def metrics() -> Any:
        """Prometheus' text format: what an operator alerts on (no personal data)."""
        spooled = app.extensions["spool"].stats(utcnow())
        lines = [
            "# HELP lineadiretta_spool_depth Contacts in this host's spool, waiting for the register.",
            "# TYPE lineadiretta_spool_depth gauge",
            f"lineadiretta_spool_depth {spooled.depth}",
            "# HELP lineadiretta_spool_oldest_age_seconds Age of the oldest waiting contact.",
            "# TYPE lineadiretta_spool_oldest_age_seconds gauge",
            f"lineadiretta_spool_oldest_age_seconds {spooled.oldest_age_seconds or 0:.1f}",
            "# HELP lineadiretta_spool_held Spooled contacts that failed repeatedly: staff look.",
            "# TYPE lineadiretta_spool_held gauge",
            f"lineadiretta_spool_held {spooled.held}",
        ]
        return app.response_class("\n".join(lines) + "\n", mimetype="text/plain")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.name, message=exc.description), exc.code or 500

    return app


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


def _init_spool(app: Flask) -> None:
    """This host's spool and its drainer, with the handler of each kind of contact."""
    from cases.db import database_away
    from ivr.views import apply_spooled_call
    from lineadiretta.spool import Drainer, Spool
    from open311.views import register_spooled_request
    from sms.views import apply_spooled_status, register_spooled_text

    spool = Spool(app.config["SPOOL_PATH"] or os.path.join(app.instance_path, "spool.sqlite3"))
    handlers: dict[str, Any] = {
        "sms": lambda item: register_spooled_text(app, item),
        "status": lambda item: apply_spooled_status(app, item),
        "open311": lambda item: register_spooled_request(app, item),
        "call": lambda item: apply_spooled_call(app, item),
    }
    drainer = Drainer(spool, handlers, database_away)
    app.extensions["spool"], app.extensions["spool_drainer"] = spool, drainer
    if app.config["SPOOL_DRAIN_THREAD"]:
        # web processes only (a Celery worker serves no request): one thread per process,
        # of which one per host drains at a time
        app.before_request(drainer.start)
