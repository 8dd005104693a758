"""Test fixtures: both backends for real (SQLite file, PostgreSQL from the test command)."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from cases.config import Config, Municipality, load_config
from cases.db import make_engine, make_sessionmaker
from cases.notify import Ctx
from cases.services import create_user
from lineadiretta.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"
TWILIO_TOKEN = "test-auth-token"
PUBLIC = "https://comune.example.it"
TABLES = (
    "staff_notifications",
    "email_outbox",
    "outbox",
    "attachments",
    "case_events",
    "cases",
    "users",
    "protocol_counters",
    "job_locks",
    "inbound_messages",
    "opt_outs",
    "call_steps",
    "calls",
    "api_keys",
    "reply_templates",
    "staff_sessions",
)


def need(var: str, what: str) -> str:
    """The URL of a real service the test command provided; skip (or fail in CI) without it."""
    value = os.environ.get(var)
    if not value:
        if IN_CI:
            pytest.fail(f"{what} is required in CI but {var} is not set")
        pytest.skip(f"{what} not available ({var} unset): run ./scripts/test")
    return value


@pytest.fixture(scope="session")
def config() -> Config:
    return load_config(ROOT / "config.toml")


@pytest.fixture(scope="session")
def muni(config: Config) -> Municipality:
    return config.municipality[0]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = need("TEST_DATABASE_URL", "PostgreSQL")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        upgrade(url)
        yield url
        return
    # Under pytest-xdist each worker gets a database of its own: tests truncate between runs.
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_{worker}"
    admin = make_engine(base.set(database="postgres").render_as_string(hide_password=False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    own = base.set(database=name).render_as_string(hide_password=False)
    upgrade(own)
    yield own
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def redis_call_store(app: Flask) -> Iterator[Any]:
    """The app's IVR call state in the test Redis, under a prefix of its own, deleted after."""
    from ivr.callstate import CallStore

    store = CallStore.from_url(
        need("TEST_REDIS_URL", "Redis"), prefix=f"ld:test:{secrets.token_hex(6)}:call:"
    )
    app.extensions["ivr_calls"] = store
    yield store
    keys = list(store.client.scan_iter(match=store.prefix + "*"))
    if keys:
        store.client.delete(*keys)


def _truncate(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "ld.sqlite"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
    else:
        url: str = request.getfixturevalue("pg_url")
        _truncate(url)
        yield url


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "ld.sqlite"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture
def ctx(muni: Municipality) -> Ctx:
    return Ctx(muni=muni, now=datetime.now(UTC), base_url="https://comune.example.it")


class Clock:
    """The clock a test gives the app: set to `t`, it runs on from there as time passes (a
    contact kept in the spool is registered a little later than it arrived)."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    @property
    def t(self) -> datetime:
        return self._set + timedelta(seconds=time.monotonic() - self._at)

    @t.setter
    def t(self, value: datetime) -> None:
        self._set, self._at = value, time.monotonic()

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture
def clock() -> Clock | None:
    """The app's clock: the real one, unless a test module gives its own (a `clock` fixture)."""
    return None


def make_app(
    db_url: str, config: Config, tmp_path: Path, clock: Callable[[], datetime] | None = None
) -> Flask:
    """The app as the tests run it: on `db_url`, no broker, the spool under `tmp_path`."""
    from lineadiretta.app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "DATABASE_URL": db_url,
            "LD_CONFIG": config,
            "PUBLIC_BASE_URL": "https://comune.example.it",
            "REDIS_URL": None,
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "TWILIO_ACCOUNT_SID": None,
            "SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
            "SPOOL_DRAIN_THREAD": False,  # tests drain with runtime(app).drainer
        },
        clock=clock,
    )
    app.instance_path = str(tmp_path / "instance")
    return app


@pytest.fixture
def app(db_url: str, config: Config, tmp_path: Path, clock: Clock | None) -> Iterator[Flask]:
    from infra.runtime import runtime

    app = make_app(db_url, config, tmp_path, clock)
    yield app
    runtime(app).engine.dispose()


@pytest.fixture
def proxied(
    pg_url: str, config: Config, tmp_path: Path, clock: Clock | None
) -> Iterator[tuple[Flask, Any]]:
    """The app on the real PostgreSQL through a proxy the test can cut (`proxy.cut()`) and
    restore: the register "away" without touching the shared server."""
    from sqlalchemy.engine import make_url

    from infra.runtime import runtime
    from tests.fakes.tcpproxy import TcpProxy

    _truncate(pg_url)
    target = make_url(pg_url)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        url = target.set(port=proxy.port).render_as_string(hide_password=False)
        app = make_app(url, config, tmp_path, clock)
        yield app, proxy
        runtime(app).engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Staff:
    """Creates staff accounts and calls the API as them."""

    def __init__(self, app: Flask, client: FlaskClient, muni: Municipality):
        from infra.runtime import runtime

        self.client = client
        self.sessions = runtime(app).sessions
        self.muni = muni
        self.tokens: dict[str, str] = {}

    def add(self, name: str, role: str, office: str | None = None, muni: str | None = None) -> str:
        from cases.db import transaction
        from infra.runtime import runtime

        m = runtime(self.client.application).config.get(muni) if muni else self.muni
        with transaction(self.sessions) as s:
            _, token = create_user(
                s, Ctx(m, datetime.now(UTC)), name, role, office, full_name=name.title()
            )
        self.tokens[name] = token
        return token

    def call(self, who: str, method: str, path: str, json: Any = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return self.client.open(f"/api/v1{path}", method=method, json=json, headers=headers, **kw)

    def get(self, who: str, path: str, **kw: Any) -> Any:
        return self.call(who, "GET", path, **kw)

    def post(self, who: str, path: str, json: Any = None, **kw: Any) -> Any:
        return self.call(who, "POST", path, json=json, **kw)


@pytest.fixture
def staff(app: Flask, client: FlaskClient, muni: Municipality) -> Staff:
    return Staff(app, client, muni)


def signed_post(
    client: FlaskClient,
    path: str,
    form: dict[str, str],
    *,
    token: str = TWILIO_TOKEN,
    signature: str | None = None,
) -> Any:
    """POST a form as the provider does, signed for the public URL."""
    from twilio.request_validator import RequestValidator

    sig = (
        signature
        if signature is not None
        else RequestValidator(token).compute_signature(PUBLIC + path, form)
    )
    return client.post(path, data=form, headers={"X-Twilio-Signature": sig})
