"""Writing a prepared registration and committing it, with the protocol counter held for as
short a time as the database allows.

`services.prepare_case` decides everything about a new case in memory (text, category,
routing, history, attachments). `commit_registration` then gives it its number and writes it
together with rows that belong to it (an inbound text and the reply that carries the
number, say), and commits:

- on PostgreSQL, in ONE autocommitted statement: a chain of data-modifying CTEs that
  increments the counter, inserts the case, its events (in order), its attachments and the
  linked rows. The counter row is locked only while PostgreSQL runs that statement and flushes
  its commit: no Python, no round trip and no GIL wait happens while other registrations queue
  behind the lock. The statement is atomic, so a failure (a duplicate provider id, a check)
  consumes no number. Text columns of the linked rows are rendered in Python with the
  provisional number 0 (a number that never exists, see the `number_positive` check), and the
  database puts the real number in place of its two printed forms (2026/0000000 and the URL
  form 2026-0000000) in the same statement;
- elsewhere (SQLite), through the ORM in the caller's session: number, flush, commit.

Either way, when it returns the case and the rows are committed and persistent in the
session, with their ids, and their text holds the real number.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import psycopg
from sqlalchemy import Column, ColumnElement, Engine, Select, Table, select
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from cases.db import Base, direct_connections
from cases.models import Case, format_protocol
from cases.protocol import ensure_counter, next_number, url_protocol

PROVISIONAL = 0  # the number a case has until the database gives it one; never a real one


def _printed(year: int, number: int) -> tuple[str, str]:
    return format_protocol(year, number), url_protocol(year, number)


def write_case(s: Session, case: Case) -> None:
    """Number a prepared case and flush it in the caller's transaction (the ORM path). The
    number is taken last: the counter row stays locked from there to the commit, so
    everything that can be prepared without it is prepared before."""
    s.add(case)
    with s.no_autoflush:
        case.number = next_number(s, case.municipality, case.year)
    s.flush()


@dataclass(frozen=True)
class Precondition:
    """A look-up of one row that runs inside the registration's own statement, and the
    condition on that row under which the case is registered.

    Built once per shape (`of`): `statement` is a SELECT of `ok` (the condition) and the
    look-up's labelled columns, usable on every backend; on PostgreSQL its compiled text
    becomes the first part of the registration's statement, so that looking up and
    registering are one round trip.
    """

    statement: Select[Any]
    sql: str  # `statement` for PostgreSQL, with $1.. placeholders
    names: tuple[str, ...]  # the parameter behind each placeholder, in order
    compiled_in: tuple[tuple[str, Any], ...]  # values SQLAlchemy keeps itself (limits, lists)
    columns: tuple[str, ...]  # the look-up's labels

    @classmethod
    def of(
        cls,
        lookup: Select[Any],
        holds: Callable[[ReadOnlyColumnCollection[str, Any]], ColumnElement[bool]],
    ) -> Precondition:
        """`lookup`: one row of labelled columns; `holds(columns)`: the condition on them
        (NULL counts as not holding)."""
        k = lookup.offset(0).subquery("k")  # OFFSET: looked up once, not once per use
        statement = select(holds(k.c).label("ok"), *k.c)
        # IN lists and limits are expanded into the text; the caller's parameters stand at
        # None for that, and come with each registration
        compiled = statement.compile(dialect=_DOLLAR)
        blank = {name: None for name, b in compiled.binds.items() if b.required}
        expanded = compiled.construct_expanded_state(blank)
        names = tuple(expanded.positiontup or ())
        own = expanded.parameters
        return cls(
            statement=statement,
            sql=expanded.statement,
            names=names,
            compiled_in=tuple((n, own[n]) for n in names if own.get(n) is not None),
            columns=tuple(k.c.keys()),
        )


def commit_registration(
    s: Session,
    case: Case,
    linked: Callable[[Case], list[Base]] | None = None,
    numbered: tuple[str, ...] = (),
    *,
    repeatable: bool = False,
) -> list[Base]:
    """Number, write and commit a case from `prepare_case`, with the rows `linked` makes.

    `linked(case)` is called once with the case before its number is known on PostgreSQL
    (`case.number == PROVISIONAL`) or after it (elsewhere); the rows it returns have a
    `case_id` column, which is filled in. `numbered` names their text columns that print the
    case's number (rendered from templates, which never quote what a citizen wrote): only
    there is the provisional number replaced; every other value is written as it is. Returns
    the rows, committed. The session must have nothing else waiting to be written (this
    commits). `repeatable`: the linked rows make a second run of the same registration fail
    (a provider's unique message id), so a statement whose connection failed may be sent
    again.
    """
    rows, _ = _commit(s, case, linked, numbered, None, {}, repeatable)
    assert rows is not None
    return rows


def register_if(
    s: Session,
    precondition: Precondition,
    values: dict[str, Any],
    case: Case,
    linked: Callable[[Case], list[Base]] | None = None,
    numbered: tuple[str, ...] = (),
    *,
    repeatable: bool = False,
) -> tuple[list[Base] | None, dict[str, Any]]:
    """`commit_registration`, only if `precondition` holds for `values` (its parameters):
    (the rows, committed, or None when it did not hold and nothing was written; the look-up's
    row). On PostgreSQL the look-up, the registration and the commit are one statement."""
    return _commit(s, case, linked, numbered, precondition, values, repeatable)


def _commit(
    s: Session,
    case: Case,
    linked: Callable[[Case], list[Base]] | None,
    numbered: tuple[str, ...],
    pre: Precondition | None,
    values: dict[str, Any],
    repeatable: bool,
) -> tuple[list[Base] | None, dict[str, Any]]:
    if s.new or s.dirty or s.deleted:
        raise RuntimeError("commit_registration commits: flush or commit other work first")
    bind = s.get_bind()
    if bind.dialect.name != "postgresql":
        looked: dict[str, Any] = {}
        if pre is not None:
            got = s.execute(pre.statement, values).one()._asdict()
            ok = bool(got.pop("ok"))
            looked = got
            if not ok:
                s.commit()
                return None, looked
        write_case(s, case)
        rows = linked(case) if linked else []
        for row in rows:
            row.case_id = case.id  # type: ignore[attr-defined]
            s.add(row)
        s.commit()
        return rows, looked

    case.number = PROVISIONAL
    rows = linked(case) if linked else []
    events, attachments = list(case.events), list(case.attachments)
    provisional = _printed(case.year, PROVISIONAL)
    params: list[Any] = []
    if pre is not None:
        compiled_in = dict(pre.compiled_in)
        params.extend(values[n] if n in values else compiled_in[n] for n in pre.names)
    params += [case.municipality, case.year]
    shape = _Shape(
        precondition=pre.sql if pre is not None else None,
        looked_up=len(pre.columns) if pre is not None else 0,
        case=_json_row(params, case, ("number",)),
        events=tuple(_json_row(params, e) for e in events),
        attachments=tuple(_json_row(params, a) for a in attachments),
        linked=tuple(
            _json_row(params, r, numbered=numbered, provisional=provisional) for r in rows
        ),
    )

    s.commit()  # end any read transaction: the statement commits on its own
    engine = bind if isinstance(bind, Engine) else bind.engine
    direct = direct_connections(engine)
    sql = _statement(shape)
    try:
        got = direct.fetchone(sql, params, repeatable=repeatable)
        looked = _looked_up(pre, got)
        if pre is not None and not got[0]:
            return None, looked
        if got is None or (pre is not None and got[1 + shape.looked_up] is None):
            # the first registration of the year: the counter row is missing
            with engine.begin() as conn:
                ensure_counter(conn, case.municipality, case.year)
            got = direct.fetchone(sql, params, repeatable=repeatable)
            looked = _looked_up(pre, got)
            if pre is not None and not got[0]:
                return None, looked
    except psycopg.Error as exc:  # as SQLAlchemy raises it on the ORM path (no values shown)
        raise DBAPIError.instance(sql, params, exc, psycopg.Error, hide_parameters=True) from exc
    ids = iter(got[1 + shape.looked_up :] if pre is not None else got)
    case.id, case.number = next(ids), next(ids)
    final = _printed(case.year, case.number)
    objects: list[Base] = [case]
    for obj in [*events, *attachments, *rows]:
        obj.id = next(ids)  # type: ignore[attr-defined]
        obj.case_id = case.id  # type: ignore[attr-defined]
        objects.append(obj)
    for r in rows:  # what the database wrote, in memory too
        for key in numbered:
            v = getattr(r, key, None)
            if isinstance(v, str):
                for old, new in zip(provisional, final, strict=True):
                    v = v.replace(old, new)
                setattr(r, key, v)
    # Persistent, as if loaded: nothing left for the session to write, history and
    # attachments already in the case's collections.
    for obj in objects:
        make_transient_to_detached(obj)
    set_committed_value(case, "events", events)
    set_committed_value(case, "attachments", attachments)
    s.add(case)
    s.add_all(rows)
    media = [a for a in attachments if a.state == "pending"]
    if media:
        s.info.setdefault("new_media", []).extend(media)  # queued by dispatch.after_commit
    return rows, looked


def _looked_up(pre: Precondition | None, got: Any) -> dict[str, Any]:
    if pre is None or got is None:
        return {}
    return dict(zip(pre.columns, got[1 : 1 + len(pre.columns)], strict=True))


# ---------------------------------------------------------------- the PostgreSQL statement


@dataclass(frozen=True)
class _Row:
    """One row of the statement: its table, the columns it sets (those left out are NULL),
    of those the text columns that print the protocol number, and its parameter (the row
    as a JSON object)."""

    table: str
    columns: tuple[str, ...]
    numbered: tuple[str, ...]
    param: int


@dataclass(frozen=True)
class _Shape:
    precondition: str | None
    looked_up: int
    case: _Row
    events: tuple[_Row, ...]
    attachments: tuple[_Row, ...]
    linked: tuple[_Row, ...]


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise ValueError("naive datetime: pass an aware datetime")
        return v.isoformat()
    raise TypeError(f"{type(v).__name__} is not a column value")


_dumps = json.JSONEncoder(default=_json_default, ensure_ascii=False).encode


def _json_row(
    params: list[Any],
    obj: Any,
    skip: tuple[str, ...] = ("case_id",),
    numbered: tuple[str, ...] = (),
    provisional: tuple[str, str] = ("", ""),
) -> _Row:
    """The object's values (or their column defaults) as one JSON parameter; a `numbered`
    text that prints the provisional number becomes a PostgreSQL format() string with
    %1$s / %2$s in its place."""
    table = obj.__table__
    values: dict[str, Any] = {}
    formatted: list[str] = []
    for col in _settable(table):
        if col.key in skip:
            continue
        v = getattr(obj, col.key)
        default: Any = col.default
        if v is None and default is not None:
            v = default.arg if default.is_scalar else default.arg(None)
            setattr(obj, col.key, v)
        if v is None:
            continue
        if (
            col.key in numbered
            and isinstance(v, str)
            and (provisional[0] in v or provisional[1] in v)
        ):
            v = v.replace("%", "%%").replace(provisional[0], "%1$s")
            v = v.replace(provisional[1], "%2$s")
            formatted.append(col.key)
        values[col.key] = v
    params.append(_dumps(values))
    return _Row(table.name, tuple(values), tuple(formatted), len(params))


@cache
def _settable(table: Table) -> tuple[Column[Any], ...]:
    return tuple(col for col in table.columns if not col.primary_key)


_DOLLAR = PGDialect_psycopg(paramstyle="numeric_dollar")
_PRINTED = "lpad(c.number::text, greatest(7, length(c.number::text)), '0')"
_FORMAT = f"c.year::text || '/' || {_PRINTED}, c.year::text || '-' || {_PRINTED}"


@cache
def _statement(shape: _Shape) -> str:
    """The one statement for this shape of registration (PostgreSQL, $n placeholders):
    [the look-up,] the counter, the case, its events, attachments and linked rows."""

    def values(row: _Row) -> str:
        return ", ".join(
            f"format(v.{key}, {_FORMAT})" if key in row.numbered else f"v.{key}"
            for key in row.columns
        )

    def insert(name: str, row: _Row, after: str | None) -> str:
        source = "c" if after is None else f"c, {after}"  # the chain orders the inserts
        return (
            f"{name} AS (INSERT INTO {row.table} ({', '.join(row.columns)}, case_id) "
            f"SELECT {values(row)}, c.id FROM {source}, "
            f"json_populate_record(NULL::{row.table}, ${row.param}::json) v "
            f"RETURNING {row.table}.id)"
        )

    first = shape.case.param - 2  # municipality and year come just before the case
    guard = " AND (SELECT ok FROM k)" if shape.precondition else ""
    ctes = [f"k AS ({shape.precondition})"] if shape.precondition else []
    ctes += [
        "n AS (UPDATE protocol_counters SET last_number = last_number + 1 "
        f"WHERE municipality = ${first} AND year = ${first + 1}{guard} RETURNING last_number)",
        f"c AS (INSERT INTO cases ({', '.join(shape.case.columns)}, number) "
        f"SELECT {values(shape.case)}, n.last_number FROM n, "
        f"json_populate_record(NULL::cases, ${shape.case.param}::json) v "
        "RETURNING id, year, number)",
    ]
    names: list[str] = []
    for i, row in enumerate(shape.events):  # in order: each waits for the one before
        ctes.append(insert(f"e{i}", row, names[-1] if names else None))
        names.append(f"e{i}")
    for prefix, rows in (("a", shape.attachments), ("x", shape.linked)):
        for i, row in enumerate(rows):
            ctes.append(insert(f"{prefix}{i}", row, None))
            names.append(f"{prefix}{i}")
    ids = ", ".join(["c.id", "c.number", *(f"{n}.id" for n in names)])
    written = f"SELECT {ids} FROM {', '.join(['c', *names])}"
    if not shape.precondition:
        return f"WITH {', '.join(ctes)} {written}"
    return f"WITH {', '.join(ctes)} SELECT k.*, w.* FROM k LEFT JOIN ({written}) w ON true"
