"""A small HTTP/1.1 load generator: N keep-alive connections replaying precomputed requests.

Run as a separate process by bench/inbound_sms.py (so it has its own GIL)::

    python bench/_loadgen.py SPEC.json

SPEC: ``{"port", "connections", "warmup", "duration", "requests": PICKLE, "cycle"}`` where
PICKLE holds a list of complete raw requests (bytes). Requests are sent in order, each at most
once unless ``cycle``; every connection sends its next request as soon as the previous answer
is read (closed loop). Requests started during the warm-up are not measured; after the
measuring window no new request is started and the ones in flight are drained. Prints one
JSON line: counts, statuses, latency percentiles (of requests started inside the window),
throughput (answers completed inside the window per second).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import sys
import time
from typing import Any


class Run:
    def __init__(self, spec: dict[str, Any], requests: list[bytes]) -> None:
        self.spec = spec
        self.requests = requests
        self.next = 0
        self.t_start = 0.0  # start of the measuring window
        self.t_end = 0.0
        self.stop_at = 0.0
        self.exhausted_at: float | None = None
        self.samples: list[tuple[float, float, int]] = []  # (start, end, status)
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self.bodies_sample: list[bytes] = []
        self.reconnects = 0

    def take(self) -> bytes | None:
        now = time.monotonic()
        if now >= self.stop_at:
            return None
        if self.next >= len(self.requests):
            if not self.spec.get("cycle"):
                if self.exhausted_at is None:
                    self.exhausted_at = now
                return None
            self.next = 0
        req = self.requests[self.next]
        self.next += 1
        return req

    async def connection(self) -> None:
        port = self.spec["port"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                req = self.take()
                if req is None:
                    return
                t0 = time.monotonic()
                try:
                    writer.write(req)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    length = 0
                    close = chunked = False
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        key = name.strip().lower()
                        if key == b"content-length":
                            length = int(value)
                        elif key == b"connection" and b"close" in value.lower():
                            close = True
                        elif key == b"transfer-encoding" and b"chunked" in value.lower():
                            chunked = True
                    if chunked:  # a streamed answer (a CSV export): read every chunk
                        parts = []
                        while True:
                            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                            data = await reader.readexactly(size + 2)
                            if not size:
                                break
                            parts.append(data[:-2])
                        body = b"".join(parts)
                    else:
                        body = await reader.readexactly(length) if length else b""
                except (OSError, asyncio.IncompleteReadError) as exc:
                    self.errors.append(f"{exc.__class__.__name__}: {exc}")
                    status, body, close = 0, b"", True
                t1 = time.monotonic()
                self.samples.append((t0, t1, status))
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status != 200 and len(self.bodies_sample) < 5:
                    self.bodies_sample.append(body[:300])
                if close:
                    self.reconnects += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    async def main(self) -> dict[str, Any]:
        now = time.monotonic()
        self.t_start = now + self.spec["warmup"]
        self.t_end = self.t_start + self.spec["duration"]
        self.stop_at = self.t_end
        tasks = [asyncio.create_task(self.connection()) for _ in range(self.spec["connections"])]
        await asyncio.gather(*tasks)
        return self.report()

    def report(self) -> dict[str, Any]:
        end = self.t_end if self.exhausted_at is None else min(self.t_end, self.exhausted_at)
        window = max(end - self.t_start, 1e-9)
        measured = [s for s in self.samples if self.t_start <= s[0] < end]
        done_in_window = [s for s in self.samples if self.t_start <= s[1] < end]
        lat = sorted((e - s) * 1000 for s, e, _ in measured)

        def pct(p: float) -> float:
            if not lat:
                return float("nan")
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))]

        return {
            "sent": len(self.samples),
            "measured": len(measured),
            "window_s": window,
            "exhausted": self.exhausted_at is not None and self.exhausted_at < self.t_end,
            "rps": len(done_in_window) / window,
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "max_ms": lat[-1] if lat else float("nan"),
            "errors_measured": sum(1 for s in measured if s[2] != 200),
            "errors_total": sum(1 for s in self.samples if s[2] != 200),
            "ok_total": sum(1 for s in self.samples if s[2] == 200),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "reconnects": self.reconnects,
            "error_messages": self.errors[:5],
            "error_bodies": [b.decode("utf-8", "replace") for b in self.bodies_sample],
        }


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    with open(spec["requests"], "rb") as f:
        requests = pickle.load(f)
    result = asyncio.run(Run(spec, requests).main())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
