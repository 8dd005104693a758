"""`lineadiretta worker`: the Celery worker, watched over by a small parent process.

Celery's worker on Redis does not always survive the broker going away: after a restart of
Redis it may end ("Unrecoverable error") or, worse, stay up without consuming anything
(celery/celery#9054, #10205; both seen in chaos drill 3). Texts would then wait for a person
to notice. So the process the Procfile starts is this parent; the Celery worker is its child:

- a child that exits on its own is started again (after 1 s, doubling up to 30 s while it
  keeps failing at once);
- a child that is **stuck** is killed and started again. Stuck: the broker answers, tasks are
  waiting in its queue, and the child has not received one for `WORKER_STUCK_SECONDS`
  (default 120: a healthy worker receives the next task as soon as one of its slots is free,
  and no task runs longer than a minute). The child touches a heartbeat file whenever it
  receives a task (`workers.celery_app`).
- SIGTERM and SIGINT are passed on (a warm shutdown: running tasks finish), then the parent
  exits with the child.

Nothing is lost by a kill: tasks are acknowledged late and the outbox's sweeper queues again
whatever was not recorded as sent (and asks the provider about sends left in doubt).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

log = logging.getLogger(__name__)
HEARTBEAT_ENV = "LINEADIRETTA_WORKER_HEARTBEAT"


def touch_heartbeat() -> None:
    """Called by the child whenever it receives a task."""
    path = os.environ.get(HEARTBEAT_ENV)
    if path:
        Path(path).touch()


def waiting_tasks(redis_url: str | None, queue: str = "celery") -> int | None:
    """Tasks waiting in the broker's queue; None when there is no Redis or it does not answer."""
    if not redis_url:
        return None

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        return int(client.llen(queue))
    except redis.RedisError:
        return None


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (Linux's /proc), deepest last."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (in parentheses) may hold spaces: the fields after it are fixed
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


class Supervisor:
    def __init__(
        self,
        command: list[str],
        *,
        redis_url: str | None,
        stuck_after: float,
        check_every: float = 2.0,
        waiting: Callable[[], int | None] | None = None,
    ) -> None:
        self.command = command
        self.stuck_after = stuck_after
        self.check_every = check_every
        self.waiting = waiting or (lambda: waiting_tasks(redis_url))
        fd, name = tempfile.mkstemp(prefix="ld-worker-", suffix=".alive")
        os.close(fd)
        self.heartbeat = Path(name)
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def _start(self) -> subprocess.Popen[bytes]:
        self.heartbeat.touch()
        env = {**os.environ, HEARTBEAT_ENV: str(self.heartbeat)}
        # in our process group: whatever stops us as a group (a platform, kill -9 of the
        # group) stops it and its pool too
        child = subprocess.Popen(self.command, env=env)
        log.info("worker: Celery worker started (pid %d)", child.pid)
        return child

    def _stop_child(self, sig: int) -> None:
        """`sig` to the child; a SIGKILL to its pool's processes too (they would outlive it)."""
        if self.child is None or self.child.poll() is not None:
            return
        pids = [self.child.pid] + (descendants(self.child.pid) if sig == signal.SIGKILL else [])
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self._stop_child(signal.SIGTERM)  # warm shutdown

    def stuck(self) -> bool:
        """Tasks wait in an answering broker, and the child has received none for a while."""
        quiet = time.time() - self.heartbeat.stat().st_mtime
        if quiet < self.stuck_after:
            return False
        waiting = self.waiting()
        return bool(waiting)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        backoff = 1.0
        try:
            while True:
                self.child = self._start()
                started = time.monotonic()
                while self.child.poll() is None:
                    time.sleep(self.check_every)
                    if not self.stopping and self.stuck():
                        log.error(
                            "worker: the Celery worker (pid %d) received no task for %.0f s "
                            "while tasks wait in the broker: killed, to be started again",
                            self.child.pid,
                            self.stuck_after,
                        )
                        self._stop_child(signal.SIGKILL)
                        self.child.wait()
                        break
                code = self.child.returncode
                if self.stopping:
                    return 0 if code in (0, -signal.SIGTERM) else int(code or 0)
                if time.monotonic() - started > 60:
                    backoff = 1.0  # it ran a while: a new failure, not a crash loop
                log.error("worker: the Celery worker exited (%s); starting it again", code)
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
        finally:
            self._stop_child(signal.SIGTERM)
            if self.child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.child.wait(timeout=20)
                self._stop_child(signal.SIGKILL)
            self.heartbeat.unlink(missing_ok=True)


def supervise(celery_args: list[str], redis_url: str | None, stuck_after: float) -> int:
    command = [sys.executable, "-m", "lineadiretta.cli", "celery-worker", *celery_args]
    return Supervisor(command, redis_url=redis_url, stuck_after=stuck_after).run()
