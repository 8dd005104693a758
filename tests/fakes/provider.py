"""A fake of the SMS provider (Twilio's Messages REST API, 2010-04-01) for e2e tests and benches.

It is a real HTTP/1.1 server (asyncio, keep-alive, one event loop in a background thread) on
127.0.0.1, so the product talks to it with the official twilio client exactly as in production::

    with FakeProvider(account_sid="AC" + "0" * 32, auth_token="tok") as fake:
        client = Client("AC" + "0" * 32, "tok")        # TWILIO_EDGE / TWILIO_REGION unset!
        client.api.base_url = fake.base_url             # every Messages call goes to the fake
        client.messages.create(to="+393331234567", from_="+390612345678", body="Ciao")
        fake.sent_to("+393331234567")

What it does like the real provider
    * ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form: ``To``, ``From`` or
      ``MessagingServiceSid``, ``Body``, ``StatusCallback``, ``MediaUrl``...): HTTP Basic auth
      (account sid + auth token, or an API key + secret) else 401/20003; 400 with 21604 (no
      To), 21603 (no From nor MessagingServiceSid), 21602 (no Body nor MediaUrl), 21617 (Body
      over 1,600 chars), 21211 (To not E.164), 21606 (From not one of ``owned_numbers``, when
      given); success is 201 with Twilio's JSON (status ``queued``, or ``accepted`` with a
      Messaging Service and no From, as the real one; ``num_segments`` by GSM-7/UCS-2).
    * ``GET .../Messages.json`` (``To``, ``From``, ``DateSent``/``DateSent<``/``DateSent>``,
      ``PageSize``, ``Page``): Twilio's list envelope, newest first, with ``next_page_uri``
      paging; ``GET .../Messages/{Sid}.json`` (404/20404 when unknown).
    * Media (:meth:`FakeProvider.add_media`): ``GET .../Messages/MM.../Media/ME...`` needs
      Basic auth and answers ``307`` to a storage path on the fake (no auth there, like a
      pre-signed storage URL) that serves the bytes; ``....json`` gives the media metadata.
    * Errors are Twilio's legacy JSON ``{"code", "message", "more_info", "status"}``, so the
      twilio client raises :class:`twilio.base.exceptions.TwilioRestException`; 429 carries
      ``Retry-After`` as a header only (the twilio exception does NOT expose response headers:
      read it from the http client, see tests/test_fake_provider.py).
    * Status callbacks: for each accepted message with ``StatusCallback``, form POSTs signed
      with ``X-Twilio-Signature`` (``RequestValidator(token).compute_signature(url, params)``),
      for ``sent`` then ``delivered`` (``queued`` first with a Messaging Service); never for the
      first status. Failures (connection errors, 5xx) are retried once, then dropped and logged.
      Delivered callbacks carry an extra ``RawDlrDoneDate`` field, as the real ones do.

Knobs (all reset by :meth:`FakeProvider.reset`)
    * ``fake.behave(to, kind, **opts)``; kinds: ``opted_out`` (21610), ``invalid`` (21211),
      ``not_mobile`` (21614), ``rate_limited`` (429/20429, ``times=1``, ``retry_after=1``),
      ``server_error`` (``times=1``, ``status=500``), ``slow`` (``seconds``), ``undelivered``
      (``error_code=30003``), ``failed`` (``error_code=30008``), ``normal`` (forget the number).
      Several kinds can be active for one number (e.g. ``slow`` and ``undelivered``).
    * ``fake.fail_next(n, kind="server_error", **opts)``: the next ``n`` send requests,
      whatever the destination, behave as ``kind`` (each fails once for 429/5xx kinds).
    * ``fake.delay`` (seconds added to every API answer), ``fake.callbacks`` (False: none),
      ``fake.callbacks_out_of_order`` (True: all callbacks of a message posted after its final
      status, in reverse order), ``fake.duplicate_callbacks`` (True: each one posted twice, as
      Twilio's webhook retry does), ``fake.status_interval`` (seconds between status steps).
      Callback options are read when a message is accepted.
    * ``slow`` and ``delay`` hold the *answer*: the message is already accepted (and, for
      429/5xx kinds, the counter already consumed) when the client sees its timeout, as with a
      real provider that is slow to answer.

Inspection: ``fake.messages``, ``fake.requests`` (every send attempt with its HTTP status),
``fake.callback_log``, ``fake.sent_to(number)``, ``fake.message(sid)``,
``fake.wait_for_callbacks(n)``, ``fake.wait_idle()``.

Separate process (its own GIL, for benchmarks, or to share one fake between processes)::

    python -m tests.fakes.provider --port 0 --callback-token tok   # prints "READY <port>"

serves until SIGTERM/SIGINT. ``--account-sid``/``--auth-token`` set the credentials
(defaults ``AC000...0`` and the callback token). Control over HTTP, no auth:
``GET /_fake/messages``, ``GET /_fake/requests``, ``GET /_fake/callbacks``,
``POST /_fake/behave`` ``{"to", "kind", ...opts}``, ``POST /_fake/fail_next``
``{"n", "kind", ...opts}``, ``POST /_fake/config`` ``{"delay", "callbacks",
"callbacks_out_of_order", "duplicate_callbacks", "status_interval"}``, ``POST /_fake/reset``,
``POST /_fake/media`` (raw bytes + Content-Type; answers ``{"url"}``), ``GET /_fake/health``.
:class:`FakeProviderProcess` starts/stops such a process and wraps those calls.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import heapq
import http
import itertools
import json
import logging
import math
import re
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests
from requests import Session as HttpSession
from twilio.request_validator import RequestValidator

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN = "tok"
MAX_BODY = 1600
MAX_REQUEST_BYTES = 20 * 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[2]

KINDS = {
    "opted_out": frozenset(),
    "invalid": frozenset(),
    "not_mobile": frozenset(),
    "rate_limited": frozenset({"times", "retry_after"}),
    "server_error": frozenset({"times", "status"}),
    "slow": frozenset({"seconds"}),
    "undelivered": frozenset({"error_code"}),
    "failed": frozenset({"error_code"}),
    "normal": frozenset(),
}
_PERMANENT = {
    "opted_out": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "invalid": (400, 21211, "Invalid 'To' Phone Number: {to}"),
    "not_mobile": (400, 21614, "'To' number is not a valid mobile number"),
}

# GSM 03.38 default alphabet and extension table (extension characters cost two septets).
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = frozenset("\f^{}\\[~]|€")
_E164 = re.compile(r"\+[1-9]\d{5,14}")
_SEPARATORS = re.compile(r"[\s\-().]")
_MESSAGES = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages\.json")
_MESSAGE = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)\.json")
_MEDIA_LIST = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)/Media\.json")
_MEDIA = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)/Media/([^/.]+)(\.json)?")
_STORAGE = re.compile(r"/_fake/storage/([0-9a-f]+)/([^/]+)")


def segments(text: str) -> int:
    """SMS segments of a text: GSM-7 160/153 septets, otherwise UCS-2 70/67 code units."""
    if all(c in _GSM7 or c in _GSM7_EXT for c in text):
        n = sum(2 if c in _GSM7_EXT else 1 for c in text)
        single, multi = 160, 153
    else:
        n = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if n <= single else math.ceil(n / multi)


def normalize_number(number: str) -> str:
    """Strip spaces, dashes, dots and parentheses (keeps a ``whatsapp:`` style prefix)."""
    prefix, sep, rest = number.strip().rpartition(":")
    return prefix + sep + _SEPARATORS.sub("", rest)


def _is_e164(number: str) -> bool:
    return bool(_E164.fullmatch(number.rpartition(":")[2]))


def _rfc2822(dt: datetime | None) -> str | None:
    return format_datetime(dt) if dt is not None else None


def _error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


# --------------------------------------------------------------------------------- HTTP layer


class _Running:
    """A fake used as a context manager: started on entry, stopped on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class _Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0


def _json_reply(status: int, payload: Any, **kw: Any) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), **kw)


_REASONS = {s.value: s.phrase for s in http.HTTPStatus}


class _AsyncHttpServer:
    """Minimal HTTP/1.1 server (keep-alive, Content-Length or chunked bodies) on an asyncio
    loop in a daemon thread; ``handler`` is synchronous and must be quick, ``_Reply.delay``
    postpones the answer without holding the loop."""

    def __init__(self, handler: Any, host: str, port: int) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[asyncio.Task[None]] = set()

    def start(self) -> int:
        self._thread = threading.Thread(target=self._run, name="fake-provider-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake provider HTTP server did not start")
        if self._error is not None:
            raise RuntimeError("fake provider HTTP server failed") from self._error
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(
            self._connection, self._host, self._port, backlog=1024, limit=64 * 1024
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await server.wait_closed()

    async def _read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    return b"".join(parts)
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
        length = int(headers.get("content-length", "0") or "0")
        if length > MAX_REQUEST_BYTES:
            raise ValueError("request body too large")
        return await reader.readexactly(length) if length else b""

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    writer.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
                    writer.write(b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                    break
                lines = head[:-4].decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\n")
                    writer.write(b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                    break
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    key, value = name.strip().lower(), value.strip()
                    headers[key] = f"{headers[key]}, {value}" if key in headers else value
                try:
                    body = await self._read_body(reader, headers)
                except ValueError:
                    writer.write(b"HTTP/1.1 413 Content Too Large\r\n")
                    writer.write(b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                    break
                conn_header = headers.get("connection", "").lower()
                keep_alive = (
                    "close" not in conn_header
                    if version == "HTTP/1.1"
                    else "keep-alive" in conn_header
                )
                split = urlsplit(target)
                req = _Request(
                    method.upper(),
                    split.path,
                    parse_qsl(split.query, keep_blank_values=True),
                    headers,
                    body,
                )
                try:
                    reply = self._handler(req)
                except Exception:
                    log.exception("fake provider: handler failed for %s %s", method, target)
                    reply = _json_reply(500, _error(500, 20500, "Internal Server Error"))
                if reply.delay > 0:
                    await asyncio.sleep(reply.delay)
                out = [
                    f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}",
                    f"Content-Type: {reply.content_type}",
                    f"Content-Length: {len(reply.body)}",
                    f"Connection: {'keep-alive' if keep_alive else 'close'}",
                ]
                out.extend(f"{k}: {v}" for k, v in reply.headers)
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
                if req.method != "HEAD" and reply.body:
                    writer.write(reply.body)
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()


# ------------------------------------------------------------------------------- the provider


@dataclass
class _Message:
    sid: str
    to: str
    from_: str | None
    body: str
    messaging_service_sid: str | None
    status_callback: str | None
    media_urls: list[str]
    num_segments: int
    accepted_at: float
    date_created: datetime
    status: str
    steps: list[str]  # the statuses still to come, in their true order
    error_code: int | None
    final_error_code: int | None
    callback_plan: str  # "none", "in_order" or "reversed"
    date_sent: datetime | None = None
    date_updated: datetime | None = None
    price: str | None = None
    # the sender a messaging service picked; shown from "queued" on
    service_from: str | None = None
    # statuses reached but not yet reported (out-of-order plan)
    unreported: list[str] = field(default_factory=list)


@dataclass
class _Media:
    sid: str
    message_sid: str
    content: bytes
    content_type: str
    token: str
    date_created: datetime


class FakeProvider(_Running):
    """An in-process fake of Twilio's Messages API; see the module docstring.

    Construct, then :meth:`start` (or use it as a context manager) and point the client at
    :attr:`base_url`; :meth:`stop` ends the server and every thread it started.
    """

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        callback_token: str | None = None,
        api_keys: Mapping[str, str] | None = None,
        owned_numbers: Iterable[str] | None = None,
        messaging_service_number: str = "+15005550006",
        status_interval: float = 0.02,
        callback_workers: int = 4,
        callback_timeout: float = 5.0,
        callback_retry_delay: float = 0.1,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        #: the secret callbacks are signed with (the real provider uses the auth token)
        self.callback_token = callback_token if callback_token is not None else auth_token
        self.api_keys = dict(api_keys or {})
        self.owned_numbers = (
            {normalize_number(n) for n in owned_numbers} if owned_numbers is not None else None
        )
        self.messaging_service_number = messaging_service_number
        self.host = host
        self.callback_workers = callback_workers
        self.callback_timeout = callback_timeout
        self.callback_retry_delay = callback_retry_delay
        self._validator = RequestValidator(self.callback_token)
        self._server = _AsyncHttpServer(self._handle, host, port)
        self._port = 0
        self._lock = threading.Lock()
        self._sched_cv = threading.Condition(self._lock)
        self._idle_cv = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self._outstanding = 0  # heap entries + callback tasks not finished
        self._gen = 0
        self._running = False
        self._sched_thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._sessions: list[HttpSession] = []
        self._status_interval_default = status_interval
        self._init_state()

    def _init_state(self) -> None:
        self.delay: float = 0.0
        self.callbacks: bool = True
        self.callbacks_out_of_order: bool = False
        self.duplicate_callbacks: bool = False
        self.status_interval: float = self._status_interval_default
        self._messages: list[_Message] = []
        self._by_sid: dict[str, _Message] = {}
        self._requests: list[dict[str, Any]] = []
        self._callback_log: list[dict[str, Any]] = []
        self._behaviours: dict[str, dict[str, dict[str, Any]]] = {}
        self._one_shot: deque[tuple[str, dict[str, Any]]] = deque()
        self._media: dict[str, _Media] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        if self._running:
            return self
        self._executor = ThreadPoolExecutor(
            max_workers=self.callback_workers, thread_name_prefix="fake-provider-callback"
        )
        self._running = True
        self._sched_thread = threading.Thread(
            target=self._scheduler, name="fake-provider-scheduler", daemon=True
        )
        self._sched_thread.start()
        try:
            self._port = self._server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the HTTP server, drop pending status changes, wait for callbacks in flight."""
        self._server.stop()
        with self._lock:
            self._running = False
            self._gen += 1
            self._outstanding -= len(self._heap)
            self._heap.clear()
            self._sched_cv.notify_all()
            self._idle_cv.notify_all()
        if self._sched_thread is not None:
            self._sched_thread.join(10)
            self._sched_thread = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        for session in self._sessions:
            session.close()
        self._sessions.clear()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("FakeProvider is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: give it to ``client.api.base_url``."""
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ knobs

    def behave(self, to: str, kind: str, **opts: Any) -> None:
        """Make sends to ``to`` behave as ``kind`` (see module docstring); ``normal`` clears."""
        extra = set(opts) - KINDS.get(kind, frozenset()) if kind in KINDS else None
        if extra is None:
            raise ValueError(f"unknown behaviour {kind!r}; one of {sorted(KINDS)}")
        if extra:
            raise TypeError(f"behaviour {kind!r} takes no option(s) {sorted(extra)}")
        number = normalize_number(to)
        with self._lock:
            if kind == "normal":
                self._behaviours.pop(number, None)
                return
            entry = dict(opts)
            if kind in ("rate_limited", "server_error"):
                entry["remaining"] = int(entry.pop("times", 1))
            self._behaviours.setdefault(number, {})[kind] = entry

    def fail_next(self, n: int, kind: str = "server_error", **opts: Any) -> None:
        """The next ``n`` send requests (any destination) behave as ``kind``."""
        if kind not in KINDS or kind == "normal":
            raise ValueError(f"unknown behaviour {kind!r}")
        extra = set(opts) - KINDS[kind] - {"times"}
        if extra:
            raise TypeError(f"behaviour {kind!r} takes no option(s) {sorted(extra)}")
        opts.pop("times", None)
        with self._lock:
            self._one_shot.extend((kind, dict(opts)) for _ in range(n))

    def configure(self, **settings: Any) -> None:
        """Set ``delay``, ``callbacks``, ``callbacks_out_of_order``, ``duplicate_callbacks``,
        ``status_interval`` (what ``POST /_fake/config`` does)."""
        allowed = {
            "delay",
            "callbacks",
            "callbacks_out_of_order",
            "duplicate_callbacks",
            "status_interval",
        }
        extra = set(settings) - allowed
        if extra:
            raise TypeError(f"unknown setting(s) {sorted(extra)}")
        for key, value in settings.items():
            setattr(self, key, value)

    def reset(self) -> None:
        """Forget messages, requests, callbacks, media, behaviours; knobs back to defaults."""
        with self._lock:
            self._gen += 1
            self._outstanding -= len(self._heap)
            self._heap.clear()
            self._init_state()
            self._idle_cv.notify_all()

    def add_media(
        self, content: bytes, content_type: str, *, message_sid: str | None = None
    ) -> str:
        """Store media and return its provider URL (``.../Messages/MM.../Media/ME...``)."""
        media = _Media(
            sid="ME" + secrets.token_hex(16),
            message_sid=message_sid or "MM" + secrets.token_hex(16),
            content=bytes(content),
            content_type=content_type,
            token=secrets.token_hex(16),
            date_created=datetime.now(UTC),
        )
        with self._lock:
            self._media[media.sid] = media
        return f"{self.base_url}{self._media_uri(media)}"

    def signature(self, url: str, params: Mapping[str, str]) -> str:
        """The ``X-Twilio-Signature`` the provider would send for a POST of ``params`` to ``url``."""
        return str(self._validator.compute_signature(url, dict(params)))

    # ------------------------------------------------------------------ inspection

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Accepted messages, oldest first (snapshots)."""
        with self._lock:
            return [self._public(m) for m in self._messages]

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every send attempt (accepted or refused) with its HTTP ``status`` and error ``code``."""
        with self._lock:
            return [dict(r) for r in self._requests]

    @property
    def callback_log(self) -> list[dict[str, Any]]:
        """One entry per callback POST (after retries): sid, status, url, ok, http_status..."""
        with self._lock:
            return [dict(c) for c in self._callback_log]

    def sent_to(self, number: str) -> list[dict[str, Any]]:
        number = normalize_number(number)
        with self._lock:
            return [self._public(m) for m in self._messages if m.to == number]

    def message(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            m = self._by_sid.get(sid)
            return self._public(m) if m else None

    def wait_for_callbacks(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``n`` callback POSTs are done (delivered or dropped); return the log."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._callback_log) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._callback_log)} callbacks of {n} after {timeout}s"
                    )
                self._idle_cv.wait(left)
            return [dict(c) for c in self._callback_log]

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every message reached its final status and its callbacks were posted."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._outstanding > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle_cv.wait(left)
            return True

    # ------------------------------------------------------------------ representation

    def _public(self, m: _Message) -> dict[str, Any]:
        return {
            "sid": m.sid,
            "to": m.to,
            "from": m.from_ or m.service_from,
            "body": m.body,
            "messaging_service_sid": m.messaging_service_sid,
            "status_callback": m.status_callback,
            "media_urls": list(m.media_urls),
            "num_segments": m.num_segments,
            "status": m.status,
            "error_code": m.error_code,
            "accepted_at": m.accepted_at,
            "date_created": _rfc2822(m.date_created),
        }

    def _account_uri(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}"

    def _media_uri(self, media: _Media) -> str:
        return f"{self._account_uri()}/Messages/{media.message_sid}/Media/{media.sid}"

    def _resource(self, m: _Message) -> dict[str, Any]:
        uri = f"{self._account_uri()}/Messages/{m.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": m.body,
            "date_created": _rfc2822(m.date_created),
            "date_sent": _rfc2822(m.date_sent),
            "date_updated": _rfc2822(m.date_updated or m.date_created),
            "direction": "outbound-api",
            "error_code": m.error_code,
            "error_message": None,
            "from": m.from_ or m.service_from,
            "messaging_service_sid": m.messaging_service_sid,
            "num_media": str(len(m.media_urls)),
            "num_segments": str(m.num_segments),
            "price": m.price,
            "price_unit": "USD",
            "sid": m.sid,
            "status": m.status,
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": m.to,
            "uri": f"{uri}.json",
        }

    # ------------------------------------------------------------------ request handling

    def _authorized(self, req: _Request, account: str) -> bool:
        auth = req.headers.get("authorization", "")
        scheme, _, encoded = auth.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if account != self.account_sid:
            return False
        if user == self.account_sid:
            return secrets.compare_digest(password, self.auth_token)
        secret = self.api_keys.get(user)
        return secret is not None and secrets.compare_digest(password, secret)

    def _handle(self, req: _Request) -> _Reply:
        path = req.path
        if path.startswith("/_fake/"):
            return self._control(req)
        if not path.startswith(f"/{API_VERSION}/Accounts/"):
            return self._not_found(path)
        account = path.split("/")[3]
        if not self._authorized(req, account):
            reply = _json_reply(
                401,
                {
                    **_error(401, 20003, "Authentication Error - invalid username"),
                    "detail": "Your AccountSid or AuthToken was incorrect.",
                },
                headers=[("WWW-Authenticate", 'Basic realm="Twilio API"')],
            )
            if req.method == "POST" and _MESSAGES.fullmatch(path):
                self._log_request(req, reply, None)
            return reply
        if _MESSAGES.fullmatch(path):
            if req.method == "POST":
                return self._create(req)
            if req.method in ("GET", "HEAD"):
                return self._list(req)
            return self._not_allowed()
        if match := _MESSAGE.fullmatch(path):
            if req.method not in ("GET", "HEAD"):
                return self._not_allowed()
            with self._lock:
                m = self._by_sid.get(match.group(2))
                return _json_reply(200, self._resource(m)) if m else self._not_found(path)
        if match := _MEDIA_LIST.fullmatch(path):
            return self._media_list(req, match.group(2))
        if match := _MEDIA.fullmatch(path):
            return self._media_fetch(req, match.group(2), match.group(3), bool(match.group(4)))
        return self._not_found(path)

    def _not_found(self, path: str) -> _Reply:
        message = f"The requested resource {path} was not found"
        return _json_reply(404, _error(404, 20404, message))

    def _not_allowed(self) -> _Reply:
        return _json_reply(405, _error(405, 20004, "Method not allowed"))

    def _log_request(
        self, req: _Request, reply: _Reply, sid: str | None, params: dict[str, str] | None = None
    ) -> None:
        if params is None:
            pairs = parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True)
            params = dict(reversed(pairs))  # the first value of each field, as _create reads it
        code = None
        if reply.status >= 400:
            try:
                code = json.loads(reply.body).get("code")
            except ValueError:
                code = None
        entry = {
            "to": params.get("To"),
            "from": params.get("From"),
            "messaging_service_sid": params.get("MessagingServiceSid"),
            "body": params.get("Body"),
            "status_callback": params.get("StatusCallback"),
            "status": reply.status,
            "code": code,
            "sid": sid,
            "at": time.monotonic(),
        }
        with self._lock:
            self._requests.append(entry)

    def _create(self, req: _Request) -> _Reply:
        pairs = parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True)
        params: dict[str, str] = {}
        for key, value in pairs:
            params.setdefault(key, value)
        media_urls = [v for k, v in pairs if k == "MediaUrl" and v]
        to = normalize_number(params.get("To", ""))
        from_ = params.get("From", "").strip() or None
        service = params.get("MessagingServiceSid", "").strip() or None
        body = params.get("Body", "")
        callback = params.get("StatusCallback", "").strip() or None
        now = time.monotonic()
        with self._lock:
            delay = float(self.delay)
            kinds: dict[str, dict[str, Any]] = {
                k: dict(v) for k, v in self._behaviours.get(to, {}).items()
            }
            one_shot = self._one_shot.popleft() if self._one_shot else None
            if one_shot is not None:
                kind, opts = one_shot
                kinds[kind] = {**opts, "remaining": 1, "one_shot": True}
            if "slow" in kinds:
                delay += float(kinds["slow"].get("seconds", 1.0))
            reply: _Reply | None = None
            for kind in ("rate_limited", "server_error"):
                entry = kinds.get(kind)
                if entry is None or entry["remaining"] <= 0:
                    continue
                if not entry.get("one_shot"):
                    self._behaviours[to][kind]["remaining"] -= 1
                if kind == "rate_limited":
                    retry_after = math.ceil(float(entry.get("retry_after", 1)))
                    reply = _json_reply(
                        429,
                        _error(429, 20429, "Too Many Requests"),
                        headers=[("Retry-After", str(retry_after))],
                    )
                else:
                    status = int(entry.get("status", 500))
                    reply = _json_reply(status, _error(status, 20500, "Internal Server Error"))
                break
            if reply is None:
                reply = self._validate(to, from_, service, body, media_urls, kinds)
            sid = None
            if reply is None:
                m = self._accept(to, from_, service, body, callback, media_urls, kinds, now)
                sid = m.sid
                reply = _json_reply(201, self._resource(m))
        reply.delay = delay
        self._log_request(req, reply, sid, params)
        return reply

    def _validate(
        self,
        to: str,
        from_: str | None,
        service: str | None,
        body: str,
        media_urls: list[str],
        kinds: dict[str, dict[str, Any]],
    ) -> _Reply | None:
        def err(status: int, code: int, message: str) -> _Reply:
            return _json_reply(status, _error(status, code, message))

        if not to:
            return err(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service:
            return err(400, 21603, "A 'From' phone number is required.")
        if not body and not media_urls:
            return err(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY:
            return err(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if not _is_e164(to):
            return err(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if (
            from_
            and self.owned_numbers is not None
            and normalize_number(from_) not in (self.owned_numbers)
        ):
            return err(
                400,
                21606,
                f"The From phone number {from_} is not a valid, SMS-capable inbound phone "
                "number or short code for your account.",
            )
        for kind, (status, code, message) in _PERMANENT.items():
            if kind in kinds:
                return err(status, code, message.format(to=to))
        return None

    def _accept(
        self,
        to: str,
        from_: str | None,
        service: str | None,
        body: str,
        callback: str | None,
        media_urls: list[str],
        kinds: dict[str, dict[str, Any]],
        now: float,
    ) -> _Message:
        # lock held
        if "failed" in kinds:
            steps = ["failed"]
            final_error: int | None = int(kinds["failed"].get("error_code", 30008))
        elif "undelivered" in kinds:
            steps = ["sent", "undelivered"]
            final_error = int(kinds["undelivered"].get("error_code", 30003))
        else:
            steps = ["sent", "delivered"]
            final_error = None
        status = "queued"
        if service and not from_:
            status = "accepted"
            steps.insert(0, "queued")
        if callback and self.callbacks:
            plan = "reversed" if self.callbacks_out_of_order else "in_order"
        else:
            plan = "none"
        m = _Message(
            sid="SM" + secrets.token_hex(16),
            to=to,
            from_=from_,
            body=body,
            messaging_service_sid=service,
            status_callback=callback,
            media_urls=media_urls,
            num_segments=segments(body) if body else 1,
            accepted_at=now,
            date_created=datetime.now(UTC).replace(microsecond=0),
            status=status,
            steps=steps,
            error_code=None,
            final_error_code=final_error,
            callback_plan=plan,
        )
        self._messages.append(m)
        self._by_sid[m.sid] = m
        self._push(now + self.status_interval, m.sid)
        return m

    def _list(self, req: _Request) -> _Reply:
        query = dict(req.query)
        try:
            size = max(1, min(1000, int(query.get("PageSize", "50"))))
            page = max(0, int(query.get("Page", "0")))
        except ValueError:
            return _json_reply(400, _error(400, 20001, "Invalid paging parameter"))
        filters: dict[str, str] = {
            k: v for k, v in query.items() if k in ("To", "From") or k.startswith("DateSent")
        }
        to = normalize_number(filters["To"]) if "To" in filters else None
        from_ = normalize_number(filters["From"]) if "From" in filters else None
        bounds = []
        for key, op in (("DateSent", "="), ("DateSent<", "<"), ("DateSent>", ">")):
            if key in filters:
                try:
                    bounds.append((op, datetime.fromisoformat(filters[key].replace("Z", "+00:00"))))
                except ValueError:
                    return _json_reply(400, _error(400, 20001, f"Invalid {key}"))

        def keep(m: _Message) -> bool:
            if to is not None and m.to != to:
                return False
            sender = m.from_ or m.service_from
            if from_ is not None and (sender is None or normalize_number(sender) != from_):
                return False
            for op, bound in bounds:
                sent = m.date_sent
                if sent is None:
                    return False
                bound_utc = bound if bound.tzinfo else bound.replace(tzinfo=UTC)
                if op == "=" and sent.date() != bound_utc.date():
                    return False
                if op == "<" and sent > bound_utc:
                    return False
                if op == ">" and sent < bound_utc:
                    return False
            return True

        with self._lock:
            matching = [m for m in reversed(self._messages) if keep(m)]
            start = page * size
            chunk = matching[start : start + size]
            records = [self._resource(m) for m in chunk]
        base = f"{self._account_uri()}/Messages.json"
        keep_query = [(k, v) for k, v in req.query if k in filters]

        def page_uri(n: int, token: str | None = None) -> str:
            q = [*keep_query, ("PageSize", str(size)), ("Page", str(n))]
            if token:
                q.append(("PageToken", token))
            return f"{base}?{urlencode(q)}"

        has_next = start + size < len(matching)
        payload = {
            "end": start + len(chunk) - 1 if chunk else start,
            "first_page_uri": page_uri(0),
            "messages": records,
            "next_page_uri": page_uri(page + 1, "PA" + chunk[-1].sid) if has_next else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": page_uri(page - 1, "PB" + chunk[0].sid)
            if page > 0 and chunk
            else None,
            "start": start,
            "uri": page_uri(page),
        }
        return _json_reply(200, payload)

    def _media_metadata(self, media: _Media) -> dict[str, Any]:
        return {
            "account_sid": self.account_sid,
            "content_type": media.content_type,
            "date_created": _rfc2822(media.date_created),
            "date_updated": _rfc2822(media.date_created),
            "parent_sid": media.message_sid,
            "sid": media.sid,
            "uri": f"{self._media_uri(media)}.json",
        }

    def _media_list(self, req: _Request, message_sid: str) -> _Reply:
        with self._lock:
            items = [m for m in self._media.values() if m.message_sid == message_sid]
        uri = f"{self._account_uri()}/Messages/{message_sid}/Media.json"
        return _json_reply(
            200,
            {
                "end": max(0, len(items) - 1),
                "first_page_uri": f"{uri}?PageSize=50&Page=0",
                "media_list": [self._media_metadata(m) for m in items],
                "next_page_uri": None,
                "page": 0,
                "page_size": 50,
                "previous_page_uri": None,
                "start": 0,
                "uri": f"{uri}?PageSize=50&Page=0",
            },
        )

    def _media_fetch(self, req: _Request, message_sid: str, sid: str, as_json: bool) -> _Reply:
        with self._lock:
            media = self._media.get(sid)
        if media is None or media.message_sid != message_sid:
            return self._not_found(req.path)
        if req.method == "DELETE":
            with self._lock:
                self._media.pop(sid, None)
            return _Reply(204, content_type="text/plain")
        if req.method not in ("GET", "HEAD"):
            return self._not_allowed()
        if as_json:
            return _json_reply(200, self._media_metadata(media))
        host = req.headers.get("host") or f"{self.host}:{self.port}"
        location = f"http://{host}/_fake/storage/{media.token}/{media.sid}"
        return _Reply(
            307,
            b"",
            content_type="text/plain",
            headers=[("Location", location)],
        )

    def _control(self, req: _Request) -> _Reply:
        path, method = req.path, req.method
        if match := _STORAGE.fullmatch(path):
            with self._lock:
                media = self._media.get(match.group(2))
            if media is None or not secrets.compare_digest(media.token, match.group(1)):
                return _Reply(404, b"Not Found", content_type="text/plain")
            return _Reply(200, media.content, content_type=media.content_type)
        try:
            data = json.loads(req.body) if req.body and method == "POST" else {}
        except ValueError:
            data = None
        try:
            if method == "GET" and path == "/_fake/health":
                return _json_reply(200, {"ok": True, "port": self.port})
            if method == "GET" and path == "/_fake/messages":
                return _json_reply(200, self.messages)
            if method == "GET" and path == "/_fake/requests":
                return _json_reply(200, self.requests)
            if method == "GET" and path == "/_fake/callbacks":
                return _json_reply(200, self.callback_log)
            if method == "POST" and path == "/_fake/media":
                ctype = req.headers.get("content-type", "application/octet-stream")
                return _json_reply(200, {"url": self.add_media(req.body, ctype)})
            if method == "POST" and path == "/_fake/reset":
                self.reset()
                return _json_reply(200, {"ok": True})
            if method == "POST" and path in ("/_fake/behave", "/_fake/fail_next", "/_fake/config"):
                if not isinstance(data, dict):
                    return _json_reply(400, {"error": "JSON object expected"})
                if path == "/_fake/behave":
                    self.behave(data.pop("to"), data.pop("kind"), **data)
                elif path == "/_fake/fail_next":
                    self.fail_next(int(data.pop("n")), data.pop("kind", "server_error"), **data)
                else:
                    self.configure(**data)
                return _json_reply(200, {"ok": True})
        except (KeyError, TypeError, ValueError) as exc:
            return _json_reply(400, {"error": f"{exc.__class__.__name__}: {exc}"})
        return _json_reply(404, {"error": f"no fake control endpoint {method} {path}"})

    # ------------------------------------------------------------------ status progression

    def _push(self, due: float, sid: str) -> None:
        # lock held
        heapq.heappush(self._heap, (due, next(self._seq), self._gen, sid))
        self._outstanding += 1
        self._sched_cv.notify()

    def _done(self) -> None:
        # lock held
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._idle_cv.notify_all()

    def _scheduler(self) -> None:
        while True:
            with self._lock:
                while self._running:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._sched_cv.wait(self._heap[0][0] - now if self._heap else None)
                if not self._running:
                    return
                now = time.monotonic()
                batch = []
                while self._heap and self._heap[0][0] <= now:
                    batch.append(heapq.heappop(self._heap))
            for _, _, gen, sid in batch:
                self._step(gen, sid)

    def _step(self, gen: int, sid: str) -> None:
        """Move a message to its next status; post callbacks as its plan says."""
        with self._lock:
            m = self._by_sid.get(sid)
            if gen != self._gen or m is None or not m.steps:
                self._done()
                return
            status = m.steps.pop(0)
            self._apply(m, status)
            final = not m.steps
            post: list[str] = []
            if m.callback_plan == "in_order":
                post = [status]
            elif m.callback_plan == "reversed":
                m.unreported.append(status)
                if final:
                    post = list(reversed(m.unreported))
            if post and self._executor is not None and self._running:
                self._outstanding += 1
                chain = m.callback_plan == "in_order" and not final
                self._executor.submit(self._post_task, gen, m, post, chain)
            elif not final:
                self._push(time.monotonic() + self.status_interval, sid)
            self._done()

    def _apply(self, m: _Message, status: str) -> None:
        # lock held
        now = datetime.now(UTC).replace(microsecond=0)
        m.status = status
        m.date_updated = now
        if status == "queued" and m.service_from is None and not m.from_:
            m.service_from = self.messaging_service_number
        if status == "sent":
            m.date_sent = now
            m.price = f"{-0.0079 * m.num_segments:.5f}"
        if status in ("undelivered", "failed"):
            m.error_code = m.final_error_code

    def _callback_params(self, m: _Message, status: str) -> dict[str, str]:
        params = {
            "ApiVersion": API_VERSION,
            "AccountSid": self.account_sid,
            "MessageSid": m.sid,
            "SmsSid": m.sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "To": m.to,
            "From": m.from_ or m.service_from or "",
        }
        if m.messaging_service_sid:
            params["MessagingServiceSid"] = m.messaging_service_sid
        if status in ("undelivered", "failed") and m.final_error_code is not None:
            params["ErrorCode"] = str(m.final_error_code)
        if status == "delivered":
            params["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
        return params

    def _session(self) -> HttpSession:
        session = getattr(self._local, "session", None)
        if session is None:
            session = HttpSession()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _post_task(self, gen: int, m: _Message, statuses: list[str], chain: bool) -> None:
        try:
            for status in statuses:
                with self._lock:
                    if gen != self._gen or not self._running:
                        return
                    params = self._callback_params(m, status)
                    url = m.status_callback
                    duplicate = self.duplicate_callbacks
                assert url is not None
                self._post_callback(gen, m.sid, status, url, params, duplicate)
        except Exception:
            log.exception("fake provider: callback task for %s failed", m.sid)
        finally:
            with self._lock:
                if chain and gen == self._gen and self._running and m.steps:
                    due = max(time.monotonic(), m.accepted_at)
                    self._push(due + self.status_interval, m.sid)
                self._done()

    def _post_callback(
        self, gen: int, sid: str, status: str, url: str, params: dict[str, str], duplicate: bool
    ) -> None:
        headers = {
            "X-Twilio-Signature": self._validator.compute_signature(url, params),
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            "User-Agent": "TwilioProxy/1.1",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "*/*",
        }
        for copy in range(2 if duplicate else 1):
            entry: dict[str, Any] = {
                "sid": sid,
                "status": status,
                "url": url,
                "params": dict(params),
                "ok": False,
                "http_status": None,
                "error": None,
                "attempts": 0,
                "duplicate": copy > 0,
            }
            for attempt in (1, 2):
                entry["attempts"] = attempt
                try:
                    r = self._session().post(
                        url,
                        data=params,
                        headers=headers,
                        timeout=self.callback_timeout,
                        allow_redirects=False,
                    )
                    r.close()
                    entry["http_status"] = r.status_code
                    entry["error"] = None
                    if r.status_code < 500:
                        entry["ok"] = r.status_code < 400
                        break
                    entry["error"] = f"HTTP {r.status_code}"
                except requests.RequestException as exc:
                    entry["error"] = f"{exc.__class__.__name__}: {exc}"
                if attempt == 1:
                    time.sleep(self.callback_retry_delay)
            else:
                log.warning(
                    "fake provider: status callback %s for %s to %s dropped after retry: %s",
                    status,
                    sid,
                    url,
                    entry["error"],
                )
            entry["at"] = time.monotonic()
            with self._lock:
                if gen == self._gen:
                    self._callback_log.append(entry)
                self._idle_cv.notify_all()


# ------------------------------------------------------------------------- separate process


class FakeProviderProcess(_Running):
    """Runs ``python -m tests.fakes.provider`` in a child process and drives it over HTTP."""

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        port: int = 0,
        callback_token: str | None = None,
        python: str = sys.executable,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.callback_token = callback_token if callback_token is not None else auth_token
        self._want_port = port
        self._python = python
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0
        self._http = HttpSession()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> Self:
        cmd = [
            self._python,
            "-m",
            "tests.fakes.provider",
            "--port",
            str(self._want_port),
            "--account-sid",
            self.account_sid,
            "--auth-token",
            self.auth_token,
            "--callback-token",
            self.callback_token,
        ]
        self._proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"fake provider process did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(5)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        self._http.close()

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        r = self._http.request(method, f"{self.base_url}{path}", json=payload, timeout=10)
        r.raise_for_status()
        return r.json()

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/messages"))

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/requests"))

    @property
    def callback_log(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/callbacks"))

    def behave(self, to: str, kind: str, **opts: Any) -> None:
        self._call("POST", "/_fake/behave", {"to": to, "kind": kind, **opts})

    def fail_next(self, n: int, kind: str = "server_error", **opts: Any) -> None:
        self._call("POST", "/_fake/fail_next", {"n": n, "kind": kind, **opts})

    def configure(self, **settings: Any) -> None:
        self._call("POST", "/_fake/config", settings)

    def reset(self) -> None:
        self._call("POST", "/_fake/reset")

    def add_media(self, content: bytes, content_type: str) -> str:
        r = self._http.post(
            f"{self.base_url}/_fake/media",
            data=content,
            headers={"Content-Type": content_type},
            timeout=10,
        )
        r.raise_for_status()
        return str(r.json()["url"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake Twilio Messages API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=None, help="default: the callback token")
    parser.add_argument("--callback-token", default=None, help="signs status callbacks")
    parser.add_argument("--status-interval", type=float, default=0.02)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    auth_token = args.auth_token or args.callback_token or DEFAULT_AUTH_TOKEN
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake = FakeProvider(
        args.account_sid,
        auth_token,
        host=args.host,
        port=args.port,
        callback_token=args.callback_token,
        status_interval=args.status_interval,
    )
    with fake:
        print(f"READY {fake.port}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
