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

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Integer, String, TextClause, bindparam, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from cases.db import Base
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


def commit_registration(
    s: Session,
    case: Case,
    linked: Callable[[Case], list[Base]] | None = None,
    numbered: tuple[str, ...] = (),
) -> list[Base]:
    """Number, write and commit a case from `prepare_case`, with the rows `linked` makes.

    `linked(case)` is called once with the case before its number is known on PostgreSQL
    (`case.number == PROVISIONAL`) or after it (elsewhere); the rows it returns have a
    `case_id` column, which is filled in. `numbered` names their text columns that print the
    case's number (rendered from templates, which never quote what a citizen wrote): only
    there is the provisional number replaced; every other value is written as it is. Returns
    the rows, committed. The session must have nothing else waiting to be written (this
    commits).
    """
    if s.new or s.dirty or s.deleted:
        raise RuntimeError("commit_registration commits: flush or commit other work first")
    if s.get_bind().dialect.name != "postgresql":
        write_case(s, case)
        rows = linked(case) if linked else []
        for row in rows:
            row.case_id = case.id  # type: ignore[attr-defined]
            s.add(row)
        s.commit()
        return rows

    case.number = PROVISIONAL
    rows = linked(case) if linked else []
    events, attachments = list(case.events), list(case.attachments)
    provisional = _printed(case.year, PROVISIONAL)
    params: dict[str, Any] = {"n_m": case.municipality, "n_y": case.year}
    shape = _Shape(
        case=_bind(params, "c", case, ("number",)),
        events=tuple(_bind(params, f"e{i}", e) for i, e in enumerate(events)),
        attachments=tuple(_bind(params, f"a{i}", a) for i, a in enumerate(attachments)),
        linked=tuple(
            _bind(params, f"x{i}", r, numbered=numbered, provisional=provisional)
            for i, r in enumerate(rows)
        ),
    )

    s.commit()  # end the read transaction: the statement commits on its own
    conn = s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    stmt = _statement(shape)
    got = conn.execute(stmt, params).one_or_none()
    if got is None:  # the first registration of the year: the counter row is missing
        ensure_counter(conn, case.municipality, case.year)
        got = conn.execute(stmt, params).one()
    ids = iter(got)
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
    return rows


# ---------------------------------------------------------------- the PostgreSQL statement


@dataclass(frozen=True)
class _Row:
    """One row of the statement: its table, the columns it sets (those left out are NULL)
    and, of those, the text columns that print the protocol number."""

    table: str
    columns: tuple[str, ...]
    numbered: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Shape:
    case: _Row
    events: tuple[_Row, ...]
    attachments: tuple[_Row, ...]
    linked: tuple[_Row, ...]


def _bind(
    params: dict[str, Any],
    prefix: str,
    obj: Any,
    skip: tuple[str, ...] = ("case_id",),
    numbered: tuple[str, ...] = (),
    provisional: tuple[str, str] = ("", ""),
) -> _Row:
    """The object's values (or their column defaults) as parameters `prefix_i`; a `numbered`
    text that prints the provisional number becomes a PostgreSQL format() string with
    %1$s / %2$s in its place."""
    table = obj.__table__
    columns: list[str] = []
    formatted: list[str] = []
    for col in table.columns:
        if col.primary_key or col.key in skip:
            continue
        v = getattr(obj, col.key)
        if v is None and col.default is not None:
            v = col.default.arg if col.default.is_scalar else col.default.arg(None)
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
        params[f"{prefix}_{len(columns)}"] = v
        columns.append(col.key)
    return _Row(table.name, tuple(columns), tuple(formatted))


_PG = postgresql.dialect()
_PRINTED = "lpad(c.number::text, greatest(7, length(c.number::text)), '0')"
_FORMAT = f"c.year::text || '/' || {_PRINTED}, c.year::text || '-' || {_PRINTED}"


@cache
def _statement(shape: _Shape) -> TextClause:
    """The one statement for this shape of registration."""
    binds: list[Any] = [
        bindparam("n_m", type_=String()),
        bindparam("n_y", type_=Integer()),
    ]

    def select_list(prefix: str, row: _Row) -> str:
        table = Base.metadata.tables[row.table]
        out = []
        for i, key in enumerate(row.columns):
            col, name = table.c[key], f"{prefix}_{i}"
            binds.append(bindparam(name, type_=col.type))
            if key in row.numbered:
                out.append(f"format(CAST(:{name} AS TEXT), {_FORMAT})")
            else:
                out.append(f"CAST(:{name} AS {col.type.compile(dialect=_PG)})")
        return ", ".join(out)

    def insert(name: str, row: _Row, after: str | None) -> str:
        source = "c" if after is None else f"c, {after}"  # the chain orders the inserts
        return (
            f"{name} AS (INSERT INTO {row.table} ({', '.join(row.columns)}, case_id) "
            f"SELECT {select_list(name, row)}, c.id FROM {source} RETURNING {row.table}.id)"
        )

    ctes = [
        "n AS (UPDATE protocol_counters SET last_number = last_number + 1 "
        "WHERE municipality = :n_m AND year = :n_y RETURNING last_number)",
        f"c AS (INSERT INTO cases ({', '.join(shape.case.columns)}, number) "
        f"SELECT {select_list('c', shape.case)}, n.last_number FROM n "
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
    select = ", ".join(["c.id", "c.number", *(f"{n}.id" for n in names)])
    sql = f"WITH {', '.join(ctes)} SELECT {select} FROM {', '.join(['c', *names])}"
    return text(sql).bindparams(*binds)
