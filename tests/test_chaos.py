"""Chaos drills on the real stack: gunicorn as the Procfile runs it, a Celery worker and beat on
a Redis of the test's own, PostgreSQL behind a proxy the test controls (the shared server is
never stopped), the fake provider. A bounded load generator sends signed traffic; afterwards
the register and the fake provider are checked, and each drill prints what it did and a line
`lost=0 duplicated=0 gaps=0`."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from twilio.request_validator import RequestValidator

from cases.models import Attachment, Case
from ivr.simulator import CallLog, Switchboard
from tests.conftest import _truncate
from tests.fakes.tcpproxy import TcpProxy
from tests.test_sms_e2e import SID, TOKEN, Stack, running_stack_with, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
PROTOCOL = re.compile(r"\d{4}/\d{7}")


@pytest.fixture
def chaos(tmp_path: Path, pg_url: str) -> Iterator[tuple[Stack, TcpProxy]]:
    _truncate(pg_url)
    target = make_url(pg_url)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        url = target.set(port=proxy.port).render_as_string(hide_password=False)
        with running_stack_with(
            tmp_path,
            url,
            procfile=True,
            bin_dir=Path(sys.executable).parent,
            WORKER_STUCK_SECONDS="15",  # a worker that stops consuming is replaced sooner
        ) as st:
            yield st, proxy


class Load:
    """Signed inbound texts at a fixed rate, each from its own citizen; what each got back."""

    def __init__(self, st: Stack, count: int, rate: float, first: int = 0) -> None:
        self.st, self.count, self.rate, self.first = st, count, rate, first
        self.replies: dict[str, str] = {}
        self.errors: Counter[int] = Counter()
        self.sent = 0
        self._local = threading.local()
        self._lock = threading.Lock()

    @staticmethod
    def citizen(i: int) -> str:
        return f"+39347{i:07d}"

    def _one(self, i: int) -> None:
        session = getattr(self._local, "s", None)
        if session is None:
            session = self._local.s = requests.Session()
        form = {
            "MessageSid": f"SM{i:032x}",
            "AccountSid": SID,
            "From": self.citizen(i),
            "To": self.st.muni.sms.numbers[0],
            "Body": f"Buca numero {i} in via Roma",
            "NumMedia": "0",
            "ApiVersion": "2010-04-01",
        }
        url = self.st.base + "/sms/inbound"
        sig = RequestValidator(TOKEN).compute_signature(url, form)
        for _ in range(2):  # the provider retries once on a failed connection
            try:
                r = session.post(url, data=form, headers={"X-Twilio-Signature": sig}, timeout=15)
            except requests.ConnectionError:
                continue
            with self._lock:
                if r.status_code != 200:
                    self.errors[r.status_code] += 1
                else:
                    m = re.search(r"<Message>(.*)</Message>", r.text, re.S)
                    self.replies[form["From"]] = m.group(1) if m else ""
            return
        with self._lock:
            self.errors[0] += 1

    def run(self) -> None:
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            for i in range(self.count):
                delay = start + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self._one, self.first + i)
                self.sent += 1


def _tracebacks(log: str) -> str:
    """The web service's tracebacks, for a drill's failure message."""
    found = log.split("Traceback (most recent call last):")[1:]
    return "\n---\n".join(f[-2500:] for f in found[-3:]) or log[-3000:]


def _report(name: str, did: str, **figures: Any) -> None:
    line = " ".join(f"{k}={v}" for k, v in figures.items())
    sys.__stdout__.write(f"\n[drill] {name}: {did}\n[drill] {name}: {line}\n")
    sys.__stdout__.flush()


@pytest.mark.parametrize("kills", [False, True], ids=["drill_1", "drill_2_kill_9"])
def test_postgresql_away_for_20_seconds_in_a_stream_of_texts(
    chaos: tuple[Stack, TcpProxy], kills: bool
) -> None:
    """Drill 1; drill 2 is the same run with `kill -9` of the gunicorn worker that is draining
    the spool, then of the Celery worker, each while it works."""
    st, proxy = chaos
    name = "drill 2" if kills else "drill 1"
    count, rate, away_for = int(os.environ.get("CHAOS_TEXTS", "1000")), 50.0, 20.0
    load = Load(st, count, rate)
    loader = threading.Thread(target=load.run)
    loader.start()
    time.sleep(count / rate / 4)  # a quarter into the stream
    proxy.cut()
    cut_at = time.monotonic()
    health = requests.get(st.base + "/healthz", timeout=10).json()
    time.sleep(away_for - (time.monotonic() - cut_at))
    proxy.restore()
    back_at = time.monotonic()
    killed: list[str] = []
    if kills:
        time.sleep(6)  # the drainer is at work
        pid = _drainer_pid(st)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)  # gunicorn's master starts another worker
            killed.append(f"gunicorn worker {pid} (draining)")
        time.sleep(1)
        st.stop("worker", signal.SIGKILL)  # its pool with it, mid-sending
        killed.append("the Celery worker")
        time.sleep(2)
        st.start_procfile("worker", WORKER_CONCURRENCY="2")
    loader.join()
    spool_empty = wait_until(lambda: _depth(st) == 0 and time.monotonic(), 60, "the spool to drain")
    drained_in = spool_empty - back_at

    with st.sessions() as s:
        got = list(s.scalars(select(Case).order_by(Case.number)))
    numbers = [c.number for c in got]
    by_phone = {c.phone: c.protocol for c in got}
    # every citizen is told their number once: in the answer, or by a text after the spool
    spooled = [p for p, reply in load.replies.items() if not PROTOCOL.search(reply)]
    wait_until(
        lambda: all(st.fake.sent_to(p) for p in spooled if p in by_phone),
        90,
        "the numbers of the spooled texts",
    )
    time.sleep(2)  # time enough for a duplicate to show up
    told: Counter[tuple[str, str]] = Counter()
    for phone, reply in load.replies.items():
        for number in PROTOCOL.findall(reply):
            told[(phone, number)] += 1
    for msg in st.fake.messages:
        for number in PROTOCOL.findall(msg["body"]):
            told[(msg["to"], number)] += 1
    lost = count - len(got)
    duplicated = sum(n - 1 for n in told.values() if n > 1) + (len(got) - len(by_phone))
    wrong = [p for p, n in told if by_phone.get(p) != n]
    untold = [p for p in by_phone if not any(k[0] == p for k in told)]
    gaps = (numbers[-1] - len(numbers)) if numbers else 0
    _report(
        name,
        f"{count} texts at {rate:.0f}/s, PostgreSQL cut for {away_for:.0f} s a quarter in; "
        + (f"kill -9 of {' and '.join(killed)} after it came back; " if killed else "")
        + f"{len(spooled)} spooled and answered meanwhile (healthz: {health.get('status')}), "
        f"the spool empty {drained_in:.1f} s after the database came back, "
        f"errors {dict(load.errors) or 0}",
        lost=lost,
        duplicated=duplicated,
        gaps=gaps,
    )
    assert load.errors == Counter()
    if kills:
        assert len(killed) == 2, killed
    assert health["status"] == "degraded: spooling"
    assert spooled, "the cut fell outside the stream"
    assert (lost, duplicated, gaps) == (0, 0, 0)
    assert numbers == list(range(1, count + 1))
    assert wrong == [] and untold == []
    # The figure is printed above (16-25 s on this 2-core machine when the run has it to
    # itself); the bound is loose so that a loaded CI machine does not fail on time alone.
    assert drained_in < 60


def _depth(st: Stack) -> int:
    try:
        return int(requests.get(st.base + "/healthz", timeout=10).json()["spool"]["depth"])
    except (requests.RequestException, KeyError, ValueError):
        return -1


def _drainer_pid(st: Stack) -> int | None:
    """The process that holds the spool's drain lock (its flock, as /proc/locks shows it)."""
    lock = st.tmp / "instance" / "spool.sqlite3.drain.lock"
    try:
        inode = lock.stat().st_ino
    except FileNotFoundError:
        return None
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].endswith(f":{inode}"):
            return int(parts[4])
    return None


def test_twenty_calls_walk_the_menu_while_postgresql_is_away(
    chaos: tuple[Stack, TcpProxy],
) -> None:
    """Drill 4: every report spooled at its registration step, then registered, every caller
    texted their number, every recording attached."""
    st, proxy = chaos
    calls = 20

    def post(path: str, form: dict[str, str]) -> tuple[int, str]:
        url = st.base + path
        sig = RequestValidator(TOKEN).compute_signature(url, form)
        r = requests.post(url, data=form, headers={"X-Twilio-Signature": sig}, timeout=15)
        return r.status_code, r.text

    def caller(i: int) -> str:
        return f"+39348{i:07d}"

    def one(i: int) -> CallLog:
        board = Switchboard(
            post,
            from_=caller(i),
            to=st.muni.voice.numbers[0],
            inputs=["1", "1", f"Buca numero {i} in via Po", "1"],
        )
        return board.run()

    proxy.cut()
    cut_at = time.monotonic()
    with ThreadPoolExecutor(max_workers=5) as pool:
        logs = list(pool.map(one, range(calls)))
    walked_in = time.monotonic() - cut_at
    depth = _depth(st)
    proxy.restore()
    back_at = time.monotonic()
    spool_empty = wait_until(lambda: _depth(st) == 0 and time.monotonic(), 60, "the spool to drain")
    with st.sessions() as s:
        got = list(s.scalars(select(Case).order_by(Case.number)))
        recordings = s.scalar(select(func.count()).select_from(Attachment)) or 0
    by_phone = {c.phone: c.protocol for c in got}
    wait_until(
        lambda: all(st.fake.sent_to(caller(i)) for i in range(calls)), 90, "the callers' texts"
    )
    time.sleep(2)  # time enough for a duplicate to show up
    told: Counter[tuple[str, str]] = Counter()
    for msg in st.fake.messages:
        for number in PROTOCOL.findall(msg["body"]):
            told[(msg["to"], number)] += 1
    errors = Counter(status for log in logs for _, _, status in log.requests if status != 200)
    heard = sum("numero di protocollo le sarà comunicato" in log.text for log in logs)
    numbers = [c.number for c in got]
    lost = calls - len(got)
    duplicated = sum(n - 1 for n in told.values() if n > 1) + (len(got) - len(by_phone))
    gaps = (numbers[-1] - len(numbers)) if numbers else 0
    _report(
        "drill 4",
        f"{calls} calls (5 at a time) walked the menu to the registration step in "
        f"{walked_in:.1f} s with PostgreSQL cut; {heard} heard that the number follows by text; "
        f"{depth} items spooled (registration, end of call, recording); the spool empty "
        f"{spool_empty - back_at:.1f} s after the database came back; {recordings} recordings "
        f"attached; errors {dict(errors) or 0}",
        lost=lost,
        duplicated=duplicated,
        gaps=gaps,
    )
    failed = [(path, status) for log in logs for path, _, status in log.requests if status != 200]
    assert errors == Counter() and heard == calls, (failed, _tracebacks(st.log("web")))
    assert depth == 3 * calls
    assert (lost, duplicated, gaps) == (0, 0, 0)
    assert sorted(by_phone) == sorted(caller(i) for i in range(calls))
    assert all((p, n) in told for p, n in by_phone.items())
    assert {c.original_text for c in got} == {f"Buca numero {i} in via Po" for i in range(calls)}
    assert all(c.received_at is not None for c in got)
    assert recordings == calls


class Notes:
    """Public notes posted by the URP through the API at a fixed rate, one per case: each one
    a text the worker must send to that case's citizen exactly once."""

    def __init__(self, st: Stack, token: str, cases: list[tuple[str, str]], rate: float) -> None:
        self.st, self.token, self.cases, self.rate = st, token, cases, rate
        self.errors: Counter[int] = Counter()
        self._lock = threading.Lock()

    def _one(self, protocol: str) -> None:
        url = f"{self.st.base}/api/v1/cases/{protocol.replace('/', '-')}/note"
        body = {"text": f"Intervento programmato per la pratica {protocol}", "public": True}
        try:
            r = requests.post(
                url, json=body, timeout=15, headers={"Authorization": f"Bearer {self.token}"}
            )
            status = r.status_code
        except requests.RequestException:
            status = 0
        if status >= 300:
            with self._lock:
                self.errors[status] += 1

    def run(self) -> None:
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            for i, (_phone, protocol) in enumerate(self.cases):
                delay = start + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self._one, protocol)


def _cases_for_notes(st: Stack, count: int) -> list[tuple[str, str]]:
    """`count` citizens' cases, registered by text before the drill."""
    load = Load(st, count, 100.0)
    load.run()
    assert load.errors == Counter()
    with st.sessions() as s:
        return [(c.phone, c.protocol) for c in s.scalars(select(Case).order_by(Case.number))]


def _told_once(st: Stack, cases: list[tuple[str, str]], since: float, bound: float) -> Any:
    """Wait for every citizen's note; then (lost, duplicated, seconds from `since`)."""
    note = "Intervento programmato per la pratica"

    def notes_to(phone: str) -> int:
        return sum(note in m["body"] for m in st.fake.sent_to(phone))

    try:
        done = wait_until(
            lambda: all(notes_to(p) for p, _ in cases) and time.monotonic(), bound, "the notes"
        )
    except pytest.fail.Exception:
        done = time.monotonic()
    time.sleep(3)  # time enough for a duplicate to show up
    counts = [notes_to(p) for p, _ in cases]
    lost = sum(1 for n in counts if n == 0)
    duplicated = sum(n - 1 for n in counts if n > 1)
    return lost, duplicated, done - since


def test_redis_flushed_then_away_for_20_seconds(chaos: tuple[Stack, TcpProxy]) -> None:
    """Drill 3: texts keep coming and staff keep posting public notes while Redis (the broker,
    the rate limiter, the calls' state) is flushed, then stopped for 20 s: every case
    registered, every note's text sent once, within the sweeper's bound once Redis is back."""
    import redis

    st, _proxy = chaos
    count, rate, away_for = 300, 25.0, 20.0
    cases = _cases_for_notes(st, count)
    token = st.staff("urp", "urp")
    notes = Notes(st, token, cases, rate)
    texts = Load(st, count, rate, first=count)  # other citizens, texting meanwhile
    threads = [threading.Thread(target=notes.run), threading.Thread(target=texts.run)]
    for t in threads:
        t.start()
    time.sleep(3)
    redis.Redis(port=st.redis_port).flushall()
    time.sleep(2)
    st.stop("redis", signal.SIGKILL)
    time.sleep(away_for)
    st.start_redis()
    back_at = time.monotonic()
    for t in threads:
        t.join()
    # the stack's sweeper: every SWEEP_EVERY_SECONDS, a text left unsent for
    # SMS_REQUEUE_SECONDS queued again, a claimed one reconciled after SMS_CLAIM_TIMEOUT_SECONDS
    # and a Celery worker that stopped consuming when Redis went (it happens: celery#9054) is
    # replaced by `lineadiretta worker` after WORKER_STUCK_SECONDS
    stuck = float(st.env["WORKER_STUCK_SECONDS"])
    bound = float(st.env["SMS_CLAIM_TIMEOUT_SECONDS"]) + 2 + 1 + stuck + 30
    lost, duplicated, took = _told_once(st, cases, back_at, 120)
    replaced = st.log("worker").count("Celery worker started (pid") - 1
    with st.sessions() as s:
        got = list(s.scalars(select(Case.number).order_by(Case.number)))
    gaps = (got[-1] - len(got)) if got else 0
    lost_texts = 2 * count - len(got)
    _report(
        "drill 3",
        f"{count} public notes and {count} texts at {rate:.0f}/s each; Redis flushed 3 s in, "
        f"then stopped for {away_for:.0f} s; every note's text out {took:.1f} s after Redis "
        f"came back (bound {bound:.0f} s); the Celery worker replaced {replaced} time(s); "
        f"errors notes {dict(notes.errors) or 0} "
        f"texts {dict(texts.errors) or 0}",
        lost=lost + lost_texts,
        duplicated=duplicated,
        gaps=gaps,
    )
    assert notes.errors == Counter() and texts.errors == Counter()
    assert (lost, lost_texts, duplicated, gaps) == (0, 0, 0, 0)
    assert took < bound


def test_the_provider_failing_rate_limiting_and_timing_out(chaos: tuple[Stack, TcpProxy]) -> None:
    """Drill 5: while notes are posted, the provider answers 500, then 429, then holds its
    answers past the client's timeout (having taken the text): every text sent once."""
    st, _proxy = chaos
    count, rate = 200, 20.0
    cases = _cases_for_notes(st, count)
    notes = Notes(st, st.staff("urp", "urp"), cases, rate)
    runner = threading.Thread(target=notes.run)
    runner.start()
    time.sleep(1)
    st.fake.fail_next(40, "server_error")
    time.sleep(2)
    st.fake.fail_next(40, "rate_limited", retry_after=1)
    time.sleep(2)
    st.fake.configure(delay=6.0)  # past the sender's 5 s timeout: outcome unknown
    time.sleep(6)
    st.fake.configure(delay=0.0)
    runner.join()
    calm_at = time.monotonic()
    lost, duplicated, took = _told_once(st, cases, calm_at, 120)
    statuses = Counter(r["status"] for r in st.fake.requests)
    unknown = st.log("worker").count("outcome unknown")
    reconciled = st.log("worker").count("reconcil")
    _report(
        "drill 5",
        f"{count} public notes at {rate:.0f}/s; the provider answered 500 to 40 sends, 429 to 40, "
        f"then held every answer 6 s (the client gives up at 5 s) for 6 s; provider saw "
        f"{dict(statuses)}; {unknown} sends timed out (outcome unknown) and were reconciled "
        f"with the provider ({reconciled} log lines); every text out {took:.1f} s after the "
        "stream ended; "
        f"errors {dict(notes.errors) or 0}",
        lost=lost,
        duplicated=duplicated,
        gaps=0,
    )
    assert notes.errors == Counter()
    assert statuses[500] >= 1 and statuses[429] >= 1 and unknown >= 1
    assert (lost, duplicated) == (0, 0)
