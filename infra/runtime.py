"""What a process is built with, reached from anywhere below the app factory.

`lineadiretta.app.create_app` (the composition root) builds one `Runtime` from the settings
and installs it on the app; views, webhooks and tasks reach it with `runtime()`. This module
imports nothing above `infra/` and `cases/`, so every import of it is at module top and none
runs back up to the factory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cases.clock import utcnow
from cases.config import Config
from infra.provider import SmsProvider, provider_from_config
from infra.ratelimit import Limiter, LocalLimiter, RedisLimiter
from infra.spool import Drainer, Spool

KEY = "lineadiretta"  # the app's extensions key


@dataclass
class Runtime:
    """The parsed config, the database, the spool, and the outside services' clients (built
    on first use: a process that never sends a text never makes a provider client)."""

    config: Config
    engine: Engine
    sessions: sessionmaker[Session]
    settings: Mapping[str, Any]  # the app's settings, as read from the environment
    spool: Spool
    drainer: Drainer
    # the one clock of the process: every request, task and spooled contact reads it
    clock: Callable[[], datetime] = utcnow
    _built: dict[str, Any] = field(default_factory=dict, repr=False)
    # re-entrant: what one build needs (the sender needs the provider) is built inside it
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def public_base_url(self) -> str | None:
        url: str | None = self.settings.get("PUBLIC_BASE_URL")
        return url

    @property
    def redis_url(self) -> str | None:
        url: str | None = self.settings.get("REDIS_URL")
        return url

    def once(self, name: str, build: Callable[[], Any]) -> Any:
        """What `build` makes, made on first use and kept for the process (a channel's sender,
        say: built from the runtime, reached through it)."""
        hit = self._built.get(name)
        if hit is None:
            with self._lock:
                hit = self._built.get(name)
                if hit is None:
                    hit = self._built[name] = build()
        return hit

    def forget(self, name: str) -> None:
        """Drop what `once` built under `name`: the next use builds it anew (new settings)."""
        with self._lock:
            self._built.pop(name, None)

    @property
    def provider(self) -> SmsProvider:
        """The process's one client of the provider (texts, media, recordings), shared by its
        threads (its HTTP client keeps what it records per thread)."""
        client: SmsProvider = self.once("provider", lambda: provider_from_config(self.settings))
        return client

    @property
    def limiter(self) -> Limiter:
        """The rate limiter (GCRA) of the provider's senders and of requests: in Redis, shared
        by every process and host, when REDIS_URL is set; in memory in the embedded mode. A
        Redis that does not answer within a second raises rather than hold anyone: a request
        is then not limited, a text waits for the sweeper."""

        def build() -> Limiter:
            if self.redis_url:
                return RedisLimiter(redis.Redis.from_url(self.redis_url, socket_timeout=1))
            return LocalLimiter()

        limiter: Limiter = self.once("limiter", build)
        return limiter

    def install(self, app: Flask) -> None:
        app.extensions[KEY] = self


def runtime(app: Flask | None = None) -> Runtime:
    """The runtime of `app`, by default the current one (a request's or a task's)."""
    rt: Runtime = (app or current_app).extensions[KEY]
    return rt
