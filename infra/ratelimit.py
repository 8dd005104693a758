"""A per-sender send rate shared by every worker on every host (Redis), or per process.

GCRA as a reservation: each send books the next free slot for its segments and learns how
long to wait for it. Redis' own clock is used, so hosts with skewed clocks still agree.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis

_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - now
if wait > max_wait then return -wait end
redis.call('SET', KEYS[1], tat + cost, 'PX', wait + cost + 60000)
return wait
"""


class Limiter(Protocol):
    def reserve(self, sender: str, segments: int, rate: float, max_wait: float) -> float:
        """Seconds to wait before sending (slot booked), or a negative number: not booked,
        come back after that many seconds."""
        ...


class RedisLimiter:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._script = client.register_script(_SCRIPT)

    def reserve(self, sender: str, segments: int, rate: float, max_wait: float) -> float:
        if rate <= 0:
            return 0.0
        cost_ms = round(1000 * max(segments, 1) / rate)
        wait_ms = int(
            self._script(keys=[f"ld:rate:{sender}"], args=[cost_ms, int(max_wait * 1000)])
        )
        return wait_ms / 1000.0


class LocalLimiter:
    """For the embedded mode (one worker process): same algorithm, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}

    def reserve(self, sender: str, segments: int, rate: float, max_wait: float) -> float:
        if rate <= 0:
            return 0.0
        cost = max(segments, 1) / rate
        with self._lock:
            now = time.monotonic()
            tat = max(self._tat.get(sender, now), now)
            wait = tat - now
            if wait > max_wait:
                return -wait
            self._tat[sender] = tat + cost
            return wait
