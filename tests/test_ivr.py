"""The phone menu driven as the provider drives it: the simulator parses our TwiML, posts the
next request with the right fields and a valid signature, and we check what the register did."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cases.config import Municipality
from cases.models import Attachment, Call, CallStep, Case, OutboxMessage, StaffNotification
from infra.runtime import runtime
from ivr.simulator import CallLog, Switchboard
from tests.conftest import Clock, Staff, redis_call_store, signed_post

CALLER = "+393331234567"
IN_HOURS = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)  # Tuesday 10:30 in Rome
OUT_OF_HOURS = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)  # Tuesday 21:00 in Rome


@pytest.fixture(params=["database", "redis"])
def app(request: pytest.FixtureRequest, app: Flask) -> Iterator[Flask]:
    """Every call path twice: navigation state in the database only, and in Redis."""
    if request.param == "database":
        yield app
        return
    with redis_call_store(app):
        yield app


@pytest.fixture
def clock() -> Clock:
    """The app's clock: in office hours, until a test moves it."""
    return Clock(IN_HOURS)


def transport(client: FlaskClient) -> Any:
    def post(path: str, form: dict[str, str]) -> tuple[int, str]:
        r = signed_post(client, path, form)
        return r.status_code, r.get_data(as_text=True)

    return post


def call(
    client: FlaskClient, muni: Municipality, *inputs: str, frm: str = CALLER, **kw: Any
) -> CallLog:
    return Switchboard(
        transport(client), from_=frm, to=muni.voice.numbers[0], inputs=inputs, **kw
    ).run()


def all_cases(app: Flask) -> list[Case]:
    with runtime(app).sessions() as s:
        return list(s.scalars(select(Case).order_by(Case.id)))


def assert_no_error(log: CallLog) -> None:
    assert all(status == 200 for _, _, status in log.requests), log.requests


def test_report_with_confirmation(app: Flask, client: FlaskClient, muni: Municipality) -> None:
    log = call(
        client, muni, "1", "1", "C'è una buca profonda in via Roma 12 davanti alla farmacia", "1"
    )
    assert_no_error(log)
    [case] = all_cases(app)
    assert (
        case.channel == "voice"
        and case.phone == CALLER
        and case.category == muni.categories[0].code
    )
    assert case.original_text.startswith("C'è una buca profonda")
    assert "Ho registrato: C'è una buca" in log.text  # read back before confirming
    assert (
        f"{', '.join(str(case.year))}, barra, {', '.join(str(case.number))}" in log.text
    )  # digit by digit
    assert log.ended_by == "system"
    with runtime(app).sessions() as s:
        rec = s.scalars(select(Attachment).where(Attachment.case_id == case.id)).all()
        assert [a.kind for a in rec] == ["recording"] and rec[
            0
        ].duration_seconds  # attached when ready
        sms = s.scalars(select(OutboxMessage).where(OutboxMessage.case_id == case.id)).all()
        assert [m.template for m in sms] == ["registered"] and case.protocol in sms[0].body
        assert s.get(Call, log.sid).end_status == "completed"  # type: ignore[union-attr]


def test_caller_repeats_the_description(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    log = call(
        client,
        muni,
        "1",
        "3",
        "lampione",
        "2",
        "il lampione di via Verdi 3 è spento da una settimana",
        "sì",
    )
    assert_no_error(log)
    [case] = all_cases(app)
    assert case.original_text.startswith("il lampione di via Verdi")


def test_hang_up_after_describing_still_makes_a_case(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    log = call(
        client, muni, "1", "5", "sacchi di rifiuti abbandonati in via Dante"
    )  # then hangs up
    assert log.ended_by == "caller"
    [case] = all_cases(app)
    assert case.original_text == "sacchi di rifiuti abbandonati in via Dante" and case.category
    with runtime(app).sessions() as s:
        assert s.scalar(select(func.count()).select_from(Attachment)) == 1  # the late recording too


def test_a_call_that_said_nothing_leaves_no_case(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    call(client, muni, "1", "1")  # hangs up at the description prompt
    call(client, muni)  # hangs up at the greeting
    assert all_cases(app) == []


def test_speech_works_for_menus_and_categories(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    log = call(
        client,
        muni,
        "vorrei fare una segnalazione",
        "illuminazione pubblica",
        "lampione spento in piazza Duomo",
        "sì conferma",
    )
    assert_no_error(log)
    [case] = all_cases(app)
    assert case.category == "illuminazione"


def test_second_level_of_categories_and_other(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    codes = [c.code for c in muni.categories if c.code != "altro"]
    log = call(client, muni, "1", "9", "2", "auto parcheggiata sul passo carraio", "1")
    assert "altre categorie" in log.text
    [case] = all_cases(app)
    assert case.category == codes[9]
    call(client, muni, "1", "0", "un problema diverso da tutti", "1", frm="+393409999999")
    assert all_cases(app)[1].category is None  # 'other': URP triages it


def test_status_for_own_case_and_for_someone_elses(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    call(client, muni, "1", "1", "buca in via Roma", "1")
    [case] = all_cases(app)
    own = call(client, muni, "2", f"{case.number}#").text
    assert "Termine previsto" in own and "è assegnata" in own
    other = call(client, muni, "2", f"{case.year}*{case.number}#", frm="+393409999999").text
    assert "assegnata" in other and "Termine previsto" not in other
    unknown = call(client, muni, "2", "99999#", frm="+393409999999").text
    assert "Non trovo la pratica numero 9, 9, 9, 9, 9" in unknown


def test_a_caller_with_an_open_case_hears_it_first(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    call(client, muni, "1", "1", "buca in via Roma", "1")
    [case] = all_cases(app)
    log = call(client, muni, "9")
    assert f"numero {', '.join(str(case.year))}, barra, {case.number}" in log.text
    assert "Risulta aperta una sua segnalazione" in log.text and "Termine previsto" in log.text


def test_operator_in_office_hours_is_dialled(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    log = call(client, muni, "3", dial_result="completed")
    assert f"[dialling {muni.voice.operator_numbers[0]}: completed]" in log.text
    assert all_cases(app) == []


def test_nobody_answers_so_the_caller_leaves_a_message(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    log = call(
        client,
        muni,
        "3",
        "vorrei segnalare che il semaforo di via Milano è guasto",
        dial_result="no-answer",
    )
    assert "Lasci un messaggio" in log.text and "registrato con il numero di protocollo" in log.text
    [case] = all_cases(app)
    assert case.channel == "voice" and "semaforo" in case.original_text


def test_out_of_hours_goes_to_voicemail(
    app: Flask, client: FlaskClient, muni: Municipality, clock: Clock
) -> None:
    clock.t = OUT_OF_HOURS
    log = call(client, muni, "3", "chiamo per un albero caduto in via dei Pini")
    assert "uffici sono chiusi" in log.text and "dialling" not in log.text
    assert len(all_cases(app)) == 1


def test_queue_when_no_operator_numbers(
    app: Flask, client: FlaskClient, config: Any, clock: Clock
) -> None:
    clock.t = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)  # Valfiorita opens on Wednesdays
    other = config.municipality[1]
    if other.voice.operator_numbers:
        other = other.model_copy(
            update={"voice": other.voice.model_copy(update={"operator_numbers": []})}
        )
        cfg = config.model_copy(update={"municipality": [config.municipality[0], other]})
        runtime(app).config = cfg
    log = call(client, other, "3", "buca davanti al municipio")
    assert "[queued in urp-" in log.text and "attendere" in log.text
    assert "Lasci un messaggio" in log.text and len(all_cases(app)) == 1


def test_english(app: Flask, client: FlaskClient, muni: Municipality) -> None:
    log = call(client, muni, "4", "1", "1", "there is a big pothole in via Roma", "1")
    assert (
        "To report a problem, press 1" in log.text
        and "Thank you. Your report is registered" in log.text
    )
    [case] = all_cases(app)
    assert case.language == "en"
    with runtime(app).sessions() as s:
        sms = s.scalar(select(OutboxMessage).where(OutboxMessage.case_id == case.id))
    assert sms is not None and sms.language == "en" and "your report is registered" in sms.body


def test_wrong_keys_and_silence_repeat_then_no_dead_end(
    app: Flask, client: FlaskClient, muni: Municipality, clock: Clock
) -> None:
    log = call(client, muni, "7", "", "8", dial_result="completed")
    assert log.text.count("Non ho capito") == 1 and log.text.count("Non ho sentito") == 1
    assert "La passo a un operatore" in log.text and "[dialling" in log.text
    clock.t = OUT_OF_HOURS
    log = call(client, muni, "", "", "")
    assert log.text.count("Non ho sentito") == 2  # repeated up to the limit...
    assert "La passo" not in log.text and log.text.endswith(
        "Arrivederci."
    )  # ...then a polite goodbye
    assert log.ended_by == "system" and all_cases(app) == []


def test_repeated_requests_do_not_register_twice(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    sent: list[tuple[str, dict[str, str]]] = []
    post = transport(client)

    def record(path: str, form: dict[str, str]) -> tuple[int, str]:
        sent.append((path, form))
        return post(path, form)

    Switchboard(
        record, from_=CALLER, to=muni.voice.numbers[0], inputs=["1", "1", "buca in via Po", "1"]
    ).run()
    confirm_path, confirm_form = next((p, f) for p, f in sent if p.startswith("/ivr/confirm/"))
    first = post(confirm_path, confirm_form)
    again = post(confirm_path, confirm_form)  # the provider retries the same step
    assert first == again and len(all_cases(app)) == 1
    with runtime(app).sessions() as s:
        steps = s.scalars(select(CallStep.step).where(CallStep.step.startswith("confirm/"))).all()
        assert len(steps) == 1
    # a repeated silence is the caller's, not the provider's: it is a new turn, not a replay
    log = call(client, muni, "", "", dial_result="completed")
    assert log.text.count("Non ho sentito") == 2


@pytest.mark.parametrize("signature", ["", "forged"])
def test_forged_signature_is_refused_and_stores_nothing(
    app: Flask, client: FlaskClient, muni: Municipality, signature: str
) -> None:
    form = {"CallSid": "CA1", "From": CALLER, "To": muni.voice.numbers[0], "CallStatus": "ringing"}
    assert signed_post(client, "/ivr/incoming", form, signature=signature).status_code == 403
    with runtime(app).sessions() as s:
        assert s.scalar(select(func.count()).select_from(Call)) == 0


def test_bad_requests_get_a_4xx(client: FlaskClient, muni: Municipality) -> None:
    assert (
        signed_post(
            client, "/ivr/incoming", {"CallSid": "CA2", "From": CALLER, "To": "+390200000000"}
        ).status_code
        == 404
    )
    assert (
        signed_post(
            client, "/ivr/incoming", {"From": CALLER, "To": muni.voice.numbers[0]}
        ).status_code
        == 400
    )
    assert (
        signed_post(client, "/ivr/menu", {"CallSid": "CAunknown", "Digits": "1"}).status_code == 404
    )
    assert signed_post(client, "/ivr/nowhere", {"CallSid": "CA3"}).status_code == 404
    assert (
        signed_post(
            client, "/ivr/status", {"CallSid": "CAunknown", "CallStatus": "completed"}
        ).status_code
        == 200
    )


def test_webhook_query_strings_stay_ascii_and_hold_no_state(
    client: FlaskClient, muni: Municipality
) -> None:
    sent: list[str] = []
    post = transport(client)

    def record(path: str, form: dict[str, str]) -> tuple[int, str]:
        sent.append(path)
        return post(path, form)

    Switchboard(
        record, from_=CALLER, to=muni.voice.numbers[0], inputs=["1", "1", "buca", "1"]
    ).run()
    assert all(p.isascii() and "?" not in p for p in sent)
    assert all(re.fullmatch(r"/ivr/(incoming|status|recording|[a-z-]+/\d+)", p) for p in sent), sent


def test_transcript_reaches_the_office_operators_queue(
    app: Flask, client: FlaskClient, muni: Municipality, staff: Staff
) -> None:
    office = muni.categories[0].office
    staff.add("op", "operator", office)
    staff.add("urp", "urp")
    call(client, muni, "1", "1", "buca pericolosa in via Garibaldi 8", "1")
    [case] = all_cases(app)
    items = staff.get("op", "/notifications").get_json()["items"]
    voice = [n for n in items if n["kind"] == "voice_case"]
    assert voice and voice[0]["protocol"] == case.protocol
    assert voice[0]["data"]["transcript"] == "buca pericolosa in via Garibaldi 8"
    assert voice[0]["data"]["office"] == office and "other_cases" in voice[0]["data"]
    detail = staff.get("op", f"/cases/{case.protocol.replace('/', '-')}").get_json()
    assert detail["description"] == "buca pericolosa in via Garibaldi 8"
    assert [a["kind"] for a in detail["attachments"]] == ["recording"]
    # an uncategorised call goes to URP
    call(client, muni, "1", "0", "un problema strano", "1", frm="+393401112223")
    with runtime(app).sessions() as s:
        kinds = s.scalars(select(StaffNotification.kind)).all()
    assert (
        "voice_case" in staff.get("urp", "/notifications").get_json()["items"][0]["kind"] and kinds
    )


def test_sms_confirmation_only_to_a_mobile_that_has_not_opted_out(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    from cases.models import OptOut

    landline = call(client, muni, "1", "1", "buca in via Roma", "1", frm="+390575111222")
    assert "SMS di conferma" not in landline.text
    with runtime(app).sessions() as s, s.begin():
        s.add(
            OptOut(
                municipality=muni.code,
                phone="+393471112223",
                opted_out=True,
                source="keyword:STOP",
                updated_at=IN_HOURS,
            )
        )
    opted = call(client, muni, "1", "1", "buca in via Po", "1", frm="+393471112223")
    assert "SMS di conferma" not in opted.text
    mobile = call(client, muni, "1", "1", "buca in via Dante", "1", frm="+393471112224")
    assert "SMS di conferma" in mobile.text
    with runtime(app).sessions() as s:
        rows = {m.phone: m.status for m in s.scalars(select(OutboxMessage))}
    assert rows["+390575111222"] == "suppressed"  # a landline cannot receive it


def test_withheld_number_can_still_report(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    log = call(client, muni, "1", "1", "buca in via Roma", "1", frm="anonymous")
    assert "registrata" in log.text and "SMS" not in log.text
    [case] = all_cases(app)
    assert case.phone is None and case.channel == "voice"


def test_referents_get_an_sms_where_the_office_asks_for_it(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    from datetime import datetime as dt

    from cases.db import transaction
    from cases.notify import Ctx
    from cases.services import create_user

    office = next(o for o in muni.offices if o.notify_referents_by_sms)
    cat = next(c for c in muni.categories if c.office == office.code)
    with transaction(runtime(app).sessions) as s:
        create_user(
            s, Ctx(muni, dt.now(UTC)), "capo_pm", "referent", office.code, phone="+393489990000"
        )
    codes = [c.code for c in muni.categories if c.code != "altro"]
    idx = codes.index(cat.code)
    keys = ["1"] + ["9"] * (idx // 8) + [str(idx % 8 + 1)]
    call(client, muni, *keys, "auto in doppia fila davanti al passo carraio", "1")
    [case] = all_cases(app)
    assert case.office == office.code
    with runtime(app).sessions() as s:
        alert = s.scalar(select(OutboxMessage).where(OutboxMessage.phone == "+393489990000"))
    assert alert is not None and case.protocol in alert.body and "doppia fila" in alert.body


def test_a_transcription_backend_adds_its_text_when_the_recording_is_ready(
    app: Flask, client: FlaskClient, muni: Municipality, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.provider import FakeProvider
    from workers import tasks

    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    monkeypatch.delenv("TWILIO_REGION", raising=False)
    sid = "AC" + "5" * 32
    with FakeProvider(account_sid=sid, auth_token="tok") as fake:
        app.config.update(
            TWILIO_ACCOUNT_SID=sid,
            TWILIO_AUTH_TOKEN="tok",
            TWILIO_API_BASE_URL=fake.base_url,
            TRANSCRIBER="tests.fakes.transcriber:BytesAsText",
        )
        audio = fake.add_media("c'è una buca in via Roma".encode(), "audio/x-wav")

        def signed_with_tok(path: str, form: dict[str, str]) -> tuple[int, str]:
            r = signed_post(client, path, form, token="tok")
            return r.status_code, r.get_data(as_text=True)

        Switchboard(
            signed_with_tok,
            from_=CALLER,
            to=muni.voice.numbers[0],
            inputs=["1", "1", "buca in via Roma", "1"],
            recording_url=lambda _rid: audio,
        ).run()
        [case] = all_cases(app)
        with runtime(app).sessions() as s:
            att = s.scalar(select(Attachment).where(Attachment.case_id == case.id))
            assert att is not None and att.kind == "recording" and att.state == "pending"
        with app.app_context():
            assert tasks.fetch_media.run(att.id) == "transcribed"  # the worker's step, run here
    with runtime(app).sessions() as s:
        c = s.get(Case, case.id)
        assert c is not None and c.events[-1].action == "transcript"
        assert c.events[-1].note == "[it] c'è una buca in via Roma" and not c.events[-1].public
        assert c.attachments[0].state == "available"


@pytest.mark.parametrize(
    ("signed_for", "status"),
    [
        ("https://comune.example.it/ivr/status", 200),
        ("https://comune.example.it:443/ivr/status", 200),  # the port written out: the same URL
        ("https://comune.example.it:8443/ivr/status", 403),
        ("https://comune.example.it/ivr/recording", 403),
    ],
)
def test_the_signature_covers_the_url_with_or_without_its_port(
    client: FlaskClient, signed_for: str, status: int
) -> None:
    from twilio.request_validator import RequestValidator
    from werkzeug.datastructures import MultiDict

    from tests.conftest import TWILIO_TOKEN

    # a repeated field: every value is signed
    form = MultiDict([("CallSid", "CAnobody"), ("CallStatus", "completed"), ("X", "b"), ("X", "a")])
    sig = RequestValidator(TWILIO_TOKEN).compute_signature(signed_for, form)
    r = client.post("/ivr/status", data=form, headers={"X-Twilio-Signature": sig})
    assert r.status_code == status
    if status == 200:
        tampered = MultiDict([*form.items(multi=True), ("X", "c")])
        r = client.post("/ivr/status", data=tampered, headers={"X-Twilio-Signature": sig})
        assert r.status_code == 403


def test_a_calls_case_is_registered_once_even_after_a_crash_between_its_two_commits(
    app: Flask, client: FlaskClient, muni: Municipality, staff: Staff
) -> None:
    """The registration commits on its own (one statement), then the call's row records it.
    A process that died in between left a case the call's row does not name: the next
    attempt (here the end of the call) finds it by the call's key, takes no new number, and
    records and routes it."""
    log = call(client, muni, "1", "1", "buca profonda in via Roma 12", "1")
    [case] = all_cases(app)
    assert case.intake_key == f"call:{log.sid}"
    staff.add("op", "operator", case.office)  # in the queue the call is routed to
    with runtime(app).sessions() as s:  # as if the process died after the statement
        row = s.get(Call, log.sid)
        assert row is not None and row.case_id == case.id
        row.case_id, row.end_status = None, None
        s.query(StaffNotification).delete()
        s.commit()
    form = {
        "CallSid": log.sid,
        "AccountSid": "AC" + "0" * 32,
        "From": CALLER,
        "To": muni.voice.numbers[0],
        "CallStatus": "completed",
        "CallDuration": "42",
    }
    assert signed_post(client, "/ivr/status", form).status_code == 200
    assert [c.id for c in all_cases(app)] == [case.id]  # no second case, no second number
    with runtime(app).sessions() as s:
        row = s.get(Call, log.sid)
        assert row is not None and row.case_id == case.id and row.end_status == "completed"
        routed = s.scalars(select(StaffNotification.kind)).all()
        assert "voice_case" in routed  # routed to the office then
