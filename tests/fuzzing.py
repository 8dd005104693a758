"""Shared by the fuzz suites: a register with some cases in it, and the invariants that no
request, however malformed, may break (nothing half-written)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from flask import Flask
from sqlalchemy import func, select

from cases.config import Municipality
from cases.db import transaction
from cases.models import Attachment, Case, CaseEvent, OutboxMessage, ProtocolCounter
from cases.notify import Ctx
from cases.registration import register
from infra.runtime import runtime


def seed_cases(app: Flask, muni: Municipality, count: int = 3) -> list[str]:
    """A few cases to act on (their protocol numbers)."""
    with transaction(runtime(app).sessions) as s:
        ctx = Ctx(muni, datetime.now(UTC))
        got = [
            register(
                s, ctx, confirm=True, channel="api", text=f"Buca numero {i} in via Roma", phone=None
            ).case
            for i in range(count)
        ]
        return [c.protocol for c in got]


def assert_whole(app: Flask) -> None:
    """The register after any request: numbers gap-free from 1 in each municipality and year,
    each counter at its last number, every case with its registration in the history, every
    outbox row and attachment belonging to a case that exists."""
    with runtime(app).sessions() as s:
        numbers = s.execute(select(Case.municipality, Case.year, Case.number)).all()
        by_register: dict[tuple[str, int], list[int]] = {}
        for muni, year, number in numbers:
            by_register.setdefault((muni, year), []).append(number)
        for register, got in by_register.items():
            assert sorted(got) == list(range(1, len(got) + 1)), register
        for counter in s.scalars(select(ProtocolCounter)):
            key = (counter.municipality, counter.year)
            assert counter.last_number == len(by_register.get(key, [])), key
        without_history = s.scalar(
            select(func.count())
            .select_from(Case)
            .where(~select(CaseEvent.id).where(CaseEvent.case_id == Case.id).exists())
        )
        assert without_history == 0
        for model in (OutboxMessage, Attachment):
            orphans = s.scalar(
                select(func.count())
                .select_from(model)
                .where(model.case_id.is_not(None))
                .where(~select(Case.id).where(Case.id == model.case_id).exists())
            )
            assert orphans == 0, model.__tablename__
        assert not [k for k, n in Counter(numbers).items() if n > 1]
