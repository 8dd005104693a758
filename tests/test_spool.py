"""The host's durable spool: appended items survive a restart, drain in arrival order, each
exactly once, whoever dies half-way."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from infra.spool import MAX_ATTEMPTS, Drainer, Spool, SpoolItem
from tests.conftest import ROOT

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Away(Exception):
    """Stands for the register being unreachable."""


def away(exc: BaseException) -> bool:
    return isinstance(exc, Away)


def test_an_appended_item_is_there_after_a_restart_and_a_retry_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    assert spool.append("sms", "SM1", "monteverde", {"body": "Buca in via Roma ✓"}, T0)
    assert not spool.append("sms", "SM1", "monteverde", {"body": "something else"}, T0)
    assert spool.append("voice", "SM1", "monteverde", {"x": 1}, T0)  # keys are per kind
    again = Spool(tmp_path / "spool.sqlite3")  # a new process opening the same file
    items = again.pending()
    assert [(i.kind, i.key, i.payload) for i in items] == [
        ("sms", "SM1", {"body": "Buca in via Roma ✓"}),
        ("voice", "SM1", {"x": 1}),
    ]
    assert items[0].received_at == T0
    got = again.get("sms", "SM1")
    assert got is not None and got.payload == {"body": "Buca in via Roma ✓"}
    assert again.get("sms", "SM2") is None
    stats = again.stats(T0 + timedelta(seconds=42))
    assert (stats.depth, stats.oldest_age_seconds, stats.held) == (2, 42.0, 0)
    # durable: WAL with a full sync on commit
    with sqlite3.connect(tmp_path / "spool.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_empty_spool_has_no_file_and_no_depth(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "nowhere" / "spool.sqlite3")
    assert spool.stats(T0) == spool.stats(T0 + timedelta(hours=1))
    assert spool.stats(T0).depth == 0 and spool.stats(T0).oldest_age_seconds is None
    assert not (tmp_path / "nowhere" / "spool.sqlite3").exists()


def test_the_drainer_registers_in_arrival_order_and_stops_while_the_register_is_away(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    for n in range(5):
        spool.append("sms", f"SM{n}", "monteverde", {"n": n}, T0 + timedelta(seconds=n))
    registered: list[int] = []
    register_up = {"up": False}

    def handle(item: SpoolItem) -> None:
        if not register_up["up"] and item.payload["n"] == 2:
            raise Away("connection refused")
        registered.append(item.payload["n"])

    drainer = Drainer(spool, {"sms": handle}, away)
    assert drainer.drain_once() == 2
    assert registered == [0, 1]
    assert [i.payload["n"] for i in spool.pending()] == [2, 3, 4]
    assert spool.pending()[0].attempts == 0  # the register being away is not the item's fault
    register_up["up"] = True
    assert drainer.drain_once() == 3
    assert registered == [0, 1, 2, 3, 4] and spool.pending() == []


def test_an_item_that_keeps_failing_is_held_for_staff_not_lost(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    spool.append("sms", "bad", "monteverde", {"n": 0}, T0)
    spool.append("sms", "good", "monteverde", {"n": 1}, T0)
    seen: list[str] = []

    def handle(item: SpoolItem) -> None:
        if item.key == "bad":
            raise ValueError("cannot be registered")
        seen.append(item.key)

    drainer = Drainer(spool, {"sms": handle}, away)
    for _ in range(MAX_ATTEMPTS - 1):
        assert drainer.drain_once() == 0  # the failing item keeps its place: order holds
    assert seen == []
    assert drainer.drain_once() == 1  # held now: the next one goes through
    assert seen == ["good"]
    (held,) = spool.held()
    assert held.key == "bad" and held.attempts == MAX_ATTEMPTS
    assert spool.stats(T0).held == 1 and spool.stats(T0).depth == 0
    spool.release(held.id)
    assert spool.stats(T0).depth == 1


def test_one_drainer_at_a_time_on_a_host(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    spool.append("sms", "SM1", "monteverde", {}, T0)
    calls: list[str] = []
    drainer = Drainer(spool, {"sms": lambda item: calls.append(item.key)}, away)
    with spool.drain_lock() as mine:  # another process of the host is draining
        assert mine
        assert drainer.drain_once() == 0
    assert drainer.drain_once() == 1 and calls == ["SM1"]


def _append_many(path: str, worker: int) -> None:
    spool = Spool(path)
    for n in range(40):
        spool.append("sms", f"w{worker}-{n}", "monteverde", {"w": worker, "n": n}, T0)


def test_concurrent_processes_append_without_losing_anything(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.sqlite3")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    items = Spool(path).pending(limit=1000)
    assert len(items) == 160 and len({i.key for i in items}) == 160
    for w in range(4):  # each writer's items in the order it wrote them
        assert [i.payload["n"] for i in items if i.payload["w"] == w] == list(range(40))


def test_a_drainer_killed_after_the_register_committed_neither_loses_nor_duplicates(
    tmp_path: Path,
) -> None:
    """The register here is an SQLite table with a unique key, as the real register refuses a
    second MessageSid; the drainer process dies by SIGKILL right after the commit."""
    spool_path, register = tmp_path / "spool.sqlite3", tmp_path / "register.sqlite3"
    spool = Spool(spool_path)
    for n in range(3):
        spool.append("sms", f"SM{n}", "monteverde", {"n": n}, T0)
    with sqlite3.connect(register) as conn:
        conn.execute("CREATE TABLE cases (sid TEXT PRIMARY KEY, n INTEGER)")
    script = textwrap.dedent(
        f"""
        import os, signal, sqlite3
        from infra.spool import Drainer, Spool

        def handle(item):
            with sqlite3.connect({str(register)!r}) as conn:
                conn.execute("INSERT OR IGNORE INTO cases VALUES (?, ?)",
                             (item.key, item.payload["n"]))
            if item.key == "SM1":
                os.kill(os.getpid(), signal.SIGKILL)

        Drainer(Spool({str(spool_path)!r}), {{"sms": handle}}, lambda e: False).drain_once()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}
    )
    assert proc.returncode == -signal.SIGKILL
    # SM0 left the spool; SM1 is registered but still spooled; SM2 was not reached
    assert [i.key for i in spool.pending()] == ["SM1", "SM2"]

    def handle(item: SpoolItem) -> None:
        with sqlite3.connect(register) as conn:
            conn.execute("INSERT OR IGNORE INTO cases VALUES (?, ?)", (item.key, item.payload["n"]))

    assert Drainer(spool, {"sms": handle}, away).drain_once() == 2
    with sqlite3.connect(register) as conn:
        assert conn.execute("SELECT sid FROM cases ORDER BY n").fetchall() == [
            ("SM0",),
            ("SM1",),
            ("SM2",),
        ]
    assert spool.pending() == []


def test_the_drainer_thread_drains_what_is_spooled_and_stops(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    got: list[str] = []
    drainer = Drainer(spool, {"sms": lambda item: got.append(item.key)}, away, interval=0.05)
    try:
        drainer.start()
        spool.append("sms", "SM1", "monteverde", {}, T0)
        drainer.wake()
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while spool.stats(T0).depth and datetime.now(UTC) < deadline:
            time.sleep(0.02)
        assert got == ["SM1"] and spool.stats(T0).depth == 0
    finally:
        drainer.stop()
    assert drainer._thread is not None and not drainer._thread.is_alive()


def test_the_host_remembers_what_it_needs_while_the_register_is_away(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    assert spool.recall("open311-key", "abc") is None
    spool.remember("open311-key", "abc", "monteverde")
    spool.remember("open311-key", "abc", "monteverde")
    assert Spool(tmp_path / "spool.sqlite3").recall("open311-key", "abc") == "monteverde"
    spool.remember("open311-key", "abc", "valfiorita")
    assert spool.recall("open311-key", "abc") == "valfiorita"
    assert spool.stats(T0).depth == 0  # notes are not items


_RACER = """
import sys, time
from datetime import UTC, datetime
from infra.spool import Spool

folder, me, start, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
for r in range(rounds):
    while time.time() < start + r * 0.1:  # every process sets up round r's new file at once
        pass
    try:
        Spool(f"{folder}/spool{r}.sqlite3").append("call", f"CA{me}", "m", {}, datetime.now(UTC))
    except Exception as exc:
        print(f"round {r}: {exc!r}", flush=True)
"""


def test_the_host_s_processes_all_appending_first_to_a_new_spool_keep_every_item(
    tmp_path: Path,
) -> None:
    """After a cut the first contact reaches every web process of the host at once: each sets
    the new file up (WAL mode, tables) and appends. None is refused (SQLite refuses a racing
    journal-mode switch at once, without waiting: the set-up takes turns under a file lock)."""
    procs, rounds = 8, 20
    start = time.time() + 2.0  # time enough for every process to start
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path), str(i), str(start), str(rounds)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(procs)
    ]
    refused = [line for p in racers for line in p.communicate(timeout=60)[0].splitlines()]
    assert refused == []
    for r in range(rounds):
        kept = Spool(tmp_path / f"spool{r}.sqlite3").pending()
        assert sorted(i.key for i in kept) == sorted(f"CA{i}" for i in range(procs)), r
