"""Database plumbing shared by every entry point: engine factory, sessions, portable types."""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

import psycopg
from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy import exc as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


B = TypeVar("B", bound=Base)


def built(cls: type[B], **values: Any) -> B:
    """A new row of `cls` with `values` and the other columns' defaults, put straight into the
    instance (as the ORM does when it loads a row): none of the attribute events that
    `cls(**values)` fires (change history, back-references, cascades). For rows that are
    written whole: by the one-statement registration, or added to a session, whose INSERT
    takes every value the instance holds. Relationships are left to the caller."""
    obj = cls._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    d = obj.__dict__
    for key, default, made in _defaults(cls):
        d[key] = default() if made else default
    d.update(values)
    return obj


def defaulted(obj: Base) -> dict[str, Any]:
    """The instance's own values (its `__dict__`), each column it holds no value for set to
    its Python-side default, as `built` does: what a row written whole is written with."""
    d = obj.__dict__
    for key, default, made in _defaults(type(obj)):
        if d.get(key) is None:
            d[key] = default() if made else default
    return d


@cache
def _defaults(cls: type[Base]) -> tuple[tuple[str, Any, bool], ...]:
    """Each column's Python-side default: (key, a value or a function that makes one, which
    of the two)."""
    out: list[tuple[str, Any, bool]] = []
    for prop in cls.__mapper__.column_attrs:
        default = prop.columns[0].default
        if default is None:
            continue
        if default.is_scalar:
            out.append((prop.key, default.arg, False))
        elif default.is_callable:  # wrapped by SQLAlchemy to take an execution context
            out.append((prop.key, lambda d=default: d.arg(None), True))
    return tuple(out)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no zone, PostgreSQL has)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def default_database_url(instance_dir: str = "instance") -> str:
    """DATABASE_URL, or the embedded SQLite file under instance/."""
    url = os.environ.get("DATABASE_URL")
    if url:
        if url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url[len("postgres://") :]
        elif url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        return url
    os.makedirs(instance_dir, exist_ok=True)
    return f"sqlite:///{os.path.abspath(os.path.join(instance_dir, 'lineadiretta.sqlite'))}"


# A server that does not answer is "away" within seconds, not after the kernel's TCP timeouts
# (minutes): the provider wants an answer within 15 s, and the spool can take the contact.
CONNECT_ARGS: dict[str, Any] = {"connect_timeout": 3, "tcp_user_timeout": 5000}


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Build the engine; on SQLite, WAL and write-locking transactions so workers queue, not fail."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock up front: the protocol counter's
            # read-increment can then never deadlock between two processes.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("connect_args", CONNECT_ARGS)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


class DirectConnections:
    """One autocommit psycopg connection per thread (and process) on a PostgreSQL engine's
    database, for statements that commit on their own (`cases.registration`).

    A pooled SQLAlchemy connection costs a check-out, a pre-ping round trip, and BEGIN and
    COMMIT round trips around a statement: four round trips and ~0.3 ms of CPU for one
    statement's work. Here the statement is the only round trip, sent with PostgreSQL's own
    ``$n`` placeholders (no conversion per call) and prepared by psycopg after a few uses.
    `Engine.dispose()` closes them all, as it closes the pool.
    """

    def __init__(self, engine: Engine) -> None:
        url = engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: weakref.WeakSet[Any] = weakref.WeakSet()

    def _connection(self, fresh: bool = False) -> Any:
        conn = getattr(self._local, "conn", None)
        if fresh or conn is None or conn.closed or self._local.pid != os.getpid():
            conn = psycopg.connect(
                self._conninfo, autocommit=True, cursor_factory=psycopg.RawCursor, **CONNECT_ARGS
            )
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._lock:
                self._open.add(conn)
        return conn

    def fetchone(self, sql: str, params: Sequence[Any], *, repeatable: bool) -> Any:
        """Run one statement (in its own transaction) and return its first row or None.

        A connection that fails is closed. When `repeatable` (running the statement twice
        does no harm: the second run is refused by a unique key, say), a statement that failed
        with its connection is sent once more on a new one: the connection may have been
        closed by the server while it was idle (a restart, a fail-over). Errors are raised as
        SQLAlchemy's (an IntegrityError for a duplicate key, say), as on the ORM path."""

        try:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchone()
            except psycopg.OperationalError:
                conn.close()
                if not repeatable:
                    raise
            return self._connection(fresh=True).execute(sql, params).fetchone()
        except psycopg.Error as exc:  # raised as SQLAlchemy raises it on the ORM path (no values)
            raise sa.DBAPIError.instance(
                sql, params, exc, psycopg.Error, hide_parameters=True
            ) from exc

    def close(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), weakref.WeakSet()
        for conn in conns:
            conn.close()


_direct: weakref.WeakKeyDictionary[Engine, DirectConnections] = weakref.WeakKeyDictionary()
_direct_lock = threading.Lock()


def direct_connections(engine: Engine) -> DirectConnections:
    """The engine's `DirectConnections` (PostgreSQL only), made on first use."""
    found = _direct.get(engine)
    if found is None:
        with _direct_lock:
            found = _direct.get(engine)
            if found is None:
                found = _direct[engine] = DirectConnections(engine)

                @event.listens_for(engine, "engine_disposed")
                def _closed(_engine: Engine, direct: DirectConnections = found) -> None:
                    direct.close()

    return found


def database_away(exc: BaseException) -> bool:
    """The register cannot be reached, or cannot write, for now (a refused or cut connection,
    a timeout, a server shutting down or starting, a read-only standby after a fail-over, a
    serialisation failure, a locked SQLite file): the same work may succeed later. Any other
    error belongs to the work itself."""

    if isinstance(exc, sa.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa.OperationalError | sa.InterfaceError):
            return True
        exc = exc.orig or exc
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.InterfaceError
        | psycopg.errors.ReadOnlySqlTransaction
        | sqlite3.OperationalError,
    )
