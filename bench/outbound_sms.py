"""Outbound SMS throughput: the outbox Sender through the official client to the fake provider.

    .venv/bin/python bench/outbound_sms.py [--quick] [--n 5000] [--layouts 1x8,2x4,2x8]
                                            [--rate-n 300] [--history 0]

In one run:

(a) rate limit off (``rate_per_second = 0`` in a copy of config.toml). For each layout
    PxT (P processes, T threads each, one Sender per thread with its own TwilioProvider):
      * baseline: the same number of raw ``Client.messages.create`` calls to the fake, no
        database at all, same layout;
      * sender: N pending outbox rows on PostgreSQL, sent with ``Sender.send_ids`` called by
        every thread on disjoint chunks of ids (pulled from a shared queue).
    Prints messages/s for both, the ratio, the CPU used by each side during the run, and
    checks every row was sent exactly once (status sent, one attempt, unique provider id;
    the fake accepted each body exactly once). Target: >= 1,000 messages/s.
    Then one serial pass (one thread) times each step of a send (claim, opt-out check,
    limiter, provider call, finish) to show where a message's time goes.
(b) rate limit on: ``rate_per_second`` = 50 with the RedisLimiter shared by 4 senders (one
    process, 4 threads); ~300 one-segment texts; configured vs achieved rate from the fake's
    acceptance times (target: not above the configured rate by more than 5%). The bench's
    copy of the configuration gives Monteverde a sender number of its own for the run, so
    its limiter key (``ld:rate:<number>``) is shared with no test or other run; deleted after.

``--history N`` first fills the outbox with N already-sent rows, as a deployment accumulates
them, to show what the sender's queries cost on a table that is not new.

The fake provider runs in its own process (FakeProviderProcess, callbacks off); the database
is a throw-away one (ld_bench_out_<pid>), dropped at the end with every child process.
Never asserts timings; exits 0 unless the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import random
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    ROOT,
    delta,
    describe_tree,
    libpq_url,
    machine_busy,
    pg_backends_cpu,
    pg_setting,
    proc_cpu,
    scratch_database,
    sigterm_as_interrupt,
    table,
    verdict,
)

SID, TOKEN = "AC" + "5" * 32, "bench-outbound-token"
MUNI = "monteverde"
TARGET_MPS = 1000.0
RATE = 50.0
RATE_TOLERANCE = 0.05
CHUNK = 20  # ids per send_ids call
WARMUP_PER_THREAD = 5
CLAIM = "claim (UPDATE, SELECT, COMMIT)"


def bench_config(rate: float, sender_number: str | None = None) -> Any:
    """config.toml with another send rate (and optionally sender number) for Monteverde."""
    from cases.config import load_config

    config = load_config(ROOT / "config.toml")
    munis = []
    for m in config.municipality:
        if m.code == MUNI:
            sms: dict[str, Any] = {"rate_per_second": rate}
            if sender_number:
                sms["numbers"] = [sender_number]
            m = m.model_copy(update={"sms": m.sms.model_copy(update=sms)})
        munis.append(m)
    return config.model_copy(update={"municipality": munis})


def body_text(tag: str, i: int) -> str:
    """A realistic one-segment (GSM-7, < 160 characters) citizen text, unique per (tag, i)."""
    return (
        f"Comune di Monteverde: la segnalazione 2026/{i % 10**7:07d} è stata presa in carico "
        f"dall'Ufficio Tecnico. Rif. {tag}-{i}"
    )


def insert_rows(url: str, tag: str, n: int) -> list[int]:
    """n pending outbox rows due now, each to its own citizen number; returns their ids."""
    from sqlalchemy import create_engine, insert

    from cases.models import OutboxMessage

    now = datetime.now(UTC)
    rng = random.Random(f"{tag}-{n}")
    rows = [
        {
            "municipality": MUNI,
            "phone": f"+39333{rng.randrange(10**7):07d}",
            "template": "public_note",
            "language": "it",
            "body": body_text(tag, i),
            "status": "pending",
            "created_at": now - timedelta(minutes=1),
            "not_before": now - timedelta(minutes=1),
            "attempts": 0,
        }
        for i in range(n)
    ]
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(insert(OutboxMessage).returning(OutboxMessage.id), rows)
            return [int(r[0]) for r in result]
    finally:
        engine.dispose()


def add_history(url: str, n: int) -> None:
    """n already-sent outbox rows, as a deployment accumulates them (the sender never needs
    them, but every query that cannot use an index reads them)."""
    import psycopg

    with psycopg.connect(libpq_url(url.rsplit("/", 1)[1]), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO outbox (municipality, phone, template, language, body, status,"
            " created_at, not_before, attempts, sent_at, provider_sid, delivery_status)"
            " SELECT %s, '+39333' || lpad((g %% 10000000)::text, 7, '0'), 'public_note', 'it',"
            " 'Comune di Monteverde: storico ' || g, 'sent', now() - interval '30 days',"
            " now() - interval '30 days', 1, now() - interval '30 days', 'SM' || md5(g::text),"
            " 'delivered' FROM generate_series(1, %s) g",
            (MUNI, n),
        )
        conn.execute("ANALYZE outbox")


# ------------------------------------------------------------------------------ child process


def _child(
    kind: str,
    url: str,
    base_url: str,
    threads: int,
    warm: list[list[int]] | None,
    rate: float,
    sender_number: str | None,
    redis_url: str | None,
    tasks: Any,
    ready: Any,
    start: Any,
    results: Any,
    release: Any,
) -> None:
    """One process of a layout: `threads` workers pulling chunks from `tasks` after `start`."""
    os.environ.pop("TWILIO_EDGE", None)
    os.environ.pop("TWILIO_REGION", None)
    workers: list[Any] = []
    engine = None
    if kind == "raw":
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        for _ in range(threads):
            client = Client(SID, TOKEN, http_client=TwilioHttpClient(pool_connections=True))
            client.api.base_url = base_url
            workers.append(client)
        for t, client in enumerate(workers):
            for i in range(WARMUP_PER_THREAD):
                client.messages.create(
                    to="+393330000000", from_="+393475550123", body=f"warm-up {os.getpid()} {t} {i}"
                )
    else:
        from cases.clock import utcnow
        from cases.db import make_engine, make_sessionmaker
        from infra.provider import TwilioProvider
        from infra.ratelimit import LocalLimiter, RedisLimiter
        from sms.outbound import Sender

        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        config = bench_config(rate, sender_number)
        limiter: Any
        if redis_url:
            import redis

            limiter = RedisLimiter(redis.Redis.from_url(redis_url))
        else:
            limiter = LocalLimiter()
        for _ in range(threads):
            workers.append(
                Sender(
                    sessions=sessions,
                    config=config,
                    provider=TwilioProvider(SID, TOKEN, base_url),
                    limiter=limiter,
                    callback_base=None,
                    clock=utcnow,
                )
            )
        for sender, ids in zip(workers, warm or [], strict=False):
            sender.send_ids(ids)

    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    ends: list[float] = []

    def run(worker: Any) -> None:
        mine: Counter[str] = Counter()
        while True:
            chunk = tasks.get()
            if chunk is None:
                break
            if kind == "raw":
                for to, body in chunk:
                    worker.messages.create(to=to, from_="+393475550123", body=body)
                    mine["sent"] += 1
            else:
                mine.update(worker.send_ids(chunk))
        with lock:
            outcomes.update(mine)
            ends.append(time.monotonic())

    pool = [threading.Thread(target=run, args=(w,)) for w in workers]
    cpu0 = time.process_time()
    ready.put(os.getpid())
    start.wait()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    results.put(
        {
            "pid": os.getpid(),
            "end": max(ends),
            "cpu": time.process_time() - cpu0,
            "outcomes": dict(outcomes),
        }
    )
    release.wait(60)  # the parent reads the database backends' CPU while they still exist
    if engine is not None:
        engine.dispose()


def _gather(q: Any, count: int, children: list[Any], timeout: float) -> list[Any]:
    """`count` items from `q`; fails at once if a child died instead of waiting out `timeout`."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        try:
            got.append(q.get(timeout=0.2))
        except queue.Empty:
            dead = [c for c in children if c.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(
                    f"a sending process failed (exit codes {[c.exitcode for c in children]})"
                ) from None
    return got


def run_layout(
    kind: str,
    processes: int,
    threads: int,
    work: list[Any],
    *,
    url: str = "",
    fake: Any,
    warm: list[int] | None = None,
    rate: float = 0.0,
    sender_number: str | None = None,
    redis_url: str | None = None,
) -> dict[str, Any]:
    """Run `work` (chunks) on processes x threads; returns the elapsed time, CPU, outcomes."""
    ctx = mp.get_context("spawn")
    tasks = ctx.Queue()
    ready = ctx.Queue()
    results = ctx.Queue()
    start = ctx.Event()
    release = ctx.Event()
    dbname = url.rsplit("/", 1)[1] if url else ""
    warm_split: list[list[list[int]]] = [[] for _ in range(processes)]
    if warm:
        per = max(1, len(warm) // (processes * threads))
        pieces = [warm[i : i + per] for i in range(0, len(warm), per)]
        for i, piece in enumerate(pieces):
            warm_split[i % processes].append(piece)
    children = [
        ctx.Process(
            target=_child,
            args=(
                kind,
                url,
                fake.base_url,
                threads,
                warm_split[p],
                rate,
                sender_number,
                redis_url,
                tasks,
                ready,
                start,
                results,
                release,
            ),
            daemon=True,
        )
        for p in range(processes)
    ]
    try:
        for c in children:
            c.start()
        _gather(ready, len(children), children, 120)
        for chunk in work:
            tasks.put(chunk)
        for _ in range(processes * threads):
            tasks.put(None)
        time.sleep(0.3)  # let the queue's feeder thread hand the chunks over
        pg0 = pg_backends_cpu(dbname) if dbname else {}
        fake_cpu0, busy0 = proc_cpu(fake.pid), machine_busy()
        t0 = time.monotonic()
        start.set()
        out = _gather(results, len(children), children, 600)
        busy = machine_busy() - busy0
        fake_cpu = proc_cpu(fake.pid) - fake_cpu0
        pg1 = pg_backends_cpu(dbname) if dbname else {}
        pg_cpu = delta(pg1, pg0)
        release.set()
        for c in children:
            c.join(30)
    finally:
        for c in children:
            if c.is_alive():
                c.terminate()
                c.join(5)
    elapsed = max(r["end"] for r in out) - t0
    outcomes: Counter[str] = Counter()
    for r in out:
        outcomes.update(r["outcomes"])
    return {
        "elapsed": elapsed,
        "t0": t0,
        "outcomes": dict(outcomes),
        "cpu_senders": sum(r["cpu"] for r in out),
        "cpu_fake": fake_cpu,
        "cpu_pg": pg_cpu,
        "cpu_machine": busy,
    }


# ---------------------------------------------------------------------------- verification


def verify_sent(url: str, ids: list[int], fake_messages: list[dict[str, Any]]) -> list[str]:
    """Problems found (none: each row sent exactly once and recorded with the fake's id)."""
    from sqlalchemy import create_engine, select

    from cases.models import OutboxMessage

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    OutboxMessage.id,
                    OutboxMessage.status,
                    OutboxMessage.attempts,
                    OutboxMessage.provider_sid,
                    OutboxMessage.body,
                    OutboxMessage.claim_token,
                ).where(OutboxMessage.id.in_(ids))
            ).all()
    finally:
        engine.dispose()
    problems = []
    by_body = Counter(m["body"] for m in fake_messages)
    sid_of = {m["sid"]: m["body"] for m in fake_messages}
    if len(rows) != len(ids):
        problems.append(f"{len(ids) - len(rows)} rows missing")
    statuses = Counter(r.status for r in rows)
    if statuses != {"sent": len(ids)}:
        problems.append(f"statuses {dict(statuses)}")
    if any(r.attempts != 1 for r in rows):
        problems.append(f"{sum(1 for r in rows if r.attempts != 1)} rows with attempts != 1")
    if any(r.claim_token is not None for r in rows):
        problems.append("claim tokens left behind")
    if len({r.provider_sid for r in rows}) != len(rows):
        problems.append("provider ids not unique")
    twice = sum(1 for r in rows if by_body[r.body] != 1)
    if twice:
        problems.append(f"{twice} bodies not accepted exactly once by the fake")
    wrong = sum(1 for r in rows if sid_of.get(r.provider_sid or "") != r.body)
    if wrong:
        problems.append(f"{wrong} rows whose provider id is not the fake's id for that body")
    return problems


# ---------------------------------------------------------------------------- serial anatomy


def anatomy(url: str, base_url: str, n: int) -> tuple[list[tuple[str, float, float]], float]:
    """Send n rows with one Sender in this thread, timing each step (wall and CPU ms/message)."""
    from cases.clock import utcnow
    from cases.db import make_engine, make_sessionmaker
    from infra.provider import TwilioProvider
    from infra.ratelimit import LocalLimiter
    from sms.outbound import Sender

    acc: dict[str, list[float]] = {}
    calls: Counter[str] = Counter()

    def add(name: str, wall: float, cpu: float) -> None:
        a = acc.setdefault(name, [0.0, 0.0])
        a[0] += wall
        a[1] += cpu

    class Timed:
        def __init__(self, name: str, target: Any) -> None:
            self.name, self.target = name, target

        def __getattr__(self, attr: str) -> Any:
            fn = getattr(self.target, attr)
            if not callable(fn):
                return fn

            def wrapped(*a: Any, **kw: Any) -> Any:
                w, c = time.perf_counter(), time.thread_time()
                try:
                    return fn(*a, **kw)
                finally:
                    add(self.name, time.perf_counter() - w, time.thread_time() - c)

            return wrapped

    class TimedSender(Sender):
        def claim(self, ids: Any) -> Any:
            calls["claim"] += 1
            w, c = time.perf_counter(), time.thread_time()
            try:
                return super().claim(ids)
            finally:
                add(CLAIM, time.perf_counter() - w, time.thread_time() - c)

        def _finish(self, row_id: int, token: str, **values: object) -> bool:
            w, c = time.perf_counter(), time.thread_time()
            try:
                return super()._finish(row_id, token, **values)
            finally:
                add("finish (UPDATE + COMMIT)", time.perf_counter() - w, time.thread_time() - c)

        def _record_sent(self, token: str, sent: Any) -> None:
            w, c = time.perf_counter(), time.thread_time()
            try:
                super()._record_sent(token, sent)
            finally:
                add("finish (UPDATE + COMMIT)", time.perf_counter() - w, time.thread_time() - c)

        def _send_one(self, row: Any, token: str, *args: Any) -> str:
            w, c = time.perf_counter(), time.thread_time()
            try:
                return super()._send_one(row, token, *args)
            finally:
                add("_send_one total", time.perf_counter() - w, time.thread_time() - c)

    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    sender = TimedSender(
        sessions=sessions,
        config=bench_config(0.0),
        provider=Timed(
            "provider call (twilio client + HTTP)", TwilioProvider(SID, TOKEN, base_url)
        ),
        limiter=Timed("limiter", LocalLimiter()),
        callback_base=None,
        clock=utcnow,
    )
    ids = insert_rows(url, "anatomy", n + 40)
    sender.send_ids(ids[:40])  # warm-up
    acc.clear()
    calls.clear()
    w0, c0 = time.perf_counter(), time.thread_time()
    for i in range(40, len(ids), CHUNK):
        sender.send_ids(ids[i : i + CHUNK])
    total_wall, total_cpu = time.perf_counter() - w0, time.thread_time() - c0
    engine.dispose()
    one = acc.pop("_send_one total")
    parts = [(k, v[0], v[1]) for k, v in acc.items()]
    inner = sum(v[0] for k, v in acc.items() if k != CLAIM)
    inner_cpu = sum(v[1] for k, v in acc.items() if k != CLAIM)
    parts.append(
        ("opt-out check (session + SELECT) and the rest", one[0] - inner, one[1] - inner_cpu)
    )
    parts.append(("total", total_wall, total_cpu))
    out = [(k, w / n * 1000, c / n * 1000) for k, w, c in parts]
    return out, calls["claim"] / n


# ------------------------------------------------------------------------------------- main


def rate_phase(url: str, fake: Any, n: int, redis_url: str) -> dict[str, Any] | None:
    """n texts at RATE/s through the RedisLimiter shared by 4 senders; None without Redis."""
    import redis

    r = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        r.ping()
    except redis.RedisError as exc:
        print(f"-- rate limit: SKIPPED, no Redis at {redis_url} ({exc.__class__.__name__})")
        return None
    # a sender number of its own: no other run or test shares this limiter key
    number = f"+39347{os.getpid() % 10**7:07d}"
    key = f"ld:rate:{number}"
    r.delete(key)
    fake.reset()
    fake.configure(callbacks=False)
    ids = insert_rows(url, "rate", n)
    id_chunks = [ids[i : i + CHUNK] for i in range(0, n, CHUNK)]
    try:
        run = run_layout(
            "sender", 1, 4, id_chunks, url=url, fake=fake, rate=RATE, sender_number=number,
            redis_url=redis_url,
        )  # fmt: skip
    finally:
        r.delete(key)
    msgs = fake.messages
    times = sorted(m["accepted_at"] for m in msgs if m["from"] == number)
    achieved = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
    peak = max(sum(1 for x in times if s <= x < s + 1.0) for s in times) if times else 0
    print(f"-- rate {RATE:g}/s: achieved {achieved:.2f}/s, {run['outcomes']}", flush=True)
    return {
        "achieved": achieved,
        "texts": len(times),
        "peak": peak,
        "problems": verify_sent(url, ids, msgs),
    }


def parse_layouts(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        p, _, t = part.strip().partition("x")
        out.append((int(p), int(t)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="texts per layout (5000, quick 1500)")
    parser.add_argument("--layouts", default=None, help="processes x threads, e.g. 1x8,2x4")
    parser.add_argument("--rate-n", type=int, default=None, help="texts at 50/s (300, quick 150)")
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="sent rows already in the outbox (a deployment's history; default 0)",
    )
    parser.add_argument(
        "--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    n = args.n or (1500 if args.quick else 5000)
    rate_n = args.rate_n or (150 if args.quick else 300)
    layouts = parse_layouts(args.layouts or ("1x8,2x4" if args.quick else "1x8,2x4,2x8"))
    sigterm_as_interrupt()
    for var in ("TWILIO_EDGE", "TWILIO_REGION"):
        os.environ.pop(var, None)

    from tests.fakes.provider import FakeProviderProcess

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    results: list[dict[str, Any]] = []
    with FakeProviderProcess(SID, TOKEN) as fake, scratch_database("ld_bench_out") as url:
        fake.pid = fake._proc.pid  # type: ignore[attr-defined,union-attr]
        sync_commit = pg_setting(url, "synchronous_commit")
        print(
            f"fake provider pid {fake.pid} on {fake.base_url}; database "
            f"{url.rsplit('/', 1)[1]} (synchronous_commit={sync_commit})"
        )

        if args.history:
            add_history(url, args.history)
            print(f"outbox holds {args.history:,} already-sent rows (history)")

        # ------------------------------------------------------------ (a) rate limit off
        for p, t in layouts:
            label = f"{p}x{t}"
            fake.reset()
            fake.configure(callbacks=False)
            rng = random.Random(label)
            raw_work = [
                (f"+39333{rng.randrange(10**7):07d}", body_text(f"raw{label}", i)) for i in range(n)
            ]
            chunks = [raw_work[i : i + CHUNK] for i in range(0, n, CHUNK)]
            raw = run_layout("raw", p, t, chunks, fake=fake)
            raw_mps = n / raw["elapsed"]
            print(f"-- {label}: raw client {raw_mps:,.0f} msg/s", flush=True)

            fake.reset()
            fake.configure(callbacks=False)
            warm = insert_rows(url, f"warm{label}", WARMUP_PER_THREAD * p * t)
            ids = insert_rows(url, f"send{label}", n)
            id_chunks = [ids[i : i + CHUNK] for i in range(0, n, CHUNK)]
            snd = run_layout("sender", p, t, id_chunks, url=url, fake=fake, warm=warm)
            snd_mps = snd["outcomes"].get("sent", 0) / snd["elapsed"]
            problems = verify_sent(url, ids, fake.messages)
            print(
                f"-- {label}: Sender     {snd_mps:,.0f} msg/s {snd['outcomes']}"
                + (f" PROBLEMS: {problems}" if problems else " (each row sent once)"),
                flush=True,
            )
            results.append(
                {
                    "layout": label,
                    "raw": raw,
                    "raw_mps": raw_mps,
                    "snd": snd,
                    "snd_mps": snd_mps,
                    "problems": problems,
                }
            )

        print("-- serial anatomy of a send (1 thread)", flush=True)
        fake.reset()
        fake.configure(callbacks=False)
        parts, claims_per_msg = anatomy(url, fake.base_url, 300 if args.quick else 600)

        # ------------------------------------------------------------- (b) rate limit on
        rate = rate_phase(url, fake, rate_n, args.redis)

    # ------------------------------------------------------------------------ report
    print()
    print(
        f"fake provider in its own process, callbacks off; PostgreSQL synchronous_commit="
        f"{sync_commit}; {os.cpu_count()} CPUs; chunks of {CHUNK} ids per send_ids call; "
        f"{n:,} texts per layout; load average before {load_before:.2f}; product "
        f"{describe_tree()}"
    )
    ms = lambda seconds: f"{seconds / n * 1000:.2f}"  # noqa: E731
    print(
        table(
            ["layout PxT", "raw client msg/s", "Sender msg/s", "Sender/raw", "each row sent once"],
            [
                [
                    res["layout"],
                    f"{res['raw_mps']:,.0f}",
                    f"{res['snd_mps']:,.0f}",
                    f"{res['snd_mps'] / res['raw_mps']:.2f}",
                    "yes" if not res["problems"] else "NO: " + "; ".join(res["problems"]),
                ]
                for res in results
            ],
        )
    )
    print()
    print(f"CPU per message (ms) while sending, machine-wide ({os.cpu_count()} CPUs):")
    cpu_rows = []
    for res in results:
        for what, r in (("raw client", res["raw"]), ("Sender", res["snd"])):
            other = r["cpu_machine"] - r["cpu_senders"] - r["cpu_fake"] - r["cpu_pg"]
            cpu_rows.append(
                [
                    f"{res['layout']} {what}",
                    ms(r["cpu_senders"]),
                    ms(r["cpu_pg"]),
                    ms(r["cpu_fake"]),
                    ms(max(0.0, other)),
                    ms(r["cpu_machine"]),
                    f"{r['cpu_machine'] / r['elapsed'] / (os.cpu_count() or 1):.0%}",
                ]
            )
    print(
        table(
            [
                "run",
                "sending processes",
                "PostgreSQL backends",
                "fake provider",
                "everything else",
                "total",
                "machine busy",
            ],
            cpu_rows,
        )
    )
    print()
    print(
        "where a send's time goes (one Sender, one thread, no contention), per message "
        f"(send_ids on chunks of {CHUNK}: {claims_per_msg:.2f} claim calls per message):"
    )
    print(
        table(
            ["step", "wall ms", "CPU ms (this thread)"],
            [[k, f"{w:.3f}", f"{c:.3f}"] for k, w, c in parts],
        )
    )
    print()
    best = max(results, key=lambda x: x["snd_mps"])
    problems = [f"{x['layout']}: {p}" for x in results for p in x["problems"]]
    if rate:
        problems += [f"rate run: {p}" for p in rate["problems"]]
    if rate:
        rate_row = [
            f"achieved {rate['achieved']:.2f}/s vs configured {RATE:g}/s, {rate['texts']} texts "
            f"({rate['achieved'] / RATE - 1:+.1%}); busiest 1 s window {rate['peak']}",
            verdict(rate["achieved"] <= RATE * (1 + RATE_TOLERANCE)),
        ]
    else:
        rate_row = ["not measured (no Redis)", "SKIPPED"]
    print(
        table(
            ["target", "measured", "result"],
            [
                [
                    f">= {TARGET_MPS:,.0f} msg/s with the limit off (best layout)",
                    f"{best['snd_mps']:,.0f} msg/s ({best['layout']}; raw client "
                    f"{best['raw_mps']:,.0f})",
                    verdict(best["snd_mps"] >= TARGET_MPS),
                ],
                [f"rate limit {RATE:g}/s held (<= +{RATE_TOLERANCE:.0%}) by 4 senders", *rate_row],
                [
                    "each outbox row sent exactly once",
                    "yes" if not problems else "NO: " + "; ".join(problems),
                    verdict(not problems),
                ],
            ],
        )
    )
    print(f"\ntotal run time {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: children stopped, database dropped", file=sys.stderr)
        sys.exit(130)
