"""A call's navigation state in Redis, so that a menu step needs no database transaction.

What a caller *said* (transcript, recordings, the case) is written to PostgreSQL by the step
that produced it; Redis holds a snapshot of the whole call (so a menu step can decide without
the database) and the answers given to navigation steps (so a provider retry hears the same
answer). Redis may lose it: the ``calls`` row is then the fallback, with the navigation as of
the last durable step (the caller may hear a menu again, nothing said is lost).

One hash per call, ``<prefix><CallSid>``: field ``s`` is the snapshot (JSON), field
``r:<step>:<request hash>`` the answer given to that request.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import hiredis
import redis
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError

log = logging.getLogger(__name__)

# Keys of Call.state that only steer the menu; everything else is kept in PostgreSQL.
NAV_KEYS = frozenset({"turn", "tries", "mode", "page", "open_case"})

# Record a navigation step's answer once: a concurrent retry of the same request gets the
# first answer back instead of moving the call on twice.
_SAVE_NAV = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return redis.call('HGET', KEYS[1], ARGV[1])
end
redis.call('HSET', KEYS[1], 's', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return false
"""
_SAVE_NAV_SHA = hashlib.sha1(_SAVE_NAV.encode()).hexdigest()


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class StoreDown(Exception):
    """Redis did not answer: the caller is served from the database instead."""


@dataclass(frozen=True)
class Snapshot:
    """A call as Redis last saw it (the fields of a ``calls`` row that the steps read)."""

    municipality: str
    from_phone: str
    to_phone: str
    language: str
    case_id: int | None
    state: dict[str, Any]

    @property
    def turn(self) -> int:
        return int(self.state.get("turn", 0))

    def call_fields(self) -> dict[str, Any]:
        """The fields of a call (row or NavCall) that the snapshot holds, its state apart."""
        return {
            "municipality": self.municipality,
            "from_phone": self.from_phone,
            "to_phone": self.to_phone,
            "language": self.language,
            "case_id": self.case_id,
        }

    def dumps(self) -> str:
        return json.dumps(
            {
                "m": self.municipality,
                "f": self.from_phone,
                "t": self.to_phone,
                "l": self.language,
                "c": self.case_id,
                "st": self.state,
            },
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, raw: bytes | str) -> Snapshot:
        d = json.loads(raw)
        return cls(d["m"], d["f"], d["t"], d["l"], d["c"], d["st"])


@dataclass(slots=True)
class NavCall:
    """A call as a navigation step runs it: the snapshot's fields in a plain object (a
    ``Call`` row object costs SQLAlchemy's instrumentation on every attribute set, for a
    row that is never written). Has every attribute of ``Call`` that a step may touch."""

    call_sid: str
    municipality: str
    from_phone: str
    to_phone: str
    language: str
    case_id: int | None
    state: dict[str, Any]
    ended_at: datetime | None = None
    end_status: str | None = None
    duration_seconds: int | None = None


class CallStore:
    """Navigation state and navigation answers of calls in progress, in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "ld:call:",
        ttl_seconds: int = 4 * 3600,
        retry_after_seconds: float = 5.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl_seconds
        self.retry_after = retry_after_seconds
        self._down_until = 0.0  # per process: only saves time while Redis is out
        self._local = threading.local()

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> CallStore:
        # short timeouts: a Redis outage must cost a caller well under a second, then the
        # database takes over (the provider gives up on a webhook after 15 s)
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return cls(client, **kw)

    def _connection(self) -> AbstractConnection:
        """This thread's own connection, made with the client's settings (URL, timeouts,
        parser). The two commands of a step go straight to it: no pool lock, no health poll
        and no bookkeeping per command, which cost as much CPU as the command itself."""
        local = self._local
        conn: AbstractConnection | None = getattr(local, "conn", None)
        if conn is None or local.client is not self.client or local.pid != os.getpid():
            pool = self.client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            local.conn, local.client, local.pid = conn, self.client, os.getpid()
        return conn

    def _command(self, *args: str | int) -> Any:
        """One command, one round trip. A connection left in doubt is closed; one that Redis
        had closed while it was idle (a restart) is reopened and the command sent once more
        (both commands are safe to repeat); a timeout is not retried."""
        conn = self._connection()
        # hiredis packs in C; redis-py's wrapper around the same function costs more
        packed = [hiredis.pack_command(cast(Any, args))]
        retry = conn.is_connected
        while True:
            try:
                conn.send_packed_command(packed, check_health=False)
                return conn.read_response()
            except redis.ResponseError:
                raise  # the connection is fine: the command was refused
            except redis.ConnectionError:
                conn.disconnect()
                if not retry:
                    raise
                retry = False
            except BaseException:
                conn.disconnect()
                raise

    def key(self, sid: str) -> str:
        return self.prefix + sid

    @staticmethod
    def answer_field(step: str, digest: str) -> str:
        return f"r:{step}:{digest}"

    def _failed(self, what: str, exc: Exception) -> StoreDown:
        self._down_until = time.monotonic() + self.retry_after
        log.warning("call state in Redis unavailable (%s: %s): using the database", what, exc)
        return StoreDown(what)

    def load(self, sid: str, step: str, digest: str) -> tuple[Snapshot | None, str | None]:
        """(the call's snapshot, the answer already given to this very request), one round trip."""
        if time.monotonic() < self._down_until:
            raise StoreDown("recently unavailable")
        try:
            raw, answer = self._command(
                "HMGET", self.key(sid), "s", self.answer_field(step, digest)
            )
        except redis.RedisError as exc:
            raise self._failed("load", exc) from exc
        snap = Snapshot.loads(raw) if raw else None
        return snap, _text(answer)

    def save_nav(self, sid: str, snap: Snapshot, step: str, digest: str, xml: str) -> str | None:
        """Save a navigation step; None, or the answer a concurrent retry already gave."""
        args = (self.key(sid), self.answer_field(step, digest), xml, snap.dumps(), self.ttl)
        try:
            try:
                prior = self._command("EVALSHA", _SAVE_NAV_SHA, 1, *args)
            except NoScriptError:  # Redis restarted or flushed its scripts: send it again
                prior = self._command("EVAL", _SAVE_NAV, 1, *args)
        except redis.RedisError as exc:
            raise self._failed("save", exc) from exc
        return _text(prior)

    def save(self, sid: str, snap: Snapshot, step: str, digest: str, xml: str) -> None:
        """After a durable step committed: refresh the snapshot; a failure only costs speed."""
        if time.monotonic() < self._down_until:
            return
        key = self.key(sid)
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, mapping={"s": snap.dumps(), self.answer_field(step, digest): xml})
            pipe.expire(key, self.ttl)
            pipe.execute()
        except redis.RedisError as exc:
            self._failed("save", exc)
            self.forget(sid)

    def forget(self, sid: str) -> None:
        """Drop a snapshot that may be stale (best effort: the turn check catches the rest)."""
        with contextlib.suppress(redis.RedisError):
            self.client.hdel(self.key(sid), "s")
