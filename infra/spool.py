"""The host's durable spool: what arrived while the register could not be reached.

When PostgreSQL is away (a failover, a restart, a full disk, a network cut) the provider does
not retry an inbound text and a caller hears an error: whatever the service cannot store at
that moment is lost unless it keeps it somewhere else. The web tier keeps it here, in an
SQLite file on the host's own disk (WAL mode, `synchronous=FULL`: each append is fsynced
before the request is answered), and a drainer registers the items in arrival order as soon
as the database answers, each exactly once: every item has a key (the provider's MessageSid,
a CallSid, an idempotency key) that the register itself refuses to take twice.

The file is shared by every web process of the host; only one of them drains at a time (an
advisory lock that the operating system releases when its holder dies, even by kill -9). An
item is deleted from the spool only after the register committed it: a drainer that dies
half-way leaves the item in place, and the next one finds the register already holding it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # an item that fails this often for a reason other than the database is held

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    municipality TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    UNIQUE (kind, key)
);
CREATE TABLE IF NOT EXISTS known (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
"""


@dataclass(frozen=True)
class SpoolItem:
    id: int
    kind: str  # what it is: "sms", "voice", "status", "open311"
    key: str  # what the register refuses to take twice
    municipality: str
    payload: dict[str, Any]
    received_at: datetime
    attempts: int = 0


@dataclass(frozen=True)
class SpoolStats:
    depth: int  # items waiting to be registered
    oldest_age_seconds: float | None  # of the oldest waiting item
    held: int  # items that failed MAX_ATTEMPTS times for another reason: staff must look


class Spool:
    """The spool file of this host (`path`), created on first use."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._ready = False
        self._lock = threading.Lock()

    @contextmanager
    def _db(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self._set_up()
                    self._ready = True
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            # In WAL mode FULL syncs the log on every commit: an answered append is on disk.
            # What may be lost in a power cut without harm (an item's removal once the register
            # holds it: the next drainer finds it registered) skips the sync.
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            yield conn
        finally:
            conn.close()

    def _set_up(self) -> None:
        """Create the file in WAL mode with its tables, once per process. The host's web
        processes may all do it at the same moment (the first contact after a cut reaches
        each of them); switching the journal mode is refused at once, without waiting, to a
        connection racing another, so the set-up is taken in turns under a file lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.setup.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with closing(sqlite3.connect(self.path, timeout=30)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                conn.commit()
        finally:
            os.close(fd)  # releases the lock

    def append(
        self,
        kind: str,
        key: str,
        municipality: str,
        payload: dict[str, Any],
        received_at: datetime,
    ) -> bool:
        """Keep an item, durably; False when an item of that kind and key is already kept (a
        provider's retry), which then stands."""
        with self._db() as conn:
            cur = conn.execute(
                "INSERT INTO items (kind, key, municipality, payload, received_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, key) DO NOTHING",
                (
                    kind,
                    key,
                    municipality,
                    json.dumps(payload, ensure_ascii=False),
                    received_at.astimezone(UTC).isoformat(),
                ),
            )
            return cur.rowcount == 1

    def remember(self, kind: str, key: str, value: str) -> None:
        """Note what this host learnt from the register and will need while it is away (the
        municipality of an Open311 key, by its hash). Not synced: a lost note is learnt again."""
        with self._db(durable=False) as conn:
            row = conn.execute(
                "SELECT value FROM known WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
            if row is None or row[0] != value:  # a write only when it is news
                conn.execute(
                    "INSERT INTO known (kind, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
                    (kind, key, value),
                )

    def recall(self, kind: str, key: str) -> str | None:
        with self._db() as conn:
            row = conn.execute(
                "SELECT value FROM known WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
        return str(row[0]) if row else None

    def get(self, kind: str, key: str) -> SpoolItem | None:
        with self._db() as conn:
            row = conn.execute(f"{_SELECT} WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return _item(row) if row else None

    def pending(self, limit: int = 100) -> list[SpoolItem]:
        """The waiting items, oldest first (arrival order)."""
        with self._db() as conn:
            rows = conn.execute(f"{_SELECT} WHERE held = 0 ORDER BY id LIMIT ?", (limit,))
            return [_item(r) for r in rows.fetchall()]

    def held(self) -> list[SpoolItem]:
        with self._db() as conn:
            rows = conn.execute(f"{_SELECT} WHERE held = 1 ORDER BY id").fetchall()
        return [_item(r) for r in rows]

    def done(self, item_id: int) -> None:
        """The register holds the item: it leaves the spool."""
        with self._db(durable=False) as conn:
            conn.execute("DELETE FROM items WHERE id = ?", (item_id,))

    def failed(self, item_id: int, error: str) -> bool:
        """The item could not be registered for a reason other than the database being away;
        True when that was its last try and it is now held for staff."""
        with self._db() as conn:
            row = conn.execute(
                "UPDATE items SET attempts = attempts + 1, last_error = ?, "
                "held = (attempts + 1 >= ?) WHERE id = ? RETURNING held",
                (error[:500], MAX_ATTEMPTS, item_id),
            ).fetchone()
        return bool(row and row[0])

    def release(self, item_id: int) -> None:
        """Give a held item another round of tries (after staff fixed its cause)."""
        with self._db() as conn:
            conn.execute("UPDATE items SET held = 0, attempts = 0 WHERE id = ?", (item_id,))

    def stats(self, now: datetime) -> SpoolStats:
        if not self.path.exists():
            return SpoolStats(0, None, 0)
        with self._db() as conn:
            depth, oldest, held = conn.execute(
                "SELECT count(*) FILTER (WHERE held = 0), "
                "min(received_at) FILTER (WHERE held = 0), count(*) FILTER (WHERE held = 1) "
                "FROM items"
            ).fetchone()
        age = (now - datetime.fromisoformat(oldest)).total_seconds() if oldest else None
        return SpoolStats(depth, age, held)

    @contextmanager
    def drain_lock(self) -> Iterator[bool]:
        """True inside when this process is the host's one drainer for now."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.drain.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


_SELECT = "SELECT id, kind, key, municipality, payload, received_at, attempts FROM items"


def _item(row: tuple[Any, ...]) -> SpoolItem:
    return SpoolItem(
        id=row[0],
        kind=row[1],
        key=row[2],
        municipality=row[3],
        payload=json.loads(row[4]),
        received_at=datetime.fromisoformat(row[5]),
        attempts=row[6],
    )


Handler = Callable[[SpoolItem], None]


class Drainer:
    """Registers the spool's items, oldest first, with the handler of each kind.

    A handler registers its item and commits (idempotently: run twice for the same item, the
    register holds it once); `database_away(exc)` tells an error that means "try later, in
    the same order" from one that belongs to the item."""

    def __init__(
        self,
        spool: Spool,
        handlers: dict[str, Handler],
        database_away: Callable[[BaseException], bool],
        interval: float = 1.0,
    ) -> None:
        self.spool = spool
        self.handlers = handlers
        self.database_away = database_away
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def drain_once(self) -> int:
        """Register what is waiting, while the database answers; the number registered."""
        done = 0
        with self.spool.drain_lock() as mine:
            if not mine:
                return 0
            while batch := self.spool.pending():
                for item in batch:
                    outcome = self._register(item)
                    if outcome == "later":
                        return done
                    if outcome == "held":
                        break  # out of the way: the next items go on
                    self.spool.done(item.id)
                    done += 1
        return done

    def _register(self, item: SpoolItem) -> str:
        """Run the item's handler: "done"; "later" (the register is away, or the item failed
        and keeps its place: arrival order holds); "held" (it failed its last try)."""
        handler = self.handlers.get(item.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for spooled {item.kind!r} items")
            handler(item)
        except Exception as exc:
            kind = exc.__class__.__name__
            if self.database_away(exc):
                log.info("spool: the register is still away (%s)", kind)
                return "later"
            # the class only: a message may quote personal data (it stays in the spool file)
            if self.spool.failed(item.id, f"{kind}: {exc}"):
                log.error(
                    "spool: %s item %d held after %d tries: %s",
                    item.kind,
                    item.id,
                    MAX_ATTEMPTS,
                    kind,
                )
                return "held"
            log.warning("spool: %s item %d failed (%s), will retry", item.kind, item.id, kind)
            return "later"
        return "done"

    def wake(self) -> None:
        """Something was spooled: the process's drainer thread (if it runs) tries at once."""
        self._wake.set()

    def start(self) -> None:
        # a thread does not survive fork(): a worker process starts its own
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        self._pid = os.getpid()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="spool-drainer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        pause = self.interval
        while not self._stop.is_set():
            self._wake.wait(pause)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                before = self.spool.stats(datetime.now(UTC)).depth
                if before == 0:
                    pause = self.interval
                    continue
                self.drain_once()
                left = self.spool.stats(datetime.now(UTC)).depth
            except Exception:
                log.exception("spool: the drainer failed; retrying")
                left = 1
            # back off while the register stays away, up to 2 s between tries
            pause = self.interval if left == 0 else min(pause * 2, 2.0)
