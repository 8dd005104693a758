"""Provider webhooks for texts: POST /sms/inbound and POST /sms/status."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Flask, request
from sqlalchemy.exc import IntegrityError
from twilio.twiml.messaging_response import MessagingResponse

from cases.config import Municipality
from cases.errors import Invalid
from cases.notify import Ctx
from cases.phone import mask_phone, normalise_phone
from infra.dispatch import after_commit, hand_over
from infra.inputs import whole_number
from infra.runtime import runtime
from infra.spool import SpoolItem
from infra.web import ctx_for, db, keep_while_away, went_away
from infra.webhooks import municipality_for_called, signed, twiml
from sms.inbound import Inbound, answer_while_away, handle_inbound, register_spooled
from sms.outbound import record_delivery

log = logging.getLogger(__name__)
bp = Blueprint("sms", __name__, url_prefix="/sms")


def _reply(text: str | None) -> Any:
    resp = MessagingResponse()
    if text:
        resp.message(text)
    return twiml(str(resp))


def _bad(status: int, message: str) -> Any:
    """A refusal: said in the log, answered with an empty document (the provider shows
    nobody the body, and a sender's text has no place in it)."""
    log.warning("sms %s -> %d: %s", request.path, status, message)
    return twiml(str(MessagingResponse()), status)


def _media() -> list[tuple[str, str]]:
    raw = request.form.get("NumMedia", "0") or "0"
    try:
        n = int(raw)
    except ValueError:
        raise Invalid(f"NumMedia is not a number: {raw[:10]!r}") from None
    if not 0 <= n <= 10:
        raise Invalid("NumMedia must be between 0 and 10")
    out = []
    for i in range(n):
        url = request.form.get(f"MediaUrl{i}", "")
        if not url.startswith(("https://", "http://")):
            raise Invalid(f"MediaUrl{i} is missing or not a URL")
        out.append((url, request.form.get(f"MediaContentType{i}", "")))
    return out


@bp.post("/inbound")
@signed
def inbound() -> Any:
    f = request.form
    sid = f.get("MessageSid") or f.get("SmsMessageSid") or f.get("SmsSid") or ""
    if not sid or not f.get("From") or not f.get("To"):
        return _bad(400, "MessageSid, From and To are required")
    if len(f.get("Body", "")) > 1600:
        return _bad(400, "Body is longer than 1600 characters")
    muni = municipality_for_called(f.get("To"))
    if muni is None:
        return _bad(404, f"{mask_phone(f.get('To'))} is not the number of any municipality here")
    try:
        msg = Inbound(
            sid=sid[:64],
            from_=f["From"],
            to=normalise_phone(f["To"], muni.country),  # the number as matched
            # a phone cannot type NUL and the register cannot store it: dropped, not refused
            body=f.get("Body", "").replace("\x00", ""),
            media=_media(),
            opt_out_type=f.get("OptOutType", ""),
        )
    except Invalid as exc:
        return _bad(400, str(exc))
    s = db()
    try:
        outcome = handle_inbound(s, ctx_for(muni), msg)  # it commits
    except Invalid as exc:
        s.rollback()
        return _bad(400, str(exc))
    except Exception as exc:
        if not went_away(exc):
            raise
        return _keep(muni, msg)
    hand_over(s)
    if outcome.replayed:
        log.info("sms %s replayed by the provider: same answer, nothing new", sid)
    return _reply(outcome.reply)


def _keep(muni: Municipality, msg: Inbound) -> Any:
    """The register is away: keep the text in this host's spool (unless it needs none) and
    answer as the register would have, the number to follow by text."""
    ctx = ctx_for(muni)  # the sender's number was checked by handle_inbound, before the register
    keep, reply = answer_while_away(ctx, msg)
    if keep:
        keep_while_away("sms", msg.sid, muni.code, {"text": asdict(msg), "base_url": ctx.base_url})
    return _reply(reply)


def register_spooled_text(app: Flask, item: SpoolItem) -> None:
    """The drainer's handler for texts kept while the register was away."""
    kept = item.payload["text"]
    media = [(url, ctype) for url, ctype in kept["media"]]
    msg = Inbound(**{**kept, "media": media, "received_at": item.received_at})
    muni = runtime(app).config.get(item.municipality)
    with app.app_context():
        s = db()
        ctx = Ctx(muni, runtime().clock(), item.payload["base_url"])
        try:
            outcome = register_spooled(s, ctx, msg)
            after_commit(s)
        except IntegrityError:  # written meanwhile by another try: it answers as a retry
            s.rollback()
            outcome = register_spooled(s, ctx, msg)
            after_commit(s)
        log.info("sms %s kept while the register was away: %s", msg.sid, outcome.kind.value)


@bp.post("/status")
@signed
def status() -> Any:
    f = request.form
    sid = f.get("MessageSid") or f.get("SmsSid") or ""
    state = f.get("MessageStatus") or f.get("SmsStatus") or ""
    if not sid or not state:
        return _bad(400, "MessageSid and MessageStatus are required")
    oid_raw = request.args.get("o")
    try:  # our own outbox id, in the callback URL we gave the provider
        oid = whole_number(oid_raw, "o") if oid_raw else None
    except Invalid:
        oid = None
    s = db()
    error = f.get("ErrorCode") or None
    try:
        row = record_delivery(s, sid, state, error, runtime().clock(), oid)
        s.commit()
    except Exception as exc:
        if not went_away(exc):
            raise
        # the provider does not call twice: kept, and applied when the register is back
        payload = {"sid": sid, "state": state, "error": error, "outbox_id": oid}
        keep_while_away("status", f"{sid}:{state}", "", payload)
        return _reply(None)
    if row is None:
        log.info("sms status for unknown message %s (%s): ignored", sid, state)
    return _reply(None)


def apply_spooled_status(app: Flask, item: SpoolItem) -> None:
    """The drainer's handler for delivery statuses kept while the register was away (a
    status only moves forward: applying one twice changes nothing)."""
    p = item.payload
    with app.app_context():
        s = db()
        record_delivery(s, p["sid"], p["state"], p["error"], item.received_at, p["outbox_id"])
        s.commit()
