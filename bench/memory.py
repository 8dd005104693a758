"""A web worker's resident memory over 100,000 requests of every kind.

    .venv/bin/python bench/memory.py [--requests 100000] [--cases 100000] [--clients 8]

1. creates a throw-away PostgreSQL database and seeds a register (bench/_scale_seed.py);
2. serves the real app under gunicorn (2 workers x 4 threads, as in the other benchmarks);
3. sends a mix of every read and write a deployment sees, interleaved (new reports by SMS,
   STATO by SMS and by phone, follow-up texts, the console's lists, case pages, searches,
   notifications polls, statistics, CSV exports, the API, the citizens' status page), from a
   separate process with N keep-alive connections, in rounds until the total is reached;
4. after each round prints each worker's resident size (VmRSS from /proc) and, at the end,
   the growth from the first round's size to the last (the first round warms the caches: the
   templates, the prepared statements, the classifier).

Target: a worker's resident size stays flat (growth after the first round within 10%).
Never asserts timings or sizes; exits 0 unless the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    Child,
    describe_tree,
    free_port,
    libpq_url,
    scratch_database,
    sigterm_as_interrupt,
    table,
    verdict,
    wait_http,
)
from _scale_seed import seed, utcnow
from inbound_sms import gunicorn_argv, load, report_text
from scale import (
    AUTH_TOKEN,
    PATHS,
    _citizen,
    _sms,
    bench_config,
    draw,
    login,
    make_calls,
    raw,
    voice_form,
)

TARGET_GROWTH = 0.10


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def workers_of(master: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            out.append(int(entry))
    return sorted(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--cases", type=int, default=100_000, help="the seeded register")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--trace", action="store_true",
                        help="trace each worker's allocations (tracemalloc, slower) and print, "
                        "after the last round, what grew since the end of the first, by site")  # fmt: skip
    args = parser.parse_args()
    args.connections = args.clients
    args.worker_class = "gthread"
    args.worker_connections = -(-args.clients // args.workers)
    args.warmup = 0.0
    sigterm_as_interrupt()
    started = time.monotonic()
    rng = random.Random(11)
    with (
        tempfile.TemporaryDirectory(prefix="ld-bench-mem-") as tmp,
        scratch_database("ld_bench_mem") as url,
    ):
        dbname = url.rsplit("/", 1)[1]
        libpq = libpq_url(dbname)
        now = utcnow()
        seeded = seed(libpq, args.cases, now, say=lambda s: None)
        print(f"register: {sum(seeded['rows'].values()):,} rows ({args.cases:,} cases)")
        reg = draw(libpq, seeded["plan"], seeded["staff"])
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("REDIS_URL", "IVR_REDIS_URL", "TWILIO_ACCOUNT_SID")}  # fmt: skip
        env.update(DATABASE_URL=url, SECRET_KEY="mem-bench", TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                   PUBLIC_BASE_URL=public, LINEADIRETTA_CONFIG=bench_config(tmp),
                   LOG_LEVEL="WARNING", INSTANCE_PATH=os.path.join(tmp, "instance"))  # fmt: skip
        per_round = -(-args.requests // args.rounds)
        log_path = os.path.join(tmp, "gunicorn.log")
        argv = gunicorn_argv("lineadiretta.app:create_app()", port, args)
        trace_dir = os.path.join(tmp, "trace")
        if args.trace:  # the server hooks of bench/_trace_conf.py, a snapshot every round
            os.makedirs(trace_dir)
            argv[1:1] = ["-c", str(Path(__file__).resolve().with_name("_trace_conf.py"))]
            env.update(LD_TRACE_DIR=trace_dir, LD_TRACE_EVERY=str(per_round // args.workers))
        samples: list[tuple[int, list[int]]] = []
        with open(log_path, "w") as log:
            server = Child(argv, env=env, stdout=log, stderr=log)
            try:
                wait_http(port, "/healthz", 60, server)
                cookies = {n: login(port, n) for n in ("urp", "sup", "ref-LLPP", "op-LLPP-1")}
                calls = iter(make_calls(libpq, args.requests + 100))
                sent = 0
                for i in range(args.rounds):
                    # each round its own requests: new reports and webhooks are never replays
                    reqs = []
                    for p in PATHS:
                        reqs += p.make(reg, per_round // (len(PATHS) + 1))
                    reqs += [_sms(_citizen(rng), report_text(rng))
                             for _ in range(per_round // (len(PATHS) + 1))]  # fmt: skip
                    rng.shuffle(reqs)
                    reqs = [voice_form(r, next(calls)) if r.path.startswith("/ivr/") else r
                            for r in reqs]  # fmt: skip
                    blobs = [raw(r, port, public, cookies) for r in reqs]
                    f = os.path.join(tmp, f"round-{i}.pickle")
                    with open(f, "wb") as out:
                        pickle.dump(blobs, out)
                    args.duration = 3600.0  # until the round's requests are all sent
                    r = load(port, f, args, tmp, False, server, dbname)
                    sent += r["sent"]
                    sizes = [rss_kib(w) for w in workers_of(server.pid)]
                    samples.append((sent, sizes))
                    print(f"   round {i + 1}: {sent:,} requests ({r['rps']:,.0f}/s, non-200 "
                          f"{r['errors_total']}), workers' RSS "
                          + ", ".join(f"{k / 1024:.1f} MiB" for k in sizes), flush=True)  # fmt: skip
            finally:
                server.stop()
        with open(log_path) as f:
            tracebacks = f.read().count("Traceback")
        traced = []
        if args.trace:
            for name in sorted(os.listdir(trace_dir)):
                with open(os.path.join(trace_dir, name)) as f:
                    last = f.read().rsplit("== ", 1)[-1]
                traced.append(f"worker {name.removesuffix('.txt')}, growth since its first "
                              f"snapshot, by allocation site (newest frame first):\n== {last}")  # fmt: skip
    first, last = samples[0][1], samples[-1][1]
    growth = max((b - a) / a for a, b in zip(first, last, strict=False)) if first else 0.0
    print()
    print(f"product {describe_tree()}; gunicorn gthread {args.workers} x {args.threads}, "
          f"{args.clients} clients; {os.cpu_count()} CPUs; server tracebacks {tracebacks}")  # fmt: skip
    print(table(["requests", *(f"worker {i + 1} RSS MiB" for i in range(len(first)))],
                [[f"{n:,}", *(f"{k / 1024:.1f}" for k in sizes)] for n, sizes in samples]))  # fmt: skip
    print()
    print(table(["target", "measured", "result"], [[
        f"a worker's RSS grows by at most {TARGET_GROWTH:.0%} after the first round",
        f"{growth:+.1%}", verdict(growth <= TARGET_GROWTH)]]))  # fmt: skip
    for t in traced:
        print()
        print(t)
    print(f"\ntotal run time {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: children stopped, database dropped", file=sys.stderr)
        sys.exit(130)
