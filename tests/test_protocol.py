"""Protocol numbering: gap-free, concurrent, yearly restart in Rome time, parsing."""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cases.config import Municipality, load_config
from cases.db import make_engine, make_sessionmaker, transaction
from cases.errors import Invalid
from cases.models import Case
from cases.notify import Ctx
from cases.protocol import parse_protocol, protocol_year
from cases.registration import register
from tests.conftest import ROOT


def _register(
    s: Session, muni: Municipality, now: datetime, text: str = "buca in via Roma"
) -> Case:
    ctx = Ctx(muni=muni, now=now, base_url="https://x.example")
    return register(s, ctx, confirm=True, channel="sms", phone="+393331234567", text=text).case


def _numbers(s: Session, muni: str, year: int) -> list[int]:
    return list(
        s.scalars(
            select(Case.number)
            .where(Case.municipality == muni, Case.year == year)
            .order_by(Case.number)
        )
    )


def test_numbers_are_progressive_and_formatted(
    sessions: sessionmaker[Session], muni: Municipality
) -> None:
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with transaction(sessions) as s:
        cases = [_register(s, muni, now) for _ in range(3)]
    assert [c.number for c in cases] == [1, 2, 3]
    assert cases[0].protocol == "2026/0000001"


def test_failed_registration_consumes_no_number(
    sessions: sessionmaker[Session], muni: Municipality
) -> None:
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with transaction(sessions) as s:
        _register(s, muni, now)
    with pytest.raises(RuntimeError), transaction(sessions) as s:
        taken = _register(s, muni, now)
        assert taken.number == 2
        raise RuntimeError("the rest of the request failed after the number was taken")
    with pytest.raises(Invalid), transaction(sessions) as s:
        _register(s, muni, now, text="")  # refused before a number is taken
    with transaction(sessions) as s:
        again = _register(s, muni, now)
        assert again.number == 2  # the rolled-back number was given back
        assert _numbers(s, muni.code, 2026) == [1, 2]


def test_each_municipality_has_its_own_register(sessions: sessionmaker[Session], config) -> None:  # type: ignore[no-untyped-def]
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    a, b = config.municipality[0], config.municipality[1]
    with transaction(sessions) as s:
        assert _register(s, a, now).number == 1
        assert _register(s, b, now).number == 1
        assert _register(s, a, now).number == 2


def test_new_year_restarts_at_midnight_rome_time(
    sessions: sessionmaker[Session], muni: Municipality
) -> None:
    # 23:59:59 on 31 December in Rome is still 2026; one second later it is 2027 there,
    # while UTC still says 31 December 23:00.
    before = datetime(2026, 12, 31, 22, 59, 59, tzinfo=UTC)
    after = before + timedelta(seconds=1)
    assert after.year == 2026 and protocol_year(after, muni.tz) == 2027
    with transaction(sessions) as s:
        for _ in range(3):
            _register(s, muni, before - timedelta(hours=1))
        last_2026 = _register(s, muni, before)
        first_2027 = _register(s, muni, after)
        second_2027 = _register(s, muni, after + timedelta(minutes=5))
    assert last_2026.protocol == "2026/0000004"
    assert first_2027.protocol == "2027/0000001"
    assert second_2027.protocol == "2027/0000002"


def _worker(url: str, per_process: int, seed: int, q: mp.Queue) -> None:  # type: ignore[type-arg]
    muni = load_config(ROOT / "config.toml").municipality[0]
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    got: list[int] = []
    for i in range(per_process):
        now = datetime.now(UTC)
        try:
            with transaction(factory) as s:
                c = _register(s, muni, now, text=f"buca numero {seed}-{i}")
                if (seed + i) % 5 == 0:
                    raise RuntimeError("simulated failure after taking a number")
                got.append(c.number)
        except RuntimeError:
            pass
    engine.dispose()
    q.put(got)


@pytest.mark.postgres
def test_concurrent_registration_from_8_processes_is_gap_free(pg_url: str) -> None:
    from tests.conftest import _truncate

    url = pg_url  # migrated; under xdist, this worker's own database
    _truncate(url)
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    per = 40
    procs = [ctx.Process(target=_worker, args=(url, per, n, q)) for n in range(8)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    committed = sorted(n for r in results for n in r)
    failures = sum(1 for seed in range(8) for i in range(per) if (seed + i) % 5 == 0)
    assert len(committed) == 8 * per - failures
    assert committed == list(range(1, len(committed) + 1)), (
        "numbers must be 1..N, no gap, no repeat"
    )
    engine = make_engine(url)
    muni = load_config(ROOT / "config.toml").municipality[0]
    with make_sessionmaker(engine)() as s:
        stored = _numbers(s, muni.code, protocol_year(datetime.now(UTC), muni.tz))
    engine.dispose()
    assert stored == committed, "what is in the register is exactly what was committed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026/0000123", (2026, 123)),
        ("2026-0000123", (2026, 123)),
        (" 2025/7 ", (2025, 7)),
        ("123", (2026, 123)),
        ("0000123", (2026, 123)),
    ],
)
def test_parse_protocol(text: str, expected: tuple[int, int]) -> None:
    assert parse_protocol(text, 2026) == expected


@pytest.mark.parametrize("text", ["", "abc", "2026/", "2026/12345678", "0", "2026/0", "12/34/56"])
def test_parse_protocol_rejects_garbage(text: str) -> None:
    with pytest.raises(Invalid):
        parse_protocol(text, 2026)
