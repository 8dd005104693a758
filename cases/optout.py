"""Opt-out: a citizen who said STOP (or ARRESTA, CANCELLA, ...: `sms.intent` reads the words;
the provider may also report it) is sent no text by any channel until they say START. A rule
about the citizen, kept here once: the SMS channel records and honours it, the voice channel
does not promise a text, the workers suppress what was queued."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, select
from sqlalchemy.orm import Session

from cases.models import OptOut
from cases.notify import Ctx


def is_opted_out(s: Session, muni: str, phone: str) -> bool:
    row = s.get(OptOut, (muni, phone))
    return bool(row and row.opted_out)


def opted_out_among(s: Session, phones: Iterable[str]) -> set[tuple[str, str]]:
    """Of these numbers, the (municipality, number) pairs that opted out: one query for a
    batch of texts about to be sent."""
    wanted = set(phones)
    if not wanted:
        return set()
    rows = s.execute(
        select(OptOut.municipality, OptOut.phone).where(
            OptOut.opted_out.is_(True), OptOut.phone.in_(wanted)
        )
    )
    return {(m, p) for m, p in rows}


def opted_out_query(muni: ColumnElement[Any], phone: ColumnElement[Any]) -> ScalarSelect[Any]:
    """The same rule as a scalar subquery (NULL: never asked), for a statement that looks the
    sender up and registers in one round trip."""
    return (
        select(OptOut.opted_out)
        .where(OptOut.municipality == muni, OptOut.phone == phone)
        .scalar_subquery()
    )


def set_opt_out(s: Session, ctx: Ctx, phone: str, opted_out: bool, source: str) -> None:
    """Record that `phone` opted out (True) or back in (False); `source` says how (a keyword,
    the provider's error 21610)."""
    row = s.get(OptOut, (ctx.muni.code, phone))
    if row is None:
        s.add(
            OptOut(
                municipality=ctx.muni.code,
                phone=phone,
                opted_out=opted_out,
                source=source,
                updated_at=ctx.now,
            )
        )
    else:
        row.opted_out, row.source, row.updated_at = opted_out, source, ctx.now
