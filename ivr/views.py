"""Provider webhooks for calls: /ivr/incoming, the action URLs of each step, /ivr/status."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from twilio.twiml.voice_response import VoiceResponse

from cases.clock import utcnow
from cases.errors import Invalid
from cases.models import Call, CallStep
from cases.phone import InvalidPhone, mask_phone, normalise_phone
from ivr import flow
from lineadiretta.dispatch import after_commit
from lineadiretta.web import ctx_for, db
from lineadiretta.webhooks import municipality_for_called, signed, twiml

log = logging.getLogger(__name__)
bp = Blueprint("ivr", __name__, url_prefix="/ivr")
ANONYMOUS = "anonymous"


def _bad(status: int, message: str) -> Any:
    log.warning("ivr %s -> %d: %s", request.path, status, message)
    resp = VoiceResponse()
    if status < 500:
        resp.hangup()
    return twiml(str(resp), status)


def _request_hash(step: str) -> str:
    items = sorted((k, v) for k, v in request.form.items(multi=True))
    return hashlib.sha256(json.dumps([step, items]).encode()).hexdigest()


def _run(
    step: str,
    handler: Callable[[flow.Turn], VoiceResponse],
    *,
    create: bool = False,
    unknown_ok: bool = False,
) -> Any:
    """One request of a call: replay a retried step, else load the call, run the step, save."""
    from lineadiretta.app import runtime

    form = request.form
    sid = form.get("CallSid", "")
    if not sid or len(sid) > 64:
        return _bad(400, "CallSid is required")
    s = db()
    digest = _request_hash(step)
    prior = s.scalar(
        select(CallStep).where(
            CallStep.call_sid == sid, CallStep.step == step, CallStep.request_hash == digest
        )
    )
    if prior is not None:
        log.info("call %s: %s repeated by the provider, same answer", sid, step)
        return twiml(prior.response)
    call = s.get(Call, sid, with_for_update=True)
    now = utcnow()
    if call is None:
        if not create:
            if unknown_ok:
                log.info("ivr %s for unknown call %s: ignored", request.path, sid)
                return twiml(str(VoiceResponse()))
            return _bad(404, f"no call {sid} in progress")
        muni = municipality_for_called(form.get("To"))
        if muni is None:
            return _bad(
                404, f"{mask_phone(form.get('To'))} is not the number of any municipality here"
            )
        try:
            caller = normalise_phone(form.get("From", ""), muni.country)
        except InvalidPhone:
            caller = ANONYMOUS
        call = Call(
            call_sid=sid,
            municipality=muni.code,
            from_phone=caller,
            to_phone=form.get("To", ""),
            language=muni.language,
            state={},
            started_at=now,
            updated_at=now,
        )
        s.add(call)
        log.info("call %s from %s to %s", sid, mask_phone(caller), muni.code)
    muni = runtime(current_app).config.get(call.municipality)
    call.state = {**call.state, "turn": int(call.state.get("turn", 0)) + 1}
    turn = flow.Turn(s=s, ctx=ctx_for(muni), call=call, form=form)
    try:
        xml = str(handler(turn))
    except Invalid as exc:
        s.rollback()
        return _bad(400, str(exc))
    call.updated_at = now
    s.add(CallStep(call_sid=sid, step=step, request_hash=digest, response=xml, created_at=now))
    try:
        after_commit(s)
    except IntegrityError:
        s.rollback()  # the same retry raced in on another worker: its answer stands
        again = s.scalar(
            select(CallStep).where(
                CallStep.call_sid == sid, CallStep.step == step, CallStep.request_hash == digest
            )
        )
        if again is None:
            raise
        return twiml(again.response)
    return twiml(xml)


@bp.post("/incoming")
@signed
def incoming() -> Any:
    if not request.form.get("From") or not request.form.get("To"):
        return _bad(400, "From and To are required")
    return _run("incoming", flow.incoming, create=True)


@bp.post("/status")
@signed
def status() -> Any:
    if not request.form.get("CallStatus"):
        return _bad(400, "CallStatus is required")
    return _run("status", flow.call_status, unknown_ok=True)


@bp.post("/recording")
@signed
def recording() -> Any:
    return _run("recording", flow.recording, unknown_ok=True)


@bp.post("/<step>/<int:turn>")
@signed
def step(step: str, turn: int) -> Any:
    handler = flow.STEPS.get(step)
    if handler is None or step == "recording":
        return _bad(404, f"no step {step!r}")
    return _run(f"{step}/{turn}", handler)
