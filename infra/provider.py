"""The one adapter that talks to the SMS provider. Everything else uses the SmsProvider port.

TwilioProvider wraps the official REST client (pointed elsewhere with TWILIO_API_BASE_URL);
SandboxProvider is used when no account is configured: nothing leaves the machine, the
outbox row itself is the sandbox record that staff and the CLI see.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from cases.phone import mask_phone

log = logging.getLogger(__name__)

PERMANENT_OPT_OUT = 21610
RETRYABLE_HTTP = {429} | set(range(500, 600))


@dataclass(frozen=True)
class Sent:
    sid: str
    status: str


class SendError(Exception):
    """The provider refused or could not be reached; `retryable` says whether to try again."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None,
        http_status: int | None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.http_status is None or self.http_status in RETRYABLE_HTTP

    @property
    def opted_out(self) -> bool:
        return self.code == PERMANENT_OPT_OUT


MAX_MEDIA_REDIRECTS = 3


def check_public_host(url: str) -> None:
    """Refuse a media URL whose host is, or resolves to, an internal address: the worker would
    otherwise fetch from inside our network on an outside app's say-so (SSRF)."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise SendError("media URL must be http(s)", code=None, http_status=400)
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        # a name that does not resolve now may later: retried like a network error
        raise SendError(
            f"media host {host[:80]} does not resolve", code=None, http_status=None
        ) from None
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if not ip.is_global:
            raise SendError(
                f"media host {host[:80]} is not a public address", code=None, http_status=403
            )


def _download(
    session: Any, url: str, max_bytes: int, *, auth: tuple[str, str] | None, public_only: bool
) -> tuple[bytes, str]:
    """GET a media file, at most `max_bytes`. With `public_only` every hop of a redirect is
    checked to be a public host before it is fetched."""
    for _ in range(MAX_MEDIA_REDIRECTS + 1):
        if public_only:
            check_public_host(url)
        with session.get(
            url, stream=True, timeout=30, allow_redirects=not public_only, auth=auth
        ) as r:
            if public_only and r.is_redirect:
                url = requests.compat.urljoin(url, r.headers.get("Location", ""))
                continue
            if r.status_code != 200:
                raise SendError(
                    f"media download failed: HTTP {r.status_code}",
                    code=None,
                    http_status=r.status_code,
                )
            ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
            data = b""
            for chunk in r.iter_content(65536):
                data += chunk
                if len(data) > max_bytes:
                    raise SendError(
                        f"media larger than {max_bytes} bytes", code=None, http_status=413
                    )
            return data, ctype
    raise SendError("media URL redirects too many times", code=None, http_status=400)


class SmsProvider(Protocol):
    sandbox: bool

    def send(self, to: str, from_: str, body: str, status_callback: str | None) -> Sent: ...

    def find_sent(self, to: str, from_: str, body: str, since: datetime) -> str | None:
        """The id of a message already accepted for (to, body) since `since`, if any."""
        ...

    def fetch_media(self, url: str, max_bytes: int) -> tuple[bytes, str]: ...


class RecordingHttpClient(TwilioHttpClient):
    """Keeps the last response per thread, so a 429's Retry-After header can be read (the
    official client's own `last_response` is shared by all threads)."""

    def __init__(self, timeout: float | None) -> None:
        super().__init__(pool_connections=True, timeout=timeout)
        self._local = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Response:
        response = super().request(*args, **kwargs)
        self._local.last = response
        return response

    @property
    def last(self) -> Response | None:
        return getattr(self._local, "last", None)


class TwilioProvider:
    sandbox = False

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        base_url: str | None = None,
        timeout: float = 5.0,
        *,
        allow_private_media: bool = False,
    ) -> None:
        self.account_sid = account_sid
        self.allow_private_media = allow_private_media
        self.timeout = timeout
        self.auth_token = auth_token
        self._http = RecordingHttpClient(timeout)
        self.client = Client(account_sid, auth_token, http_client=self._http)
        if base_url:
            self.client.api.base_url = base_url.rstrip("/")
        self._media = requests.Session()
        self._own_hosts = {urlsplit(base_url).netloc.lower()} if base_url else set()

    def _retry_after(self) -> float | None:
        last = self._http.last
        headers = getattr(last, "headers", None) or {}
        value = headers.get("Retry-After") if hasattr(headers, "get") else None
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    def send(self, to: str, from_: str, body: str, status_callback: str | None) -> Sent:
        kwargs: dict[str, Any] = {"to": to, "body": body}
        if from_.startswith("MG"):
            kwargs["messaging_service_sid"] = from_
        else:
            kwargs["from_"] = from_
        if status_callback:
            kwargs["status_callback"] = status_callback
        try:
            msg = self.client.messages.create(**kwargs)
        except TwilioRestException as exc:
            raise SendError(
                str(exc.msg),
                code=exc.code,
                http_status=exc.status,
                retry_after=self._retry_after() if exc.status == 429 else None,
            ) from None
        except TwilioException as exc:  # since 9.10 some bodies raise other subclasses
            status = getattr(exc, "status", None)
            raise SendError(
                str(exc),
                code=getattr(exc, "code", None),
                http_status=status,
                retry_after=self._retry_after() if status == 429 else None,
            ) from None
        except requests.RequestException as exc:
            raise SendError(
                f"provider unreachable: {exc.__class__.__name__}", code=None, http_status=None
            ) from None
        return Sent(sid=str(msg.sid), status=str(msg.status or "queued"))

    def find_sent(self, to: str, from_: str, body: str, since: datetime) -> str | None:
        try:
            recent = self.client.messages.list(to=to, limit=50)
        except (TwilioException, requests.RequestException) as exc:
            raise SendError(
                f"cannot list sent messages: {exc}", code=None, http_status=None
            ) from None
        for m in recent:
            created = m.date_created
            if m.body == body and (created is None or created >= since - timedelta(minutes=1)):
                return str(m.sid)
        return None

    def _is_own(self, url: str) -> bool:
        """A URL of the provider itself (its API hosts, or the configured base URL)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        own = host == "twilio.com" or host.endswith(".twilio.com")
        return (parts.scheme == "https" and own) or parts.netloc.lower() in self._own_hosts

    def fetch_media(self, url: str, max_bytes: int) -> tuple[bytes, str]:
        # The account's credentials go only to the provider: a media URL from elsewhere (an
        # Open311 app's media_url) is fetched without them, and only from a public host.
        # Redirects drop the credentials (requests).
        if self._is_own(url):
            auth = (self.account_sid, self.auth_token)
            return _download(self._media, url, max_bytes, auth=auth, public_only=False)
        return _download(
            self._media, url, max_bytes, auth=None, public_only=not self.allow_private_media
        )


class SandboxProvider:
    """No provider account: texts are 'accepted' locally and logged, never sent anywhere."""

    sandbox = True

    def send(self, to: str, from_: str, body: str, status_callback: str | None) -> Sent:
        sid = "SB" + secrets.token_hex(16)
        log.info("sandbox outbox: text to %s accepted as %s: %s", mask_phone(to), sid, body)
        return Sent(sid=sid, status="sandbox")

    def find_sent(self, to: str, from_: str, body: str, since: datetime) -> str | None:
        return None

    def __init__(self, *, allow_private_media: bool = False) -> None:
        self.allow_private_media = allow_private_media

    def fetch_media(self, url: str, max_bytes: int) -> tuple[bytes, str]:
        return _download(
            requests.Session(), url, max_bytes, auth=None, public_only=not self.allow_private_media
        )


def provider_from_config(config: Mapping[str, Any]) -> SmsProvider:
    sid, token = config.get("TWILIO_ACCOUNT_SID"), config.get("TWILIO_AUTH_TOKEN")
    private = bool(config.get("OPEN311_ALLOW_PRIVATE_MEDIA"))
    if sid and token:
        return TwilioProvider(
            sid, token, config.get("TWILIO_API_BASE_URL"), allow_private_media=private
        )
    return SandboxProvider(allow_private_media=private)
