"""POST /sms/inbound as the provider calls it: signed forms, retries, keywords, queries, MMS."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from cases.config import Municipality
from cases.models import Attachment, Case, InboundMessage, OptOut
from infra.runtime import runtime
from tests.conftest import signed_post

CITIZEN = "+393331234567"
OTHER = "+393409876543"
_sid = itertools.count(1)


def text(
    client: FlaskClient, muni: Municipality, body: str, frm: str = CITIZEN, **extra: str
) -> Any:
    form = {
        "MessageSid": f"SM{next(_sid):032x}",
        "AccountSid": "AC" + "1" * 32,
        "MessagingServiceSid": "",
        "From": frm,
        "To": muni.sms.numbers[0],
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "FromCountry": "IT",
        "FromCity": "",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    form.update(extra)
    return signed_post(client, "/sms/inbound", form)


def reply_of(resp: Any) -> str:
    assert resp.status_code == 200 and resp.mimetype == "text/xml", resp.data
    m = re.search(r"<Message>(.*)</Message>", resp.get_data(as_text=True), re.S)
    return m.group(1) if m else ""


def count(app: Flask, model: Any) -> int:
    with runtime(app).sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def cases(app: Flask) -> list[Case]:
    with runtime(app).sessions() as s:
        return list(s.scalars(select(Case).order_by(Case.id)))


def test_a_text_becomes_a_case_and_the_reply_carries_its_number(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    r = reply_of(text(client, muni, "Buca pericolosa in via Mazzini 4, davanti alla scuola"))
    [case] = cases(app)
    assert case.protocol in r and f"/track/{case.year}-{case.number:07d}?t=" in r
    assert case.channel == "sms" and case.phone == CITIZEN and case.category == "strade"
    assert case.original_text.startswith("Buca pericolosa")


def test_the_same_message_sid_ten_times_is_one_case_with_the_same_reply(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    form = {
        "MessageSid": "SM" + "a" * 32,
        "From": CITIZEN,
        "To": muni.sms.numbers[0],
        "Body": "lampione spento in piazza Garibaldi",
        "NumMedia": "0",
    }
    replies = {reply_of(signed_post(client, "/sms/inbound", form)) for _ in range(10)}
    assert len(replies) == 1 and "/0000001" in replies.pop()
    assert len(cases(app)) == 1 and count(app, InboundMessage) == 1


@pytest.mark.parametrize("signature", ["", "forged", "AAAA" * 7])
def test_missing_or_forged_signature_is_refused_and_stores_nothing(
    app: Flask, client: FlaskClient, muni: Municipality, signature: str
) -> None:
    form = {"MessageSid": "SM1", "From": CITIZEN, "To": muni.sms.numbers[0], "Body": "buca"}
    assert signed_post(client, "/sms/inbound", form, signature=signature).status_code == 403
    assert signed_post(client, "/sms/inbound", form, token="another-account").status_code == 403
    assert cases(app) == [] and count(app, InboundMessage) == 0


def test_a_signature_for_other_parameters_is_refused(
    client: FlaskClient, muni: Municipality
) -> None:
    from twilio.request_validator import RequestValidator

    from tests.conftest import PUBLIC, TWILIO_TOKEN

    form = {"MessageSid": "SM2", "From": CITIZEN, "To": muni.sms.numbers[0], "Body": "buca"}
    sig = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC + "/sms/inbound", form)
    tampered = dict(form, Body="tutt'altro")
    r = client.post("/sms/inbound", data=tampered, headers={"X-Twilio-Signature": sig})
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"From": CITIZEN, "Body": "x"}, 400),  # no MessageSid, no To
        ({"MessageSid": "SM3", "From": CITIZEN, "To": "+390200000000", "Body": "x"}, 404),
        ({"MessageSid": "SM4", "From": CITIZEN, "To": "TO", "Body": "x" * 1601}, 400),
        ({"MessageSid": "SM5", "From": CITIZEN, "To": "TO", "Body": "x", "NumMedia": "many"}, 400),
        ({"MessageSid": "SM6", "From": CITIZEN, "To": "TO", "Body": "", "NumMedia": "1"}, 400),
        ({"MessageSid": "SM7", "From": "MyBrand", "To": "TO", "Body": "buca"}, 400),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_stores_nothing(
    app: Flask, client: FlaskClient, muni: Municipality, form: dict[str, str], status: int
) -> None:
    if form.get("To") == "TO":
        form["To"] = muni.sms.numbers[0]
    r = signed_post(client, "/sms/inbound", form)
    assert r.status_code == status and r.get_data(as_text=True)
    assert cases(app) == [] and count(app, InboundMessage) == 0


def test_the_called_number_picks_the_municipality(
    app: Flask, client: FlaskClient, config: Any
) -> None:
    other = config.municipality[1]
    reply_of(text(client, other, "lampione spento in via Roma"))
    [case] = cases(app)
    assert case.municipality == other.code and other.name in reply_of(
        text(client, other, "STATO 1")
    )


def test_status_query_details_only_to_the_reporter(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    reply_of(text(client, muni, "albero caduto sulla ciclabile del parco"))
    [case] = cases(app)
    for query in (
        f"STATO {case.protocol}",
        f"stato {case.number}",
        str(case.number),
        f"Stato {case.year}-{case.number}",
    ):
        own = reply_of(text(client, muni, query))
        assert case.protocol in own and "?t=" in own, query  # with the private link and due date
    other = reply_of(text(client, muni, f"STATO {case.protocol}", frm=OTHER))
    assert case.protocol in other
    assert "?t=" not in other and case.track_token not in other and "albero" not in other
    assert CITIZEN[-4:] not in other
    unknown = reply_of(text(client, muni, "STATO 2026/0099999"))
    assert "0099999" in unknown and "non troviamo" in unknown
    assert len(cases(app)) == 1  # queries are not cases


def test_follow_up_joins_the_open_case_and_nuova_opens_a_new_one(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    reply_of(text(client, muni, "cassonetto pieno in via Dante"))
    r = reply_of(text(client, muni, "ora ci sono anche sacchi per terra"))
    [case] = cases(app)
    assert case.protocol in r and "aggiunto" in r
    with runtime(app).sessions() as s:
        c = s.get(Case, case.id)
        assert c is not None and c.events[-1].action == "citizen_message"
        assert c.events[-1].note == "ora ci sono anche sacchi per terra"
    r = reply_of(text(client, muni, "NUOVA lampione spento in via Verdi"))
    both = cases(app)
    assert len(both) == 2 and both[1].original_text == "lampione spento in via Verdi"
    assert both[1].protocol in r


def test_mms_photos_become_attachments_and_a_photo_alone_is_a_case(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    media = {
        "NumMedia": "2",
        "MediaUrl0": "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        "MediaContentType0": "image/jpeg",
        "MediaUrl1": "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME2",
        "MediaContentType1": "image/png",
    }
    r = reply_of(text(client, muni, "", **media))
    [case] = cases(app)
    assert case.protocol in r and case.original_text == ""
    with runtime(app).sessions() as s:
        atts = s.scalars(select(Attachment).where(Attachment.case_id == case.id)).all()
        assert [(a.kind, a.content_type, a.state) for a in atts] == [
            ("photo", "image/jpeg", "pending"),
            ("photo", "image/png", "pending"),
        ]


def test_stop_in_english_and_italian(app: Flask, client: FlaskClient, muni: Municipality) -> None:
    assert reply_of(text(client, muni, "STOP")) == ""  # the provider confirms its own keywords
    assert reply_of(text(client, muni, "buca in via Roma")) == ""  # opted out: no text at all
    assert len(cases(app)) == 1  # but the report is not lost
    assert "riattivati" in reply_of(text(client, muni, "INIZIA"))
    assert reply_of(text(client, muni, "altra buca in via Po")) != ""
    assert "INIZIA" in reply_of(text(client, muni, " basta! ", frm=OTHER))
    with runtime(app).sessions() as s:
        rows = {o.phone: o.opted_out for o in s.scalars(select(OptOut))}
    assert rows == {CITIZEN: False, OTHER: True}


def test_advanced_opt_out_field_is_honoured(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    text(client, muni, "ARRESTA", OptOutType="STOP")
    with runtime(app).sessions() as s:
        opt = s.get(OptOut, (muni.code, CITIZEN))
        assert opt is not None and opt.opted_out


def test_help_in_both_languages(client: FlaskClient, muni: Municipality) -> None:
    assert "STATO" in reply_of(text(client, muni, "aiuto"))
    assert "STATUS" in reply_of(text(client, muni, "STATUS 42"))  # English asks, English answers


def test_flooding_stores_every_text_but_warns_once(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    limit = muni.sms.flood_per_minute
    replies = [
        reply_of(text(client, muni, f"NUOVA messaggio numero {i}")) for i in range(limit + 4)
    ]
    assert all(r for r in replies[:limit])
    assert len([r for r in replies[limit:] if r]) == 1 and "molti messaggi" in replies[limit]
    assert len(cases(app)) == limit
    assert count(app, InboundMessage) == limit + 4


def test_a_returning_citizen_is_answered_in_the_language_of_their_last_case(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    """A plain report opens a case in the statement that looks the sender up only when the
    reply written beforehand (in the municipality's language) is the right one; a citizen
    whose last case was in English gets the English reply instead, and still one case."""
    r = reply_of(text(client, muni, "NEW streetlight out in via Verdi"))
    assert "thank you" in r
    with runtime(app).sessions() as s:  # the case is closed: the next text is a new report
        s.execute(update(Case).values(status="closed", office=func.coalesce(Case.office, "URP")))
        s.commit()
    r = reply_of(text(client, muni, "buca in via Roma"))
    second = cases(app)[-1]
    assert len(cases(app)) == 2 and second.language == "en"
    assert "thank you" in r and second.protocol in r
    # Someone new writing the same gets the municipality's language.
    assert "grazie" in reply_of(text(client, muni, "buca in via Roma", frm=OTHER))


def test_a_nul_character_in_a_text_is_dropped_not_a_500(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    """PostgreSQL cannot store NUL in text; a phone cannot type it: the text is kept without."""
    r = reply_of(text(client, muni, "buca\x00 in via Roma"))
    [case] = cases(app)
    assert case.protocol in r and case.original_text == "buca in via Roma"


def test_an_empty_text_follows_up_an_open_case_and_alone_is_refused(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    assert text(client, muni, "").status_code == 400  # no case to join, nothing to register
    reply_of(text(client, muni, "cassonetto pieno in via Dante"))
    r = reply_of(text(client, muni, ""))
    [case] = cases(app)
    assert case.protocol in r and "aggiunto" in r
