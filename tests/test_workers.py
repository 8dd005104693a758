"""Periodic work: overdue cases flagged once, supervisors told, one runner at a time; a real
Celery worker on the real Redis runs the task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cases.config import Municipality
from cases.db import make_engine, make_sessionmaker, transaction
from cases.models import Case, CaseEvent, StaffNotification
from cases.notify import Ctx
from cases.registration import register
from cases.services import create_user, flag_overdue, take_lease
from tests.conftest import ROOT, need

T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)


def _setup(sessions: sessionmaker[Session], muni: Municipality) -> tuple[int, int]:
    with transaction(sessions) as s:
        boss, _ = create_user(s, Ctx(muni, T0), "boss", "supervisor")
        old = register(
            s, Ctx(muni, T0), confirm=True, channel="sms", phone="+393331234567", text="x"
        ).case
        register(
            s,
            Ctx(muni, T0 + timedelta(days=29)),
            confirm=True,
            channel="sms",
            phone="+393331234567",
            text="y",
        )
        return boss.id, old.id


def test_overdue_cases_are_flagged_once_and_supervisors_told(
    sessions: sessionmaker[Session], muni: Municipality
) -> None:
    boss, old = _setup(sessions, muni)
    later = Ctx(muni, T0 + timedelta(days=muni.due_days, minutes=1))
    with transaction(sessions) as s:
        flagged = flag_overdue(s, later)
        assert [c.id for c in flagged] == [old]
    with transaction(sessions) as s:
        assert flag_overdue(s, later) == []  # once only
        notes = s.scalars(select(StaffNotification).where(StaffNotification.user_id == boss)).all()
        assert [n.kind for n in notes] == ["overdue"]
        case = s.get(Case, old)
        assert case is not None and case.overdue_flagged_at is not None
        assert case.events[-1].action == "overdue"


def test_lease_lets_one_runner_at_a_time(sessions: sessionmaker[Session]) -> None:
    ttl = timedelta(minutes=5)
    with transaction(sessions) as s:
        assert take_lease(s, "job", "a", T0, ttl)
    with transaction(sessions) as s:
        assert not take_lease(s, "job", "b", T0 + timedelta(minutes=1), ttl)
    with transaction(sessions) as s:
        assert take_lease(s, "job", "b", T0 + timedelta(minutes=6), ttl)  # a's lease expired


@pytest.mark.redis
def test_real_celery_worker_on_redis_runs_the_overdue_task(
    tmp_path: Path, muni: Municipality
) -> None:
    redis_url = need("TEST_REDIS_URL", "Redis")
    import redis as redis_lib

    redis_lib.Redis.from_url(redis_url).flushdb()
    db_path = tmp_path / "worker.sqlite"
    url = f"sqlite:///{db_path}"
    from lineadiretta.migrate import upgrade

    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with transaction(sessions) as s:
        create_user(s, Ctx(muni, T0), "boss", "supervisor")
        register(
            s, Ctx(muni, T0), confirm=True, channel="sms", phone="+393331234567", text="vecchio"
        )
    env = dict(
        os.environ,
        DATABASE_URL=url,
        REDIS_URL=redis_url,
        SECRET_KEY="t",
        LINEADIRETTA_CONFIG=str(ROOT / "config.toml"),
        INSTANCE_PATH=str(tmp_path / "inst"),
        PUBLIC_BASE_URL="https://comune.example.it",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "lineadiretta.cli", "worker", "--concurrency", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        from lineadiretta.app import create_app

        app = create_app(
            {
                "DATABASE_URL": url,
                "REDIS_URL": redis_url,
                "SECRET_KEY": "t",
                "LINEADIRETTA_CONFIG": str(ROOT / "config.toml"),
                "PUBLIC_BASE_URL": "https://comune.example.it",
            }
        )
        app.extensions["celery"].send_task("workers.tasks.flag_overdue")
        deadline = time.monotonic() + 60
        flagged = False
        while time.monotonic() < deadline and not flagged:
            with sessions() as s:
                flagged = (
                    s.scalar(select(CaseEvent).where(CaseEvent.action == "overdue")) is not None
                )
            time.sleep(0.3)
        assert flagged, "the worker did not run the task from Redis"
    finally:
        worker.terminate()
        out, _ = worker.communicate(timeout=30)
        engine.dispose()
    assert b"flag_overdue" in out


def test_the_worker_is_started_again_when_it_exits_or_stops_consuming(tmp_path: Path) -> None:
    """`lineadiretta worker` watches its Celery worker (workers.supervise): a child that
    exits is started again; one that receives no task while tasks wait is killed and started
    again; a quiet one is left alone; SIGTERM stops both. The child stands in for Celery's
    worker: it records each start, then exits at once (the first time) or never consumes."""
    import threading

    from workers.supervise import Supervisor

    starts = tmp_path / "starts"
    child = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(starts)!r})\n"
        "n = len(p.read_text().splitlines()) if p.exists() else 0\n"
        "p.open('a').write('start\\n')\n"
        "sys.exit(3) if n == 0 else time.sleep(600)\n"
    )
    waiting = {"n": 0}
    sup = Supervisor(
        [sys.executable, "-c", child],
        redis_url=None,
        stuck_after=1.5,
        check_every=0.2,
        waiting=lambda: waiting["n"],
    )

    def count() -> int:
        return len(starts.read_text().splitlines()) if starts.exists() else 0

    seen: list[int] = []

    def drive() -> None:
        deadline = time.monotonic() + 30
        while count() < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        seen.append(count())  # the first child exited: started again
        time.sleep(2.5)
        seen.append(count())  # quiet, nothing waiting: not stuck, left alone
        waiting["n"] = 5  # tasks wait and the child receives none: killed, started again
        while count() < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        seen.append(count())
        os.kill(os.getpid(), signal.SIGTERM)  # as a platform stops the process

    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    driver = threading.Thread(target=drive)
    driver.start()
    try:
        code = sup.run()  # in the main thread: it sets the signal handlers
    finally:
        driver.join()
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert seen == [2, 2, 3] and code == 0
    assert sup.child is not None and sup.child.poll() is not None
    assert not sup.heartbeat.exists()
