"""Throughput of the fake SMS provider (tests/fakes/provider.py) driven by the official client.

    .venv/bin/python bench/fake_provider_speed.py [--n 2000] [--threads 8] [--callbacks]

Sends ``--n`` messages with ``twilio.rest.Client.messages.create`` over ``--threads`` threads
sharing one client (one keep-alive ``requests`` session, as the product does), against the
fake (1) in this process, where client and server share one GIL, and (2) in a separate
process (``python -m tests.fakes.provider``). ``--callbacks`` also has the fake post signed
status callbacks to a local receiver for every message. Finally it measures the server alone:
the same sends as bare keep-alive ``http.client`` requests against the separate process (the
official client costs ~0.8 ms of CPU per call, so with it the client is the bottleneck).
Prints messages/s; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twilio.rest import Client

from tests.fakes.provider import FakeProvider, FakeProviderProcess

SID = "AC" + "0" * 32
TOKEN = "bench-token"


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def run(label: str, base_url: str, n: int, threads: int, callback: str | None,
        wait: Callable[[], object]) -> None:  # fmt: skip
    client = Client(SID, TOKEN)
    client.api.base_url = base_url
    client.messages.create(to="+393330000000", from_="+390600000000", body="warm-up")

    def send(i: int) -> str:
        kwargs = {"to": f"+39333{i:07d}", "from_": "+390612345678", "body": f"Messaggio {i}"}
        if callback:
            kwargs["status_callback"] = callback
        return str(client.messages.create(**kwargs).sid)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        sids = list(pool.map(send, range(n)))
    elapsed = time.perf_counter() - start
    assert len(set(sids)) == n
    print(f"{label}: {n} sends over {threads} threads in {elapsed:.2f}s = {n / elapsed:,.0f} msg/s")
    if callback:
        start = time.perf_counter()
        wait()
        print(f"{label}: callbacks drained {time.perf_counter() - start:.2f}s after the last send")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--callbacks", action="store_true")
    args = parser.parse_args()
    for var in ("TWILIO_EDGE", "TWILIO_REGION"):
        os.environ.pop(var, None)

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    sink_thread = threading.Thread(target=sink.serve_forever, daemon=True)
    sink_thread.start()
    callback = f"http://127.0.0.1:{sink.server_address[1]}/status" if args.callbacks else None
    try:
        with FakeProvider(SID, TOKEN) as fake:
            run("in-process fake ", fake.base_url, args.n, args.threads, callback,
                lambda: fake.wait_idle(120))  # fmt: skip
        with FakeProviderProcess(SID, TOKEN) as proc:
            run("separate process", proc.base_url, args.n, args.threads, callback,
                lambda: _wait_remote(proc, 2 * args.n))  # fmt: skip
            proc.configure(callbacks=False)
            raw(proc.port, args.n, args.threads)
    finally:
        sink.shutdown()
        sink.server_close()


def raw(port: int, n: int, threads: int) -> None:
    auth = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    headers = {
        "Authorization": f"Basic {auth}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    path = f"/2010-04-01/Accounts/{SID}/Messages.json"

    def worker(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(count):
            conn.request("POST", path, f"To=%2B39333{i:07d}&From=%2B3906&Body=ciao", headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 201
        conn.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, [n // threads] * threads))
    elapsed = time.perf_counter() - start
    total = n // threads * threads
    print(f"separate process, bare http.client: {total / elapsed:,.0f} req/s")


def _wait_remote(proc: FakeProviderProcess, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(proc.callback_log) < count and time.monotonic() < deadline:
        time.sleep(0.1)


if __name__ == "__main__":
    main()
