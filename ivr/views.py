"""Provider webhooks for calls: /ivr/incoming, the action URLs of each step, /ivr/status."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, current_app, request
from flask.blueprints import BlueprintSetupState
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from twilio.twiml.voice_response import VoiceResponse
from werkzeug.datastructures import MultiDict

from cases.config import Municipality
from cases.errors import Invalid
from cases.models import Call, CallStep
from cases.notify import Ctx
from cases.phone import InvalidPhone, mask_phone, normalise_phone
from infra.dispatch import after_commit
from infra.runtime import runtime
from infra.spool import SpoolItem
from infra.web import ctx_for, db, keep_while_away, public_base_url, went_away
from infra.webhooks import municipality_for_called, signed, twiml
from ivr import flow
from ivr.callstate import CallStore, NavCall, Snapshot, StoreDown
from ivr.prompts import prompt

log = logging.getLogger(__name__)
bp = Blueprint("ivr", __name__, url_prefix="/ivr")
ANONYMOUS = "anonymous"


def _bad(status: int, message: str) -> Any:
    log.warning("ivr %s -> %d: %s", request.path, status, message)
    resp = VoiceResponse()
    if status < 500:
        resp.hangup()
    return twiml(str(resp), status)


def _request_hash(step: str, form: MultiDict[str, str]) -> str:
    items = sorted(form.items(multi=True))
    return hashlib.sha256(json.dumps([step, items]).encode()).hexdigest()


# Steps that usually only steer the menu: with Redis they run on the navigation snapshot and
# touch no database row; if one turns out to need more (NeedsDurable) it runs on the row.
NAVIGATION_STEPS = frozenset({"menu", "category", "lookup", "hold", "operator-done", "queue-done"})


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    """Call state in Redis when there is one: IVR_REDIS_URL, else REDIS_URL (the broker's)."""
    app = state.app
    url = app.config.get("IVR_REDIS_URL") or app.config.get("REDIS_URL")
    prefix = app.config.get("IVR_REDIS_PREFIX")
    app.extensions["ivr_calls"] = (
        CallStore.from_url(url, prefix=prefix or "ld:call:") if url else None
    )


def _store() -> CallStore | None:
    store: CallStore | None = current_app.extensions.get("ivr_calls")
    return store


def _from_redis(
    sid: str, step: str, digest: str
) -> tuple[CallStore | None, Snapshot | None, str | None]:
    """(the store, None while Redis is away; the call's snapshot; the answer already given to
    this very request), in one round trip."""
    store = _store()
    if store is None:
        return None, None, None
    try:
        snap, answer = store.load(sid, step, digest)
    except StoreDown:
        return None, None, None
    return store, snap, answer


def _nav_call(sid: str, snap: Snapshot, turn: int) -> NavCall:
    """The call as its snapshot has it, one turn on from `turn` (or the snapshot's own)."""
    return NavCall(
        call_sid=sid, **snap.call_fields(), state={**snap.state, "turn": max(snap.turn, turn) + 1}
    )


def _snapshot(call: Call | NavCall) -> Snapshot:
    return Snapshot(
        call.municipality, call.from_phone, call.to_phone, call.language, call.case_id, call.state
    )


def _run(
    step: str,
    handler: Callable[[flow.Turn], VoiceResponse],
    *,
    turn_no: int = 0,
    create: bool = False,
    unknown_ok: bool = False,
) -> Any:
    """One request of a call: replay a retried step, else load the call, run the step, save.

    ``turn_no`` is the turn in the action URL: the call had reached it when it was given.
    While the register is away the call goes on in Redis (`_while_away`).
    """
    try:
        return _run_step(step, handler, turn_no=turn_no, create=create, unknown_ok=unknown_ok)
    except Exception as exc:
        if not went_away(exc):
            raise
        return _while_away(step, handler, turn_no=turn_no, create=create)


def _run_step(
    step: str,
    handler: Callable[[flow.Turn], VoiceResponse],
    *,
    turn_no: int,
    create: bool,
    unknown_ok: bool,
) -> Any:
    form = request.form
    sid = form.get("CallSid", "")
    if not sid or len(sid) > 64:
        return _bad(400, "CallSid is required")
    digest = _request_hash(step, form)
    store, snap, answer = _from_redis(sid, step, digest)
    if answer is not None:
        log.info("call %s: %s repeated by the provider, same answer", sid, step)
        return twiml(answer)
    if snap is not None and snap.turn < turn_no:
        snap = None  # Redis missed a later step: the database row is newer
    if store is not None and snap is not None and step.partition("/")[0] in NAVIGATION_STEPS:
        try:
            return _navigate(store, sid, step, digest, handler, snap, form)
        except (flow.NeedsDurable, StoreDown) as exc:
            log.debug("call %s: %s runs on the database row (%s)", sid, step, exc)
            db().rollback()
            if isinstance(exc, StoreDown):
                store = None
    return _durable(
        sid,
        step,
        digest,
        handler,
        store,
        snap,
        form,
        turn_no=turn_no,
        create=create,
        unknown_ok=unknown_ok,
    )


def _navigate(
    store: CallStore,
    sid: str,
    step: str,
    digest: str,
    handler: Callable[[flow.Turn], VoiceResponse],
    snap: Snapshot,
    form: MultiDict[str, str],
) -> Any:
    """A menu step on the Redis snapshot: no row lock, no transaction, one write to Redis."""
    call = _nav_call(sid, snap, snap.turn)
    muni = runtime().config.get(call.municipality)
    turn = flow.Turn(session=db, ctx=ctx_for(muni), call=call, form=form, navigation_only=True)
    try:
        xml = str(handler(turn))
    except Invalid as exc:
        return _bad(400, str(exc))
    prior = store.save_nav(sid, _snapshot(call), step, digest, xml)
    return twiml(prior if prior is not None else xml)


def _durable(
    sid: str,
    step: str,
    digest: str,
    handler: Callable[[flow.Turn], VoiceResponse],
    store: CallStore | None,
    snap: Snapshot | None,
    form: MultiDict[str, str],
    *,
    turn_no: int,
    create: bool,
    unknown_ok: bool,
) -> Any:
    """A step on the call's row, locked, in one transaction with the answer it gives."""
    s = db()
    prior = s.scalar(
        select(CallStep).where(
            CallStep.call_sid == sid, CallStep.step == step, CallStep.request_hash == digest
        )
    )
    if prior is not None:
        log.info("call %s: %s repeated by the provider, same answer", sid, step)
        return twiml(prior.response)
    call = s.get(Call, sid, with_for_update=True)
    now = runtime().clock()
    if call is None and snap is not None:
        # the call began while the register was away: Redis knew it, the database learns it now
        call = _row_from(sid, snap, now)
        s.add(call)
    if call is None:
        if not create:
            if unknown_ok:
                log.info("ivr %s for unknown call %s: ignored", request.path, sid)
                return twiml(str(VoiceResponse()))
            return _bad(404, f"no call {sid} in progress")
        new = _new_call(form)
        if new is None:
            return _not_ours(form)
        muni, caller, called = new
        call = Call(
            call_sid=sid,
            municipality=muni.code,
            from_phone=caller,
            to_phone=called,
            language=muni.language,
            state={},
            started_at=now,
            updated_at=now,
        )
        s.add(call)
        log.info("call %s from %s to %s", sid, mask_phone(caller), muni.code)
    state = _newer_state(call, snap)
    # never behind the action URL, even if the navigation since the last row write was lost
    state["turn"] = max(int(state.get("turn", 0)), turn_no) + 1
    call.state = state
    # set with the state: a step that commits midway (a registration) writes both at once
    call.updated_at = now
    muni = runtime().config.get(call.municipality)
    turn = flow.Turn(session=db, ctx=ctx_for(muni), call=call, form=form)
    try:
        xml = str(handler(turn))
    except Invalid as exc:
        s.rollback()
        return _bad(400, str(exc))
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
    if store is not None:
        store.save(sid, _snapshot(call), step, digest, xml)
    return twiml(xml)


def _new_call(form: MultiDict[str, str]) -> tuple[Municipality, str, str] | None:
    """A new call's municipality, caller (ANONYMOUS when withheld or not a number) and the
    number called as matched; None when the number called is none of ours."""
    muni = municipality_for_called(form.get("To"))
    if muni is None:
        return None
    try:
        caller = normalise_phone(form.get("From", ""), muni.country)
    except InvalidPhone:
        caller = ANONYMOUS
    return muni, caller, normalise_phone(form.get("To", ""), muni.country)


def _not_ours(form: MultiDict[str, str]) -> Any:
    return _bad(404, f"{mask_phone(form.get('To'))} is not the number of any municipality here")


def _row_from(sid: str, snap: Snapshot, now: datetime) -> Call:
    return Call(
        call_sid=sid, **snap.call_fields(), state=dict(snap.state), started_at=now, updated_at=now
    )


def _newer_state(call: Call, snap: Snapshot | None) -> dict[str, Any]:
    """The call's state: its row's, or its snapshot's where the snapshot is newer. The menu
    moves on in Redis without the row; while the register was away, so did what the caller
    said. (A snapshot older than the row is never taken: a durable step that could not
    refresh it drops it, and its turn is behind the row's.)"""
    state = dict(call.state)
    if snap is not None and snap.turn >= int(state.get("turn", 0)):
        recordings = {r["sid"]: r for r in state.get("recordings", [])}
        recordings.update((r["sid"], r) for r in snap.state.get("recordings", []))
        state.update(snap.state)
        if recordings:
            state["recordings"] = list(recordings.values())
        call.language = snap.language
    return state


# ------------------------------------------------------------------ the register away


def _while_away(
    step: str,
    handler: Callable[[flow.Turn], VoiceResponse],
    *,
    turn_no: int,
    create: bool,
) -> Any:
    """The register is away: the call goes on in its Redis snapshot, what the caller says
    included. The registration step, the end of the call and its recording are kept in this
    host's spool and applied to the call's row when the register answers (`apply_spooled_call`).
    Without Redis (the embedded mode) the caller is told to call again."""
    form = request.form
    sid = form.get("CallSid", "")
    digest = _request_hash(step, form)
    kind = step.partition("/")[0]
    store, snap, answer = _from_redis(sid, step, digest)
    if answer is not None:
        return twiml(answer)
    if kind in ("status", "recording"):
        # the provider calls once: kept, to be applied to the call's row
        what = kind if kind == "status" else f"recording:{form.get('RecordingSid', '')}"
        _keep(sid, what, snap, form)
        return twiml(str(VoiceResponse()))
    muni = None
    if snap is None and create:
        new = _new_call(form)
        if new is None:
            return _not_ours(form)
        muni, caller, called = new
        snap = Snapshot(muni.code, caller, called, muni.language, None, {})
        log.warning(
            "call %s from %s to %s while the register is away", sid, mask_phone(caller), muni.code
        )
    if store is None or snap is None:
        log.error("call %s: %s with the register away and no call state: call again", sid, step)
        return _sorry(muni)
    call = _nav_call(sid, snap, turn_no)
    muni = runtime().config.get(call.municipality)

    def keep(t: flow.Turn) -> None:
        _keep(sid, "register", _snapshot(t.call), form)

    turn = flow.Turn(session=db, ctx=ctx_for(muni), call=call, form=form, keep=keep)
    try:
        xml = str(handler(turn))
    except Invalid as exc:
        return _bad(400, str(exc))
    try:
        prior = store.save_nav(sid, _snapshot(call), step, digest, xml)
    except StoreDown:
        if turn.state.get("spooled"):
            return twiml(xml)  # what the caller said is in the spool: the answer stands
        return _sorry(muni)
    return twiml(prior if prior is not None else xml)


def _sorry(muni: Municipality | None) -> Any:
    resp = VoiceResponse()
    lang = muni.language if muni is not None else "it"
    resp.say(prompt(lang, "call_again"), language=flow.LANG_CODE.get(lang, "it-IT"))
    resp.hangup()
    return twiml(str(resp))


def _keep(sid: str, what: str, snap: Snapshot | None, form: MultiDict[str, str]) -> None:
    payload = {
        "sid": sid,
        "what": what,
        "snapshot": snap.dumps() if snap is not None else None,
        "form": form.to_dict(),
        "base_url": public_base_url(),
    }
    keep_while_away("call", f"{sid}:{what}", snap.municipality if snap else "", payload)


def apply_spooled_call(app: Flask, item: SpoolItem) -> None:
    """The drainer's handler for calls kept while the register was away: the call's row (made
    from its snapshot if the database never saw it), then the step kept: the registration,
    the end of the call (which registers what was said if the caller hung up first), or a
    recording. Each is safe to run again: the row, locked, says what is already done."""
    p = item.payload
    sid, what = p["sid"], p["what"]
    snap = Snapshot.loads(p["snapshot"]) if p.get("snapshot") else None
    with app.app_context():
        s = db()
        now = runtime().clock()
        call = s.get(Call, sid, with_for_update=True)
        if call is None:
            if snap is None:
                log.info("call %s: %s kept for a call never known: ignored", sid, what)
                return
            call = _row_from(sid, snap, item.received_at)
            s.add(call)
        call.state = _newer_state(call, snap)
        muni = runtime(app).config.get(call.municipality)
        turn = flow.Turn(
            session=db,
            ctx=Ctx(muni, now, p["base_url"]),
            call=call,
            form=p["form"],
            received_at=item.received_at,
        )
        if what == "register":
            flow.register_call_case(turn)
        elif what == "status":
            if call.case_id is None and call.state.get("spooled"):
                flow.register_call_case(turn)  # kept for registration: it comes first
            flow.call_status(turn)
        else:
            flow.recording(turn)
        call.updated_at = now
        after_commit(s)
        log.info("call %s: %s kept while the register was away, applied", sid, what)


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
    return _run(f"{step}/{turn}", handler, turn_no=turn)
