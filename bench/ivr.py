"""IVR webhook throughput on PostgreSQL: a menu step and the report-registration step of the
real app, against a bare Flask endpoint returning fixed TwiML, measured in the same run.

    .venv/bin/python bench/ivr.py [--quick] [--workers 2] [--threads 4] [--connections 32]

1. creates a throw-away PostgreSQL database and migrates it; creates one call in progress per
   request to come (calls rows, as /ivr/incoming would leave them), so each request is a new
   turn of a real call and nothing is answered from the replay store;
2. precomputes signed provider requests: menu steps (POST /ivr/menu/1, Digits=2: the caller
   asks for a case's status) and registration steps (POST /ivr/confirm/3, Digits=1: the
   caller confirms a described report, which registers a case with a protocol number);
3. loads the bare app, the menu step, the registration step, an inbound text that opens a
   case (bench/inbound_sms.py's webhooks, on the same app), the floor, then the bare app
   again, with the same gunicorn settings and N keep-alive connections from a separate
   process;
4. prints requests/s, p50/p99 and the ratios, PASS/MISS against the targets: a menu step
   (call state in Redis) >= 0.95 of the floor; the registration step >= 0.50 of the inbound
   text's rate, with p99 <= 200 ms.

The floor (bench/floor_app.py, with Redis; ``--no-floor`` skips it) does only the work
required of any implementation (twilio's signature check, the call's state read from and
written to Redis, twilio's TwiML builder): floor/bare bounds the ratio these parts allow.

Never asserts timings; exits 0 unless the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import os
import pickle
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    ROOT,
    free_port,
    pg_setting,
    scratch_database,
    sigterm_as_interrupt,
    table,
    verdict,
)
from inbound_sms import serve_and_load
from inbound_sms import signed_requests as sms_requests

TOKEN = "bench-auth-token"
ACCOUNT = "AC" + "c" * 32
TO = "+390575123400"  # Monteverde's voice number in config.toml
MUNI = "monteverde"
TARGET_MENU_FLOOR = 0.95  # issue 12: a menu step, of what the required work allows
TARGET_REGISTER = 0.50  # the registration step, of an inbound text's rate in the same run
TARGET_REGISTER_P99_MS = 200.0


def make_calls(
    url: str,
    prefix: str,
    n: int,
    state: dict[str, object],
    redis_url: str | None = None,
    redis_prefix: str = "",
) -> list[str]:
    """n calls in progress, as the earlier steps would have left them (the ``calls`` rows and,
    with Redis, the navigation snapshots the app keeps there)."""
    from sqlalchemy import insert

    from cases.db import make_engine
    from cases.models import Call
    from ivr.callstate import CallStore, Snapshot

    now = datetime.now(UTC)
    sids = [f"CA{prefix}{i:030d}"[:34] for i in range(n)]
    engine = make_engine(url)
    with engine.begin() as conn:
        for start in range(0, n, 2000):
            conn.execute(
                insert(Call),
                [
                    {
                        "call_sid": sid,
                        "municipality": MUNI,
                        "from_phone": f"+39347{i:07d}",
                        "to_phone": TO,
                        "language": "it",
                        "state": state,
                        "started_at": now,
                        "updated_at": now,
                    }
                    for i, sid in enumerate(sids[start : start + 2000], start=start)
                ],
            )
    engine.dispose()
    if redis_url:
        import redis

        r = redis.Redis.from_url(redis_url)
        store = CallStore(r, prefix=redis_prefix)  # its key names, written in bulk here
        for start in range(0, n, 2000):
            pipe = r.pipeline(transaction=False)
            for i, sid in enumerate(sids[start : start + 2000], start=start):
                snap = Snapshot(MUNI, f"+39347{i:07d}", TO, "it", None, dict(state))
                pipe.hset(store.key(sid), "s", snap.dumps())
                pipe.expire(store.key(sid), 3600)
            pipe.execute()
        r.close()
    return sids


def drop_redis_keys(redis_url: str, prefix: str) -> int:
    import redis

    r = redis.Redis.from_url(redis_url)
    n = 0
    batch: list[bytes] = []
    for key in r.scan_iter(match=prefix + "*", count=2000):
        batch.append(key)
        if len(batch) >= 2000:
            n += int(r.delete(*batch))
            batch = []
    if batch:
        n += int(r.delete(*batch))
    r.close()
    return n


def signed(
    sids: list[str], path: str, extra: dict[str, str], port: int, public: str
) -> list[bytes]:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(TOKEN)
    out = []
    for i, sid in enumerate(sids):
        params = {
            "CallSid": sid,
            "AccountSid": ACCOUNT,
            "From": f"+39347{i:07d}",
            "To": TO,
            "CallStatus": "in-progress",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            **extra,
        }
        body = urlencode(params).encode()
        sig = validator.compute_signature(public + path, params)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: TwilioProxy/1.1\r\n"
            "Content-Type: application/x-www-form-urlencoded; charset=UTF-8\r\n"
            f"X-Twilio-Signature: {sig}\r\nI-Twilio-Idempotency-Token: {secrets.token_hex(16)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode("latin-1") + body)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--worker-connections", type=int, default=None)
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--duration", type=float, default=None)
    default_redis = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--redis",
        nargs="?",
        const=default_redis,
        default=default_redis,
        metavar="URL",
        help="Redis for the calls' navigation state (keys under a per-run prefix, deleted "
        "afterwards; default, also for a bare --redis: BENCH_REDIS_URL or "
        "redis://127.0.0.1:6379/0); 'none' to measure only the database path",
    )
    parser.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="skip bench/floor_app.py (the required work only: signature, the call's state "
        "read and written in Redis, TwiML), against which the menu's target is set",
    )
    args = parser.parse_args()
    args.worker_connections = args.worker_connections or -(-args.connections // args.workers)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 4.0)
    args.duration = args.duration if args.duration is not None else (6.0 if args.quick else 15.0)
    pool = int((args.warmup + args.duration) * 1500)
    menu_pool = int((args.warmup + args.duration) * 5000)  # the Redis path may reach 5,000/s
    redis_url = None if args.redis.lower() == "none" else args.redis
    redis_prefix = f"ld:bench-ivr-{os.getpid()}:call:"
    if redis_url:
        import redis

        try:
            redis.Redis.from_url(redis_url, socket_timeout=2).ping()
        except redis.RedisError as exc:
            print(f"Redis at {redis_url} unreachable ({exc}): measuring the database path only")
            redis_url = None
    sigterm_as_interrupt()

    with (
        tempfile.TemporaryDirectory(prefix="ld-bench-ivr-") as tmp,
        scratch_database("ld_bench_ivr") as url,
    ):
        bare_port, app_port = free_port(), free_port()
        public = f"http://127.0.0.1:{app_port}"
        t0 = time.perf_counter()
        # as /ivr/incoming leaves a call: turn 1, the caller hears the menu of /ivr/menu/1
        menu_calls = make_calls(url, "m", pool, {"turn": 1})
        redis_calls = (
            make_calls(url, "n", menu_pool, {"turn": 1}, redis_url, redis_prefix)
            if redis_url
            else []
        )
        report_calls = make_calls(
            url,
            "r",
            pool,
            {
                "turn": 3,
                "mode": "report",
                "category": "strade",
                "recording": True,
                "transcript": "C'è una buca profonda in via Roma 12, davanti alla farmacia",
            },
            redis_url,
            redis_prefix,
        )
        files = {"text": os.path.join(tmp, "text.pickle")}
        with open(files["text"], "wb") as f:
            pickle.dump(sms_requests(pool, app_port, public, seed=os.getpid()), f)
        for name, sids, path, extra in (
            ("menu", menu_calls, "/ivr/menu/1", {"Digits": "2"}),
            ("menu-redis", redis_calls, "/ivr/menu/1", {"Digits": "2"}),
            ("register", report_calls, "/ivr/confirm/3", {"Digits": "1"}),
        ):
            files[name] = os.path.join(tmp, f"{name}.pickle")
            with open(files[name], "wb") as f:
                pickle.dump(signed(sids, path, extra, app_port, public), f)
        print(
            f"prepared {pool:,} calls per step and their signed requests in {time.perf_counter() - t0:.1f}s"
        )
        base_env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "IVR_REDIS_URL", "IVR_REDIS_PREFIX", "TWILIO_ACCOUNT_SID")
        }
        bare_env = dict(base_env, PYTHONPATH=str(ROOT))
        app_env = dict(
            base_env,
            DATABASE_URL=url,
            SECRET_KEY="bench",
            TWILIO_AUTH_TOKEN=TOKEN,
            PUBLIC_BASE_URL=public,
            LINEADIRETTA_CONFIG=str(ROOT / "config.toml"),
            LOG_LEVEL="WARNING",
            INSTANCE_PATH=os.path.join(tmp, "instance"),
        )
        # call state in Redis (IVR_REDIS_URL): the broker stays the embedded one, as before,
        # so that the registration step's figure stays comparable
        redis_env = dict(app_env, IVR_REDIS_URL=redis_url or "", IVR_REDIS_PREFIX=redis_prefix)
        dbname = url.rsplit("/", 1)[1]
        bare = "bench.bare_ivr_app:create_app()"
        real = "lineadiretta.app:create_app()"
        r_bare1 = serve_and_load(
            "bare-before", bare, bare_env, bare_port, files["menu"], args, tmp, "/", cycle=True
        )
        r_redis = (
            serve_and_load(
                "menu, call state in Redis",
                real,
                redis_env,
                app_port,
                files["menu-redis"],
                args,
                tmp,
                "/healthz",
                cycle=False,
                dbname=dbname,
            )
            if redis_url
            else None
        )
        r_menu = serve_and_load(
            "menu, no Redis (database)",
            real,
            app_env,
            app_port,
            files["menu"],
            args,
            tmp,
            "/healthz",
            cycle=False,
            dbname=dbname,
        )
        r_reg = serve_and_load(
            "register",
            real,
            redis_env if redis_url else app_env,
            app_port,
            files["register"],
            args,
            tmp,
            "/healthz",
            cycle=False,
            dbname=dbname,
        )
        r_text = serve_and_load(
            "inbound text",
            real,
            redis_env if redis_url else app_env,
            app_port,
            files["text"],
            args,
            tmp,
            "/healthz",
            cycle=False,
            dbname=dbname,
        )
        r_floor = (
            serve_and_load(
                "floor: required work only",
                "bench.floor_app:create_ivr_app()",
                dict(redis_env, PYTHONPATH=str(ROOT)),
                app_port,
                files["menu-redis"],
                args,
                tmp,
                "/healthz",
                cycle=True,
            )
            if redis_url and args.floor
            else None
        )
        r_bare2 = serve_and_load(
            "bare-after", bare, bare_env, bare_port, files["menu"], args, tmp, "/", cycle=True
        )
        sync_commit = pg_setting(url, "synchronous_commit")
        import psycopg
        from _common import libpq_url

        with psycopg.connect(libpq_url(dbname)) as conn:
            n, lo, hi = conn.execute(
                "SELECT count(*), min(number), max(number) FROM cases"
            ).fetchone()  # type: ignore[misc]
            menu_rows = conn.execute(
                "SELECT count(*) FROM call_steps WHERE call_sid LIKE 'CAn%'"
            ).fetchone()[0]  # type: ignore[index]
        if redis_url:
            drop_redis_keys(redis_url, redis_prefix)

    bare_rps = (r_bare1["rps"] + r_bare2["rps"]) / 2

    def row(name: str, r: dict | None) -> list[list[str]]:
        if not r:
            return []
        return [[name, f"{r['rps']:,.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                 f"{r['rps'] / bare_rps:.2f}"]]  # fmt: skip

    print()
    print(
        f"gunicorn {args.worker_class} --workers {args.workers} --threads {args.threads}; "
        f"{args.connections} keep-alive connections; synchronous_commit={sync_commit}"
    )
    print(table(["endpoint", "req/s", "p50 ms", "p99 ms", "/ bare"], [
        ["bare Flask, fixed TwiML", f"{bare_rps:,.0f}", f"{r_bare1['p50_ms']:.1f}",
         f"{r_bare1['p99_ms']:.1f}", "1.00"],
        *row("menu step, call state in Redis", r_redis),
        *row("menu step, no Redis (database)", r_menu),
        *row("floor: required work only", r_floor),
        *row("registration step (/ivr/confirm)", r_reg),
        *row("inbound text opening a case", r_text),
    ]))  # fmt: skip
    targets = []
    if r_redis and r_floor:
        of_floor = r_redis["rps"] / r_floor["rps"]
        targets.append([f"menu step (Redis) / floor >= {TARGET_MENU_FLOOR:.2f}",
                        f"{of_floor:.2f}", verdict(of_floor >= TARGET_MENU_FLOOR)])  # fmt: skip
    of_text = r_reg["rps"] / r_text["rps"]
    targets += [
        [f"registration step / inbound text >= {TARGET_REGISTER:.2f}",
         f"{of_text:.2f} ({r_reg['rps']:,.0f} / {r_text['rps']:,.0f} req/s)",
         verdict(of_text >= TARGET_REGISTER)],
        [f"registration step p99 <= {TARGET_REGISTER_P99_MS:g} ms",
         f"{r_reg['p99_ms']:.1f} ms", verdict(r_reg["p99_ms"] <= TARGET_REGISTER_P99_MS)],
        ["registration: no errors, numbers gap-free",
         f"{r_reg['errors_total']} errors, numbers {lo}..{hi} of {n}",
         verdict(r_reg["errors_total"] == 0 and r_text["errors_total"] == 0
                 and (n == 0 or (lo == 1 and hi == n)))],
    ]  # fmt: skip
    print(table(["target", "measured", "result"], targets))
    if r_redis:
        print(
            f"menu steps with Redis: {r_redis['errors_total']} errors, {menu_rows} of them "
            "answered from the database instead of Redis"
        )
    print(
        f"errors: menu {r_menu['errors_total']}, register {r_reg['errors_total']}, text "
        f"{r_text['errors_total']}; cases registered {n}, numbers {lo}..{hi} "
        f"({'gap-free' if n == 0 or (lo == 1 and hi == n) else 'GAPS'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
