"""The phone menu: each step reads the call's state from the database, answers with TwiML
built by the official builder, and saves the state back. Nothing lives in URLs or memory."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from twilio.twiml.voice_response import Gather, VoiceResponse

from cases import registration
from cases.classifier import fold
from cases.errors import Invalid
from cases.mail import voice_case_email
from cases.models import OPEN_STATUSES, Call, Case, Channel, Role
from cases.notify import (
    Ctx,
    notify_staff,
    office_name,
    office_queue_staff,
    queue_text,
    staff_of,
    status_label,
)
from cases.optout import is_opted_out
from cases.phone import is_mobile, mask_phone
from cases.protocol import parse_protocol, protocol_year
from cases.registration import NewAttachment, add_attachment, case_by_intake_key, classifier_for
from cases.services import find_case
from cases.workflow import visible_to_office
from infra.inputs import whole_number
from ivr.callstate import NAV_KEYS, NavCall
from ivr.prompts import SPEECH, digits_of, prompt, spoken_date

log = logging.getLogger(__name__)
LANG_CODE = {"it": "it-IT", "en": "en-GB"}
PAGE = 8  # categories per menu level: keys 1-8, 9 for more, 0 for other


class NeedsDurable(Exception):
    """A step run on the navigation snapshot wants to change more than navigation state."""


class RegisterAway(Exception):
    """A step run while the register is away wanted the database."""


@dataclass
class Turn:
    """One request of a call: what the provider sent and the call's stored state.

    ``navigation_only``: the call was loaded from the navigation snapshot (Redis), not locked
    in the database; the step may steer the menu but anything else (what the caller said, a
    case) raises NeedsDurable, and the step is run again on the database row.

    ``keep``: set while the register is away. The whole call then lives in its snapshot (what
    the caller said included), the database is not touched (``s`` raises RegisterAway), and
    the registration step hands the call to ``keep`` (the host's spool) instead.
    ``received_at``: when a registration kept that way reached us (set by the drainer).
    """

    session: Callable[[], Session]
    ctx: Ctx
    call: Call | NavCall
    form: Mapping[str, str]
    navigation_only: bool = False
    keep: Callable[[Turn], None] | None = None
    received_at: datetime | None = None

    @property
    def away(self) -> bool:
        return self.keep is not None

    @property
    def s(self) -> Session:
        """The request's session, opened on first use (a menu step may never need it)."""
        if self.away:
            raise RegisterAway("the register is away")
        return self.session()

    @property
    def lang(self) -> str:
        return self.call.language

    @property
    def state(self) -> dict[str, Any]:
        return self.call.state

    def set(self, **values: Any) -> None:
        if self.navigation_only and not NAV_KEYS.issuperset(values):
            raise NeedsDurable(", ".join(sorted(set(values) - NAV_KEYS)))
        # a new dict, so that SQLAlchemy sees the JSON column change
        self.call.state = {**self.call.state, **values}

    def durable(self) -> None:
        """About to write to the register: only on the locked database row."""
        if self.navigation_only:
            raise NeedsDurable("register")

    def say(self, target: VoiceResponse | Gather, key: str, **values: str) -> None:
        voice = self.ctx.muni.voice.voice_en if self.lang == "en" else self.ctx.muni.voice.voice_it
        target.say(prompt(self.lang, key, **values), language=LANG_CODE[self.lang], voice=voice)

    def url(self, step: str) -> str:
        """An action URL for this turn: the provider's retry of it is recognised and replayed,
        while the caller's next answer (even an identical silence) is a new turn."""
        return f"/ivr/{step}/{int(self.state.get('turn', 0))}"

    def gather(self, resp: VoiceResponse, action: str, **kw: Any) -> Gather:
        kw.setdefault("input", "dtmf speech")
        kw.setdefault("timeout", 6)
        kw.setdefault("num_digits", 1)
        kw.setdefault("speech_timeout", "auto")
        return resp.gather(
            action=self.url(action),
            method="POST",
            language=LANG_CODE[self.lang],
            action_on_empty_result=True,
            **kw,
        )

    def choice(self) -> tuple[str, str]:
        """(digits, folded speech) of a Gather answer."""
        return (
            self.form.get("Digits", "").strip(),
            fold(self.form.get("SpeechResult", "")).strip(),
        )


def _said(speech: str, option: str) -> bool:
    words = re.findall(r"[a-z]+", speech)
    return any(w.startswith(k) for w in words for k in SPEECH[option])


# ------------------------------------------------------------------ menu


def incoming(t: Turn) -> VoiceResponse:
    resp = VoiceResponse()
    t.say(resp, "welcome", municipality=t.ctx.muni.name)
    if t.away:  # the caller's open case cannot be looked up: the menu works without it
        return main_menu(t, resp)
    open_case = t.s.scalar(
        select(Case)
        .where(
            Case.municipality == t.ctx.muni.code,
            Case.phone == t.call.from_phone,
            Case.status.in_([x.value for x in OPEN_STATUSES]),
        )
        .order_by(Case.id.desc())
        .limit(1)
    )
    if open_case is not None:
        t.set(open_case=open_case.protocol)
    return main_menu(t, resp)


class Prebuilt(VoiceResponse):
    """A document the builder made earlier for the same prompt, served as its string."""

    def __init__(self, xml: str) -> None:
        super().__init__()
        self.built = xml

    def to_xml(self, xml_declaration: bool = True) -> str:
        return self.built


# (municipality config, language, prompt, turn, ...) -> TwiML built by the official builder.
# Derived from configuration only (no caller's data): the same on every worker.
_BUILT: dict[tuple[Any, ...], tuple[Any, str]] = {}


def _prebuilt(
    t: Turn, name: str, build: Callable[[VoiceResponse], VoiceResponse], *key: Any
) -> VoiceResponse:
    """A whole document that depends only on the configuration, the language and the turn
    (its action URLs): built once with the builder, then reused."""
    k = (id(t.ctx.muni), t.lang, name, int(t.state.get("turn", 0)), *key)
    hit = _BUILT.get(k)
    if hit is None or hit[0] is not t.ctx.muni:
        if len(_BUILT) > 10_000:
            _BUILT.clear()
        hit = _BUILT[k] = (t.ctx.muni, str(build(VoiceResponse())))
    return Prebuilt(hit[1])


def main_menu(t: Turn, resp: VoiceResponse | None = None) -> VoiceResponse:
    if resp is None and not t.state.get("open_case"):
        return _prebuilt(t, "main_menu", lambda r: main_menu(t, r))
    resp = resp or VoiceResponse()
    g = t.gather(resp, "menu")
    if t.state.get("open_case"):
        year, number = parse_protocol(t.state["open_case"])
        t.say(g, "open_case", protocol=digits_of(year, number, t.lang))
    t.say(g, "menu")
    return resp


def menu(t: Turn) -> VoiceResponse:
    digits, speech = t.choice()
    if digits == "1" or (not digits and _said(speech, "report")):
        return category_menu(t)
    if digits == "2" or (not digits and _said(speech, "status")):
        return ask_protocol(t)
    if digits == "3" or (not digits and _said(speech, "operator")):
        return operator(t)
    if digits == "4" or (not digits and _said(speech, "english")):
        t.call.language = "en"
        t.set(tries={})
        return main_menu(t)
    if t.state.get("open_case") and (
        digits == "9" or (not digits and _said(speech, "open_status"))
    ):
        resp = VoiceResponse()
        if t.away:
            t.say(resp, "status_unavailable")
            return main_menu(t, resp)
        case = find_case(t.s, t.ctx, t.state["open_case"])
        if case is not None:
            say_status(t, resp, case)
        return main_menu(t, resp)
    return retry(t, "menu", main_menu, silent=not (digits or speech))


def retry(
    t: Turn,
    step: str,
    again: Callable[[Turn, VoiceResponse], VoiceResponse],
    *,
    silent: bool,
    message: str | None = None,
) -> VoiceResponse:
    """Repeat a prompt after silence or a wrong key, up to the limit; then no dead end."""
    tries = dict(t.state.get("tries", {}))
    tries[step] = tries.get(step, 0) + 1
    t.set(tries=tries)
    resp = VoiceResponse()
    if tries[step] >= t.ctx.muni.voice.max_retries:
        log.info("call %s: %s failed %d times", t.call.call_sid, step, tries[step])
        if step != "operator" and t.ctx.muni.in_office_hours(t.ctx.now):
            t.say(resp, "offer_operator")
            return operator(t, resp)
        if t.state.get("transcript") and not t.call.case_id:
            return register(t, resp)  # what was said is not lost
        t.say(resp, "goodbye")
        resp.hangup()
        return resp
    t.say(resp, message or ("no_input" if silent else "not_understood"))
    return again(t, resp)


# ------------------------------------------------------------------ report


def _menu_codes(t: Turn) -> list[str]:
    m = t.ctx.muni
    codes = m.voice.menu_categories or [c.code for c in m.categories]
    return [c for c in codes if c != "altro"]


def category_menu(t: Turn, resp: VoiceResponse | None = None) -> VoiceResponse:
    t.set(mode="report")
    page = int(t.state.get("page", 0))
    if resp is None:
        return _prebuilt(t, "category_menu", lambda r: category_menu(t, r), page)
    codes = _menu_codes(t)
    shown = codes[page * PAGE : (page + 1) * PAGE]
    g = t.gather(resp, "category")
    for i, code in enumerate(shown, start=1):
        cat = t.ctx.muni.category(code)
        assert cat is not None
        t.say(g, "category_item", name=cat.name(t.lang), digit=str(i))
    if len(codes) > (page + 1) * PAGE:
        t.say(g, "category_more")
    t.say(g, "category_other")
    return resp


def category(t: Turn) -> VoiceResponse:
    digits, speech = t.choice()
    codes = _menu_codes(t)
    page = int(t.state.get("page", 0))
    chosen: str | None = None
    if digits == "0":
        chosen = ""
    elif digits == "9" and len(codes) > (page + 1) * PAGE:
        t.set(page=page + 1)
        return category_menu(t)
    elif len(digits) == 1 and digits in "12345678" and page * PAGE + int(digits) <= len(codes):
        chosen = codes[page * PAGE + int(digits) - 1]
    elif speech and not digits:
        s = classifier_for(t.ctx.muni).classify(t.form.get("SpeechResult", ""))
        if s.category and s.confidence >= t.ctx.muni.classifier_threshold:
            chosen = s.category
        elif _said(speech, "no") or "altro" in speech or "other" in speech:
            chosen = ""
    if chosen is None:
        return retry(t, "category", category_menu, silent=not (digits or speech))
    t.set(category=chosen or None, page=0)
    return describe(t)


def describe(t: Turn, resp: VoiceResponse | None = None) -> VoiceResponse:
    resp = resp or VoiceResponse()
    if not t.state.get("recording"):
        # the caller's own words are kept for the operator, beside the transcript
        resp.start().recording(
            name="ld-report",
            recording_status_callback="/ivr/recording",
            recording_status_callback_method="POST",
            recording_status_callback_event="completed",
            channels="mono",
            track="inbound",
        )
        t.set(recording=True)
    g = t.gather(resp, "described", input="speech", timeout=5, num_digits=None)
    if t.state.get("mode") == "voicemail":
        t.say(g, "voicemail")
    else:
        t.say(g, "describe")
    return resp


def described(t: Turn) -> VoiceResponse:
    text = (t.form.get("SpeechResult") or "").strip()
    if not text:
        return retry(t, "describe", describe, silent=True, message="describe_again")
    t.set(transcript=text[:4000], confidence=t.form.get("Confidence", ""))
    if t.state.get("mode") == "voicemail":
        return register(t)
    return readback(t)


def readback(t: Turn, resp: VoiceResponse | None = None) -> VoiceResponse:
    resp = resp or VoiceResponse()
    g = t.gather(resp, "confirm")
    t.say(g, "readback", text=t.state.get("transcript") or "")
    return resp


def confirm(t: Turn) -> VoiceResponse:
    digits, speech = t.choice()
    if digits == "1" or (not digits and _said(speech, "yes") and not _said(speech, "no")):
        return register(t)
    if digits == "2" or (not digits and _said(speech, "no")):
        t.set(transcript=None, tries={**t.state.get("tries", {}), "describe": 0})
        return describe(t)
    return retry(t, "confirm", readback, silent=not (digits or speech))


def register(t: Turn, resp: VoiceResponse | None = None) -> VoiceResponse:
    """Register the call's case once; a retried request only hears the number again."""
    resp = resp or VoiceResponse()
    if t.away:
        return register_later(t, resp)
    case = register_call_case(t)
    key = "voicemail_saved" if t.state.get("mode") == "voicemail" else "registered"
    t.say(resp, key, digits=digits_of(case.year, case.number, t.lang))
    if is_mobile(t.call.from_phone) and not is_opted_out(t.s, t.ctx.muni.code, t.call.from_phone):
        t.say(resp, "sms_follows")
    t.say(resp, "goodbye")
    resp.hangup()
    return resp


def register_later(t: Turn, resp: VoiceResponse) -> VoiceResponse:
    """The register is away: the call, with what the caller said, goes to the host's spool
    (once) and is registered when the register answers; the number follows by text."""
    assert t.keep is not None
    if not t.state.get("spooled"):
        t.set(spooled=True)
        t.keep(t)
    t.say(resp, "received_later")
    if is_mobile(t.call.from_phone):
        t.say(resp, "sms_follows_later")
    elif t.call.from_phone != "anonymous":
        t.say(resp, "call_back_later")
    t.say(resp, "goodbye")
    resp.hangup()
    return resp


def register_call_case(t: Turn, note: str = "") -> Case:
    """The call's case, registered once (its CallSid is its `intake_key`), routed to the
    office's operators once.

    The registration commits on its own, in one statement on PostgreSQL, so that the year's
    counter is held only while that statement runs: the step's work so far (the call's row) is
    committed first, and the call's row is locked again after it to record the case. A
    registration that loses a race (the end of the call registering it meanwhile) or follows
    a crash between the two finds the case by its key."""
    t.durable()
    if t.call.case_id is not None:
        case = t.s.get(Case, t.call.case_id)
        assert case is not None
        return case
    recordings = [
        NewAttachment("recording", r["url"], "audio/x-wav", r.get("duration"))
        for r in t.state.get("recordings", [])
    ]
    s, key = t.s, f"call:{t.call.call_sid}"
    s.commit()  # the step so far; the call's row is locked again below
    try:
        case = registration.register(
            s,
            t.ctx,
            confirm=True,
            commit=True,
            repeatable=True,  # its key makes a second run fail
            channel=Channel.VOICE,
            text=t.state.get("transcript") or "",
            phone=None if t.call.from_phone == "anonymous" else t.call.from_phone,
            category=t.state.get("category") or None,
            language=t.lang,
            attachments=recordings,
            received_at=t.received_at,
            intake_key=key,
        ).case
    except IntegrityError:
        s.rollback()
        found = case_by_intake_key(s, t.ctx.muni, key)
        if found is None:
            raise
        case = found
    s.refresh(t.call, with_for_update=True)  # as the call is now: the end may have come
    if t.call.case_id is not None:  # recorded meanwhile, with its routing
        return case
    t.call.case_id = case.id
    t.set(pending=False)
    route_to_operators(t, case, note)
    log.info(
        "call %s: case %s registered for %s",
        t.call.call_sid,
        case.protocol,
        mask_phone(t.call.from_phone),
    )
    return case


def route_to_operators(t: Turn, case: Case, note: str = "") -> None:
    """The office's operators (URP when uncategorised) get the transcript in their queue."""

    # the caller's other cases, those every member of the receiving queue may see
    within = visible_to_office(t.ctx, case.office)
    others = (
        t.s.execute(
            select(Case.year, Case.number)
            .where(
                within,
                Case.municipality == case.municipality,
                Case.phone == case.phone,
                Case.id != case.id,
            )
            .order_by(Case.id.desc())
            .limit(10)
        ).all()
        if case.phone
        else []
    )
    recording = next((a.source_url for a in case.attachments if a.kind == "recording"), None)
    data = {
        "transcript": case.original_text,
        "recording": recording,
        "category": case.category,
        "office": case.office,
        "other_cases": [f"{y}/{n:07d}" for y, n in others],
        "note": note,
    }
    staff = office_queue_staff(t.s, t.ctx, case.office)
    text = f"{case.protocol}: chiamata trascritta: {case.original_text[:200]}"
    notify_staff(t.s, t.ctx, staff, "voice_case", case, text, data)
    office = t.ctx.muni.office(case.office) or t.ctx.muni.urp_office
    referents = (
        staff_of(t.s, t.ctx.muni.code, office=office.code, roles=(Role.REFERENT,))
        if office.notify_referents_by_sms or office.notify_referents_by_email
        else []
    )
    if case.office is not None and office.notify_referents_by_sms:
        body = f"{t.ctx.muni.name}: nuova segnalazione telefonica {case.protocol}: {case.original_text[:200]}"
        for ref in referents:
            if ref.phone:
                queue_text(t.s, t.ctx, ref.phone, body, "staff_voice_case", case, "it")
    # where the office's config asks for it
    voice_case_email(t.s, t.ctx, case, recording, referents=referents)


# ------------------------------------------------------------------ status


def ask_protocol(t: Turn, resp: VoiceResponse | None = None) -> VoiceResponse:
    if resp is None:
        return _prebuilt(t, "ask_protocol", lambda r: ask_protocol(t, r))
    g = t.gather(resp, "lookup", input="dtmf", num_digits=None, finish_on_key="#", timeout=10)
    t.say(g, "ask_protocol")
    return resp


def parse_keyed(digits: str, this_year: int) -> tuple[int, int]:
    """'123', '2026*123', '20260000123' -> (year, number); the year may be left out."""
    digits = digits.strip().rstrip("#")
    if "*" in digits:
        year_s, _, number_s = digits.partition("*")
        return parse_protocol(f"{year_s}/{number_s}")
    if len(digits) > 7 and digits[:2] in ("19", "20"):
        return parse_protocol(f"{digits[:4]}/{digits[4:]}")
    return parse_protocol(digits, this_year)


def lookup(t: Turn) -> VoiceResponse:
    digits = t.form.get("Digits", "")
    if not digits:
        return retry(t, "lookup", ask_protocol, silent=True)
    if t.away:
        resp = VoiceResponse()
        t.say(resp, "status_unavailable")
        return main_menu(t, resp)
    try:
        year, number = parse_keyed(digits, protocol_year(t.ctx.now, t.ctx.muni.tz))
        case = find_case(t.s, t.ctx, f"{year}/{number}")
    except Invalid:
        case, year, number = None, 0, 0
    if case is None:
        spoken = ", ".join(digits.strip("#").replace("*", ""))
        return _unknown(t, spoken)
    resp = VoiceResponse()
    say_status(t, resp, case)
    return main_menu(t, resp)


def _unknown(t: Turn, spoken: str) -> VoiceResponse:
    tries = dict(t.state.get("tries", {}))
    tries["lookup"] = tries.get("lookup", 0) + 1
    t.set(tries=tries)
    resp = VoiceResponse()
    t.say(resp, "unknown_case", digits=spoken)
    if tries["lookup"] >= t.ctx.muni.voice.max_retries:
        return main_menu(t, resp)
    return ask_protocol(t, resp)


def say_status(t: Turn, resp: VoiceResponse, case: Case) -> None:
    lang = t.lang
    common = {
        "digits": digits_of(case.year, case.number, lang),
        "status": status_label(case.status, lang),
        "office": office_name(t.ctx.muni, case.office, lang),
    }
    if case.phone == t.call.from_phone:  # details only to the phone that reported it
        due = spoken_date(case.due_at.astimezone(t.ctx.muni.tz).date(), lang)
        t.say(resp, "status_own", due=due, **common)
    else:
        t.say(resp, "status_other", **common)


# ------------------------------------------------------------------ operator and voicemail


def operator(t: Turn, resp: VoiceResponse | None = None) -> VoiceResponse:
    resp = resp or VoiceResponse()
    voice = t.ctx.muni.voice
    if not t.ctx.muni.in_office_hours(t.ctx.now):
        t.say(resp, "closed_hours")
        return voicemail(t, resp)
    t.say(resp, "operator_wait")
    if voice.operator_numbers:
        dial = resp.dial(
            action=t.url("operator-done"), method="POST", timeout=voice.queue_wait_seconds
        )
        for number in voice.operator_numbers:
            dial.number(number)
    else:
        resp.enqueue(
            f"urp-{t.ctx.muni.code}",
            wait_url=t.url("hold"),
            wait_url_method="POST",
            action=t.url("queue-done"),
            method="POST",
        )
    return resp


def voicemail(t: Turn, resp: VoiceResponse | None = None) -> VoiceResponse:
    t.set(mode="voicemail", category=None)
    return describe(t, resp)


def operator_done(t: Turn) -> VoiceResponse:
    if t.form.get("DialCallStatus") == "completed":
        resp = VoiceResponse()
        resp.hangup()
        return resp
    resp = VoiceResponse()
    t.say(resp, "nobody")
    return voicemail(t, resp)


def hold(t: Turn) -> VoiceResponse:
    resp = VoiceResponse()
    try:
        waited = int(t.form.get("QueueTime", "0") or 0)
    except ValueError:
        waited = 0
    if waited >= t.ctx.muni.voice.queue_wait_seconds:
        resp.leave()
        return resp
    t.say(resp, "hold")
    if t.ctx.muni.voice.hold_music_url:
        resp.play(t.ctx.muni.voice.hold_music_url)
    else:
        resp.pause(length=10)
    return resp


def queue_done(t: Turn) -> VoiceResponse:
    result = t.form.get("QueueResult", "")
    resp = VoiceResponse()
    if result in ("bridged", "hangup", "redirected"):
        resp.hangup()
        return resp
    t.say(resp, "nobody")
    return voicemail(t, resp)


# ------------------------------------------------------------------ callbacks


def recording(t: Turn) -> VoiceResponse:
    """Recording status callback: attach the audio once the provider says it is ready."""
    if t.form.get("RecordingStatus", "completed") != "completed":
        return VoiceResponse()
    sid, url = t.form.get("RecordingSid", ""), t.form.get("RecordingUrl", "")
    if not sid or not url.startswith(("https://", "http://")):
        raise Invalid("RecordingSid and RecordingUrl are required")
    known = list(t.state.get("recordings", []))
    if any(r["sid"] == sid for r in known):
        return VoiceResponse()
    try:
        duration = whole_number(t.form.get("RecordingDuration") or "0", "", 0, 86_400) or None
    except Invalid:
        duration = None
    known.append({"sid": sid, "url": url, "duration": duration})
    t.set(recordings=known)
    if t.call.case_id is not None:
        case = t.s.get(Case, t.call.case_id)
        assert case is not None
        add_attachment(t.ctx, case, NewAttachment("recording", url, "audio/x-wav", duration))
    return VoiceResponse()


ENDED = {"completed", "busy", "failed", "no-answer", "canceled"}


def call_status(t: Turn) -> VoiceResponse:
    """How the call ended; a description given before hanging up still becomes a case."""
    status = t.form.get("CallStatus", "")
    if status in ENDED and t.call.end_status is None:
        t.call.end_status = status
        t.call.ended_at = t.ctx.now
        try:  # a call lasts seconds to hours, never more than a day
            t.call.duration_seconds = whole_number(t.form.get("CallDuration") or "0", "", 0, 86_400)
        except Invalid:
            t.call.duration_seconds = None
        if t.state.get("transcript") and t.call.case_id is None and not t.state.get("spooled"):
            case = register_call_case(t, note="the caller hung up before confirming")
            log.info(
                "call %s ended (%s) before confirming: case %s registered anyway",
                t.call.call_sid,
                status,
                case.protocol,
            )
    return VoiceResponse()


STEPS: dict[str, Callable[[Turn], VoiceResponse]] = {
    "menu": menu,
    "category": category,
    "described": described,
    "confirm": confirm,
    "lookup": lookup,
    "operator-done": operator_done,
    "hold": hold,
    "queue-done": queue_done,
    "recording": recording,
}
