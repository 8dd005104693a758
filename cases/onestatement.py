"""A registration as ONE PostgreSQL statement: the text of that statement and its parameters.

`cases.registration` decides what a registration writes; on PostgreSQL it hands the rows
here, and one statement (a chain of data-modifying CTEs, sent by `cases.db`'s direct
connections) increments the year's counter, inserts the case, its events in order, its
attachments and the rows linked to it, and returns their ids. Each row travels as one JSON
parameter read by `json_populate_record`; a text that prints the case's number is written
with the provisional number's printed forms replaced by `format()` with the real one.
Statements are cached by shape (which tables, which columns), so a shape is built once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from cases.db import defaulted


@dataclass(frozen=True)
class Row:
    """One row of the statement: its table, the columns it sets (those left out are NULL),
    of those the text columns that print the protocol number, and its parameter (the row
    as a JSON object)."""

    table: str
    columns: tuple[str, ...]
    numbered: tuple[str, ...]
    param: int


@dataclass(frozen=True)
class Shape:
    precondition: str | None
    looked_up: int
    case: Row
    events: tuple[Row, ...]
    attachments: tuple[Row, ...]
    linked: tuple[Row, ...]


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise ValueError("naive datetime: pass an aware datetime")
        return v.isoformat()
    raise TypeError(f"{type(v).__name__} is not a column value")


_dumps = json.JSONEncoder(default=_json_default, ensure_ascii=False).encode


def json_row(
    params: list[Any],
    obj: Any,
    skip: tuple[str, ...] = ("case_id",),
    numbered: tuple[str, ...] = (),
    provisional: tuple[str, str] = ("", ""),
) -> Row:
    """The object's values (or their column defaults) as one JSON parameter; a `numbered`
    text that prints the provisional number becomes a PostgreSQL format() string with
    %1$s / %2$s in its place."""
    table = obj.__table__
    held = defaulted(obj)  # the instance's own values, read as loaded ones are
    values: dict[str, Any] = {}
    formatted: list[str] = []
    for col in _settable(table):
        if col.key in skip:
            continue
        v = held.get(col.key)
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
    return Row(table.name, tuple(values), tuple(formatted), len(params))


@cache
def _settable(table: Table) -> tuple[Column[Any], ...]:
    return tuple(col for col in table.columns if not col.primary_key)


DOLLAR = PGDialect_psycopg(paramstyle="numeric_dollar")
_PRINTED = "lpad(c.number::text, greatest(7, length(c.number::text)), '0')"
_FORMAT = f"c.year::text || '/' || {_PRINTED}, c.year::text || '-' || {_PRINTED}"


@cache
def statement(shape: Shape) -> str:
    """The one statement for this shape of registration (PostgreSQL, $n placeholders):
    [the look-up,] the counter, the case, its events, attachments and linked rows."""

    def values(row: Row) -> str:
        return ", ".join(
            f"format(v.{key}, {_FORMAT})" if key in row.numbered else f"v.{key}"
            for key in row.columns
        )

    def insert(name: str, row: Row, after: str | None) -> str:
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
