"""Provider webhooks: signature check with the official RequestValidator, shared by sms/ and ivr/."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Response, current_app, request
from twilio.request_validator import RequestValidator

from cases.config import Municipality
from cases.phone import mask_phone
from infra.runtime import runtime

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def public_url() -> str:
    """The URL the provider signed: the configured public base plus this path and query."""
    base = current_app.config.get("PUBLIC_BASE_URL") or ""
    qs = request.query_string.decode("ascii", "replace")
    return base.rstrip("/") + request.path + (f"?{qs}" if qs else "")


def auth_token() -> str | None:
    token: str | None = current_app.config.get("TWILIO_AUTH_TOKEN")
    return token


def signed(view: F) -> F:
    """Refuse (403, nothing stored) a webhook whose X-Twilio-Signature is missing or wrong."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = auth_token()
        signature = request.headers.get("X-Twilio-Signature", "")
        if not token:
            log.error("webhook %s refused: no TWILIO_AUTH_TOKEN configured", request.path)
            return Response("webhook signing is not configured\n", 403, mimetype="text/plain")
        # The form as the MultiDict it is: twilio's validator signs every value of a repeated
        # field (a flattened dict of lists made it raise TypeError: a 500). The check itself
        # is RequestValidator.validate, never our own copy of the provider's rules.
        form = request.form
        if not signature or not RequestValidator(token).validate(public_url(), form, signature):
            log.warning(
                "webhook %s refused: %s signature (from %s)",
                request.path,
                "missing" if not signature else "wrong",
                mask_phone(form.get("From")),
            )
            return Response("invalid or missing X-Twilio-Signature\n", 403, mimetype="text/plain")
        bad = malformed(form)
        if bad:
            log.warning("webhook %s refused: %s", request.path, bad)
            return Response(f"malformed request: {bad}\n", 400, mimetype="text/plain")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


SID_FIELDS = ("MessageSid", "SmsSid", "SmsMessageSid", "CallSid", "RecordingSid", "AccountSid")


def malformed(form: Any) -> str | None:
    """What no provider sends, even signed: a NUL character (no text column can hold one;
    a text's Body is the exception, its NULs are dropped by the view so that the text is
    kept) or an identifier longer than any of the provider's (34 characters; 64 are stored)."""
    for name, value in form.items(multi=True):
        if "\x00" in name or ("\x00" in value and name != "Body"):
            return f"a NUL character in {name[:40]!r}"
    for name in SID_FIELDS:
        if any(len(v) > 64 for v in form.getlist(name)):
            return f"{name} longer than 64 characters"
    return None


def municipality_for_called(number: str | None) -> Municipality | None:
    if not number:
        return None
    return runtime().config.by_number(number)


def twiml(xml: str, status: int = 200) -> Response:
    return Response(xml, status, mimetype="text/xml")
