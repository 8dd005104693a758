"""Open311 GeoReport v2 (/open311/v2) over HTTP, JSON and XML, on both backends."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cases.apikeys import create_api_key
from cases.config import Municipality
from cases.db import transaction
from cases.models import ApiKey, Attachment, Case, OutboxMessage
from cases.notify import Ctx
from cases.registration import register
from tests.conftest import ROOT, Staff

BASE = "/open311/v2"
# Local test images are served from 127.0.0.1, which the API refuses by default.
PHOTO = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
FIELDS = (
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
)

# GeoReport v2's fields of a service, in the spec's order
SERVICE_FIELDS = (
    "service_code",
    "service_name",
    "description",
    "metadata",
    "type",
    "keywords",
    "group",
)


def rt(app: Flask) -> Any:
    from infra.runtime import runtime

    return runtime(app)


def new_key(app: Flask, name: str = "app-segnalazioni", muni: str = "monteverde") -> str:
    with transaction(rt(app).sessions) as s:
        _, plaintext = create_api_key(s, Ctx(rt(app).config.get(muni), datetime.now(UTC)), name)
    return plaintext


@pytest.fixture
def key(app: Flask) -> str:
    return new_key(app)


def post(client: FlaskClient, key: str | None, fmt: str = "json", **fields: Any) -> Any:
    form: dict[str, Any] = {
        "service_code": "strade",
        "lat": "45.1234",
        "long": "9.5678",
        "description": "Buca profonda davanti al civico 12",
    }
    form.update(fields)
    if key is not None:
        form["api_key"] = key
    form = {k: v for k, v in form.items() if v is not None}
    return client.post(f"{BASE}/requests.{fmt}", data=form)


def created(r: Any) -> str:
    assert r.status_code == 201, r.get_data(as_text=True)
    [item] = r.get_json()
    rid: str = item["service_request_id"]
    return rid


def xml_of(r: Any) -> ET.Element:
    assert r.content_type.startswith("text/xml")
    assert r.data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<')  # as the spec asks
    return ET.fromstring(r.data)


def json_error(r: Any, status: int) -> str:
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.content_type.startswith("application/json")
    [err] = r.get_json()
    assert err["code"] == status and isinstance(err["description"], str) and err["description"]
    desc: str = err["description"]
    return desc


def xml_error(r: Any, status: int) -> str:
    assert r.status_code == status, r.get_data(as_text=True)
    root = xml_of(r)
    assert root.tag == "errors"
    [err] = list(root)
    assert err.tag == "error" and err.findtext("code") == str(status)
    return err.findtext("description") or ""


def cases_in(app: Flask) -> list[Case]:
    with rt(app).sessions() as s:
        rows = list(s.scalars(select(Case).order_by(Case.id)))
        for c in rows:
            _ = c.events, c.attachments
        return rows


def gets(client: FlaskClient, path: str, **params: str) -> Any:
    return client.get(f"{BASE}{path}", query_string={"jurisdiction_id": "monteverde", **params})


# ---------------------------------------------------------------- discovery and services


def test_discovery_in_both_formats(client: FlaskClient) -> None:
    d = client.get(f"{BASE}/discovery.json").get_json()
    assert set(d) == {"changeset", "contact", "key_service", "endpoints"}
    [ep] = d["endpoints"]
    assert ep["url"] == "https://comune.example.it/open311/v2"
    assert ep["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert ep["formats"] == ["text/xml", "application/json"] and ep["type"] == "production"
    assert "Monteverde" in d["contact"] and "Valfiorita" in d["contact"]
    root = xml_of(client.get(f"{BASE}/discovery.xml"))
    assert root.tag == "discovery"
    assert [f.text for f in root.findall("endpoints/endpoint/formats/format")] == [
        "text/xml",
        "application/json",
    ]
    assert root.findtext("endpoints/endpoint/changeset") == d["changeset"]


def test_services_json_come_from_the_categories(client: FlaskClient, muni: Municipality) -> None:
    r = gets(client, "/services.json")
    assert r.status_code == 200 and r.content_type.startswith("application/json")
    items = r.get_json()
    assert [s["service_code"] for s in items] == [c.code for c in muni.categories]
    strade = next(s for s in items if s["service_code"] == "strade")
    cat = muni.category("strade")
    assert cat is not None
    office = muni.office(cat.office)
    assert office is not None
    assert strade["service_name"] == cat.name_it
    assert strade["metadata"] is False and strade["type"] == "realtime"
    assert strade["group"] == office.name
    assert set(strade) == set(SERVICE_FIELDS)
    assert cat.keywords[0] in strade["keywords"]


def test_services_xml_uses_the_spec_element_names(client: FlaskClient, muni: Municipality) -> None:
    root = xml_of(gets(client, "/services.xml"))
    assert root.tag == "services"
    children = list(root)
    assert {c.tag for c in children} == {"service"} and len(children) == len(muni.categories)
    first = children[0]
    assert [e.tag for e in first] == list(SERVICE_FIELDS)
    assert first.findtext("metadata") == "false" and first.findtext("type") == "realtime"


def test_service_definition_and_unknown_service(client: FlaskClient) -> None:
    d = gets(client, "/services/strade.json").get_json()
    assert d == {"service_code": "strade", "attributes": []}
    root = xml_of(gets(client, "/services/strade.xml"))
    assert root.tag == "service_definition" and root.findtext("service_code") == "strade"
    assert root.find("attributes") is not None and len(root.find("attributes") or []) == 0
    assert "nope" in json_error(gets(client, "/services/nope.json"), 404)
    assert "nope" in xml_error(gets(client, "/services/nope.xml"), 404)


def test_unknown_format_is_a_404_in_the_error_format(client: FlaskClient) -> None:
    assert "html" in json_error(gets(client, "/services.html"), 404)
    assert "html" in json_error(gets(client, "/requests/2026-0000001.html"), 404)


# ---------------------------------------------------------------- jurisdictions


def test_jurisdiction_rule_with_two_municipalities(
    app: Flask, client: FlaskClient, muni: Municipality
) -> None:
    # Two municipalities here: a call must say which (jurisdiction_id, or an API key does).
    assert "jurisdiction_id" in json_error(client.get(f"{BASE}/services.json"), 400)
    assert "jurisdiction_id" in xml_error(client.get(f"{BASE}/requests.xml"), 400)
    val = client.get(f"{BASE}/services.json?jurisdiction_id=valfiorita").get_json()
    assert [s["service_code"] for s in val][:2] == ["strade", "illuminazione"]
    assert "group" in val[0] and val[0]["group"] == "Ufficio Tecnico"
    assert "atlantide" in json_error(
        client.get(f"{BASE}/services.json?jurisdiction_id=atlantide"), 404
    )
    mv_key = new_key(app)
    # The key tells the jurisdiction; a key is valid only for its own municipality.
    mine = client.get(f"{BASE}/services.json?api_key={mv_key}").get_json()
    assert [s["service_code"] for s in mine] == [c.code for c in muni.categories]
    assert "valfiorita" in json_error(post(client, mv_key, jurisdiction_id="valfiorita"), 403)
    vf_key = new_key(app, "app-valfiorita", "valfiorita")
    rid = created(post(client, vf_key, service_code="illuminazione"))
    rid2 = created(post(client, mv_key, jurisdiction_id="monteverde"))
    assert rid == rid2  # each municipality has its own register, both start at 1
    assert [c.municipality for c in cases_in(app)] == ["valfiorita", "monteverde"]


def test_a_key_of_a_municipality_no_longer_served_is_refused(config: Any) -> None:
    from open311.service import Open311Error, resolve_jurisdiction

    gone = ApiKey(municipality="soppresso", name="vecchia app", key_hash="x", active=True)
    with pytest.raises(Open311Error) as err:
        resolve_jurisdiction(config, None, gone)
    assert err.value.status == 403


# ---------------------------------------------------------------- POST requests


def test_post_needs_a_valid_api_key(app: Flask, client: FlaskClient, key: str) -> None:
    assert "api_key" in json_error(post(client, None), 403)
    assert "api_key" in xml_error(post(client, "not-a-key", fmt="xml"), 403)
    assert "api_key" in json_error(post(client, "x" * 5000), 403)
    with transaction(rt(app).sessions) as s:
        row = s.scalar(select(ApiKey))
        assert row is not None and row.last_used_at is None
        row.active = False
    assert "api_key" in json_error(post(client, key), 403)
    assert cases_in(app) == []


def test_post_registers_a_case_on_channel_api(app: Flask, client: FlaskClient, key: str) -> None:
    r = post(
        client,
        key,
        address_string="Via Roma 12",
        phone="333 123 4567",
        first_name="Maria",
        last_name="Bianchi",
        email="maria@example.org",
    )
    rid = created(r)
    [item] = r.get_json()
    assert set(item) == {"service_request_id", "token", "service_notice", "account_id"}
    year = datetime.now(UTC).year
    assert rid == f"{year}-0000001"
    assert f"{year}/0000001" in item["service_notice"]
    [case] = cases_in(app)
    assert (
        case.channel == "api" and case.category == "strade" and case.protocol.endswith("/0000001")
    )
    assert case.phone == "+393331234567" and case.address == "Via Roma 12"
    assert (case.lat, case.long) == (45.1234, 9.5678)
    assert case.original_text == "Buca profonda davanti al civico 12"
    assert case.status == "assigned" and case.office == "LLPP"  # routed like any other case
    reg = case.events[0]
    assert reg.action == "register" and reg.data["channel"] == "api"
    assert reg.data["app"] == "app-segnalazioni" and reg.data["source"] == "open311"
    assert reg.data["reporter"] == {
        "first_name": "Maria",
        "last_name": "Bianchi",
        "email": "maria@example.org",
    }
    with rt(app).sessions() as s:  # the citizen is texted the protocol number, like by SMS
        [sms] = s.scalars(select(OutboxMessage).where(OutboxMessage.case_id == case.id)).all()
        assert sms.phone == "+393331234567" and case.protocol in sms.body
        used = s.scalar(select(ApiKey.last_used_at))
        assert used is not None
    # the XML answer of POST
    root = xml_of(post(client, key, fmt="xml"))
    assert root.tag == "service_requests"
    [req] = list(root)
    assert req.tag == "request" and req.findtext("service_request_id") == f"{year}-0000002"


def test_protocol_numbers_stay_gap_free_across_refused_posts(
    app: Flask, client: FlaskClient, key: str
) -> None:
    numbers = []
    for i in range(3):
        numbers.append(created(post(client, key, description=f"segnalazione {i}")))
        json_error(post(client, key, phone="123"), 400)  # refused: no number consumed
        json_error(post(client, key, service_code="nope"), 404)
    assert [int(n.split("-")[1]) for n in numbers] == [1, 2, 3]
    assert [c.number for c in cases_in(app)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"lat": "north", "long": "9.1"}, 400, "lat"),
        ({"lat": "95", "long": "9.1"}, 400, "lat"),
        ({"lat": "nan", "long": "9.1"}, 400, "lat"),
        ({"lat": "45.1", "long": "inf"}, 400, "long"),
        ({"lat": "45.1", "long": None}, 400, "lat and long"),
        ({"lat": None, "long": None}, 400, "location"),
        ({"service_code": None}, 400, "service_code"),
        ({"service_code": "nope"}, 404, "nope"),
        ({"description": "x" * 4001}, 400, "4000"),
        ({"address_string": "x" * 301}, 400, "address_string"),
        ({"email": "not-an-address"}, 400, "email"),
        ({"phone": "12"}, 400, "phone"),
        ({"media_url": "ftp://example.org/a.jpg"}, 400, "media_url"),
        ({"media_url": "http://127.0.0.1:6379/x"}, 400, "media_url"),
        ({"media_url": "http://169.254.169.254/latest"}, 400, "media_url"),
        ({"media_url": "http://localhost/x.jpg"}, 400, "media_url"),
        ({"media_url": "http://example.org:99999/x.jpg"}, 400, "media_url"),
        ({"first_name": "x" * 101}, 400, "first_name"),
        ({"description": "buca\x00 in via Roma"}, 400, "control"),
    ],
)
def test_post_validation_errors(
    app: Flask, client: FlaskClient, key: str, fields: dict[str, Any], status: int, says: str
) -> None:
    assert says in json_error(post(client, key, **fields), status)
    assert says in xml_error(post(client, key, fmt="xml", **fields), status)
    assert cases_in(app) == []


def test_post_without_description_registers_the_service_name(
    app: Flask, client: FlaskClient, key: str
) -> None:
    created(post(client, key, description=None, lat=None, long=None, address_string="Via Po 1"))
    [case] = cases_in(app)
    assert case.original_text == "Buche e manto stradale"
    assert case.lat is None and case.address == "Via Po 1"


def test_post_body_size_and_rate_are_limited(app: Flask, client: FlaskClient, key: str) -> None:
    r = post(client, key, description="x" * 70_000)
    assert "64 KB" in json_error(r, 413)
    app.config["OPEN311_POSTS_PER_MINUTE"] = 2
    results = [post(client, key).status_code for _ in range(5)]
    assert results[0] == 201 and results[-1] == 429
    assert len(cases_in(app)) == results.count(201) < 5


def test_media_url_becomes_a_photo_the_worker_downloads(
    app: Flask, client: FlaskClient, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import infra.dispatch as dispatch
    from workers import tasks

    queued: list[tuple[list[int], list[int]]] = []

    def enqueue(outbox: list[int], media: list[int] | None = None, *more: Any) -> bool:
        queued.append((outbox, media or []))
        return True

    monkeypatch.setattr(dispatch, "enqueue", enqueue)
    with photo_server() as url:
        # a public URL is accepted as is; loopback only where the deployment allows it
        assert "media_url" in json_error(post(client, key, media_url=url), 400)
        app.config["OPEN311_ALLOW_PRIVATE_MEDIA"] = True
        rid = created(post(client, key, media_url=url))
        [case] = cases_in(app)
        [att] = case.attachments
        assert (att.kind, att.state, att.source_url) == ("photo", "pending", url)
        assert queued and queued[-1][1] == [att.id]  # handed to the worker after the commit
        with app.app_context():
            assert tasks.fetch_media.run(att.id) == "stored"
    with rt(app).sessions() as s:
        stored = s.get(Attachment, att.id)
        assert stored is not None and stored.state == "stored" and stored.size == len(PHOTO)
    got = gets(client, f"/requests/{rid}.json").get_json()[0]
    assert got["media_url"] == url


def test_provider_credentials_never_go_to_an_apps_media_host() -> None:
    """An Open311 photo is downloaded by the SMS worker's fetch: with the provider's account
    it must not carry the provider's credentials to the app's host."""
    from infra.provider import TwilioProvider

    with photo_server() as url, photo_server() as provider_url:
        base = provider_url.rsplit("/", 1)[0]
        p = TwilioProvider("AC" + "0" * 32, "secret-token", base_url=base, allow_private_media=True)
        _Photo.seen_auth.clear()
        assert p.fetch_media(url, 1000) == (PHOTO, "image/png")
        assert p.fetch_media(provider_url, 1000) == (PHOTO, "image/png")
        assert _Photo.seen_auth[0] is None  # the app's host: anonymous
        assert (_Photo.seen_auth[1] or "").startswith("Basic ")  # the provider: authenticated


# ---------------------------------------------------------------- GET requests


def sms_case(
    app: Flask, muni: Municipality, text: str = "lampione spento, sono Mario Rossi"
) -> Case:
    with transaction(rt(app).sessions) as s:
        return register(
            s,
            Ctx(muni, datetime.now(UTC)),
            confirm=True,
            channel="sms",
            text=text,
            phone="+393339998877",
        ).case


def test_get_request_by_id(app: Flask, client: FlaskClient, key: str) -> None:
    rid = created(post(client, key, address_string="Via Roma 12"))
    [item] = gets(client, f"/requests/{rid}.json").get_json()
    assert list(item) == list(FIELDS)
    assert item["service_request_id"] == rid and item["status"] == "open"
    assert item["service_code"] == "strade" and item["service_name"] == "Buche e manto stradale"
    assert item["agency_responsible"] == "Lavori Pubblici e Manutenzioni"
    assert item["description"] == "Buca profonda davanti al civico 12"
    assert item["address"] == "Via Roma 12" and item["lat"] == 45.1234 and item["long"] == 9.5678
    for f in ("requested_datetime", "updated_datetime", "expected_datetime"):
        when = datetime.fromisoformat(item[f])
        assert when.utcoffset() in (timedelta(hours=1), timedelta(hours=2))  # Europe/Rome
    assert datetime.fromisoformat(item["expected_datetime"]) > datetime.fromisoformat(
        item["requested_datetime"]
    )
    # the register's own form works too, and XML gives a one-element list
    year, number = rid.split("-")
    assert (
        gets(client, f"/requests/{year}/{number}.json").get_json()[0]["service_request_id"] == rid
    )
    root = xml_of(gets(client, f"/requests/{rid}.xml"))
    assert root.tag == "service_requests" and [c.tag for c in root] == ["request"]
    assert [e.tag for e in root[0]] == list(FIELDS)
    assert root[0].findtext("status") == "open"
    assert "9999-0000001" in json_error(gets(client, "/requests/9999-0000001.json"), 404)
    assert xml_error(gets(client, "/requests/zzz.xml"), 404)


def test_get_requests_filters(
    app: Flask, client: FlaskClient, key: str, staff: Staff, muni: Municipality
) -> None:
    a = created(post(client, key, service_code="strade"))
    b = created(post(client, key, service_code="illuminazione"))
    c = created(post(client, key, service_code="rifiuti"))
    staff.add("urp", "urp")
    r = staff.post("urp", f"/cases/{c}/not_competent", {"reply": "Competenza della Provincia"})
    assert r.status_code == 200, r.get_json()

    def ids(**params: str) -> list[str]:
        r = gets(client, "/requests.json", **params)
        assert r.status_code == 200, r.get_data(as_text=True)
        return [x["service_request_id"] for x in r.get_json()]

    assert ids() == [c, b, a]  # newest first, default window: the last 90 days
    assert ids(status="open") == [b, a]
    assert ids(status="closed") == [c]
    assert ids(status="open,closed") == [c, b, a]
    assert ids(service_code="strade,rifiuti") == [c, a]
    assert ids(service_request_id=f"{a},{c.replace('-', '/')}") == [c, a]
    # service_request_id overrides the other filters
    assert ids(service_request_id=a, status="closed") == [a]
    now = datetime.now(UTC)
    assert ids(start_date=(now - timedelta(days=1)).isoformat()) == [c, b, a]
    assert ids(start_date=(now + timedelta(hours=1)).isoformat()) == []
    assert ids(end_date=(now - timedelta(hours=1)).isoformat()) == []
    assert ids(start_date="2026-01-01T00:00:00Z", end_date="2026-01-31T00:00:00Z") == []
    [closed] = gets(client, "/requests.json", status="closed").get_json()
    assert closed["status_notes"] == "Competenza della Provincia"
    # malformed filters: 400 in the spec's format, never a 500
    for params, says in (
        ({"status": "pending"}, "status"),
        ({"service_code": "nope"}, "nope"),
        ({"start_date": "ieri"}, "start_date"),
        ({"end_date": "2026-13-45"}, "end_date"),
        ({"start_date": "2026-03-01", "end_date": "2026-01-01"}, "before"),
        ({"start_date": "2025-01-01T00:00:00Z", "end_date": "2026-01-01T00:00:00Z"}, "90"),
        ({"service_request_id": "abc"}, "abc"),
        ({"service_request_id": ",".join(["2026-1"] * 201)}, "200"),
    ):
        assert says in json_error(gets(client, "/requests.json", **params), 400)
    assert "status" in xml_error(gets(client, "/requests.xml", status="x"), 400)


def test_requests_xml_lists_requests(app: Flask, client: FlaskClient, key: str) -> None:
    created(post(client, key))
    created(post(client, key, service_code="rifiuti"))
    root = xml_of(gets(client, "/requests.xml"))
    assert root.tag == "service_requests" and [c.tag for c in root] == ["request", "request"]
    assert [r.findtext("service_code") for r in root] == ["rifiuti", "strade"]
    assert root[1].findtext("lat") == "45.1234"


def test_extensions_add_the_public_history_as_notes(
    app: Flask, client: FlaskClient, key: str, staff: Staff
) -> None:
    rid = created(post(client, key))
    staff.add("urp", "urp")
    staff.add("op", "operator", "LLPP")
    assert staff.post("op", f"/cases/{rid}/take").status_code == 200
    assert (
        staff.post("op", f"/cases/{rid}/note", {"text": "interno: chiamare ditta", "public": False})
    ).status_code == 200
    r = staff.post("op", f"/cases/{rid}/note", {"text": "Sopralluogo\x0b fissato", "public": True})
    assert r.status_code == 200
    plain = gets(client, f"/requests/{rid}.json").get_json()[0]
    assert "notes" not in plain and plain["status_notes"] == "Sopralluogo\x0b fissato"
    [item] = gets(client, f"/requests/{rid}.json", extensions="true").get_json()
    notes = item["notes"]
    assert [n["type"] for n in notes] == ["opened", "activity", "activity"]  # register, take, note
    assert notes[-1]["description"] == "Sopralluogo\x0b fissato"
    assert all(set(n) == {"datetime", "type", "summary", "description", "status"} for n in notes)
    assert all(datetime.fromisoformat(n["datetime"]).utcoffset() is not None for n in notes)
    assert "interno" not in json.dumps(item)  # internal notes stay internal
    root = xml_of(gets(client, f"/requests/{rid}.xml", extensions="true"))
    xnotes = root.findall("request/notes/note")
    # XML 1.0 cannot carry \x0b at all: it is left out so that clients can still parse
    assert len(xnotes) == 3 and xnotes[-1].findtext("description") == "Sopralluogo fissato"
    listed = gets(client, "/requests.json", extensions="true").get_json()
    assert listed[0]["notes"] == notes


def test_personal_data_is_never_returned(
    app: Flask, client: FlaskClient, key: str, muni: Municipality
) -> None:
    rid = created(
        post(
            client,
            key,
            phone="333 123 4567",
            first_name="Mariagrazia",
            last_name="Bianchini",
            email="mgb@example.org",
        )
    )
    sms_case(app, muni)
    bodies = []
    for fmt in ("json", "xml"):
        bodies.append(gets(client, f"/requests.{fmt}", extensions="true").get_data(as_text=True))
        bodies.append(
            gets(client, f"/requests/{rid}.{fmt}", extensions="true").get_data(as_text=True)
        )
    for body in bodies:
        for secret in ("Mariagrazia", "Bianchini", "mgb@example", "1234567", "9998877", "Rossi"):
            assert secret not in body
    # an SMS citizen's words are not published; its service and status are
    items = gets(client, "/requests.json").get_json()
    sms = next(i for i in items if i["service_request_id"] != rid)
    assert sms["description"] == "" and sms["status"] == "open"


# ---------------------------------------------------------------- tokens


def test_tokens_resolve_to_the_request(app: Flask, client: FlaskClient, key: str) -> None:
    r = post(client, key)
    rid = created(r)
    token = r.get_json()[0]["token"]
    assert gets(client, f"/tokens/{token}.json").get_json() == [
        {"service_request_id": rid, "token": token}
    ]
    root = xml_of(gets(client, f"/tokens/{token}.xml"))
    assert root.findtext("request/service_request_id") == rid
    assert root.findtext("request/token") == token
    assert "token" in json_error(gets(client, f"/tokens/{token[:-2]}xx.json"), 404)
    assert "token" in json_error(gets(client, "/tokens/abc.json"), 404)
    other = client.get(f"{BASE}/tokens/{token}.json?jurisdiction_id=valfiorita")
    assert "token" in json_error(other, 404)


# ---------------------------------------------------------------- command line


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lineadiretta.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_apikey_add_prints_the_key_last(db_url: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=db_url,
        LINEADIRETTA_CONFIG=str(ROOT / "config.toml"),
        INSTANCE_PATH=str(tmp_path / "instance"),
        SECRET_KEY="cli-test",
    )
    env.pop("REDIS_URL", None)
    out = _cli(env, "apikey", "add", "FixMyCity", "--municipality", "valfiorita")
    assert out.returncode == 0, out.stderr
    plaintext = out.stdout.strip().splitlines()[-1]
    assert len(plaintext) >= 40 and " " not in plaintext
    again = _cli(env, "apikey", "add", "FixMyCity", "--municipality", "valfiorita")
    assert again.returncode != 0 and "already exists" in again.stderr
    bad = _cli(env, "apikey", "add", "x", "--municipality", "atlantide")
    assert bad.returncode != 0 and "atlantide" in bad.stderr

    from lineadiretta.app import create_app

    app = create_app(
        {
            "DATABASE_URL": db_url,
            "SECRET_KEY": "t",
            "CONFIG_PATH": env["LINEADIRETTA_CONFIG"],
            "PUBLIC_BASE_URL": "https://comune.example.it",
        }
    )
    try:
        with rt(app).sessions() as s:
            row = s.scalar(select(ApiKey))
            assert row is not None and row.municipality == "valfiorita"
            assert plaintext not in (row.key_hash, row.name)  # only the hash is kept
        r = post(app.test_client(), plaintext, service_code="illuminazione")
        assert r.status_code == 201, r.get_data(as_text=True)
        with rt(app).sessions() as s:
            assert s.scalar(select(func.count()).select_from(Case)) == 1
    finally:
        rt(app).engine.dispose()


# ---------------------------------------------------------------- a published client


class _Photo(http.server.BaseHTTPRequestHandler):
    seen_auth: list[str | None] = []  # noqa: RUF012 - the test reads what arrived

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PHOTO)))
        self.end_headers()
        self.wfile.write(PHOTO)

    def log_message(self, *args: Any) -> None:
        pass


class photo_server:
    """A loopback HTTP server that serves one PNG (the app's media_url)."""

    def __enter__(self) -> str:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Photo)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/buca.png"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def live(app: Flask) -> Iterator[str]:
    """The real app on a loopback port, served by werkzeug in a thread."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{BASE}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_published_open311_client_lists_posts_and_reads_back(
    app: Flask, live: str, key: str
) -> None:
    """georeport (PyPI) reads services and requests in JSON and XML. It has no POST, so here the
    POST is the specification's form request, sent with requests (georeport's own HTTP
    library); the next test has a published client, `three`, do the POST too."""
    import requests
    from georeport import GeoReport

    client = GeoReport(live, jurisdiction="monteverde", api_key=key)
    services = client.get_service_list()
    assert "strade" in [s["service_code"] for s in services]
    assert client.get_service_definition("strade") == {"service_code": "strade", "attributes": []}
    xml_client = GeoReport(live, jurisdiction="monteverde", output_format="xml")
    assert [s["service_code"] for s in xml_client.get_service_list()] == [
        s["service_code"] for s in services
    ]

    r = requests.post(
        f"{live}/requests.json",
        data={
            "api_key": client.api_key,
            "jurisdiction_id": client.jurisdiction,
            "service_code": "strade",
            "lat": "45.1234",
            "long": "9.5678",
            "address_string": "Via Roma 12",
            "description": "Buca profonda davanti al civico 12",
            "phone": "3331234567",
            "first_name": "Maria",
        },
        timeout=10,
    )
    assert r.status_code == 201, r.text
    rid = r.json()[0]["service_request_id"]

    got = client.get_service_request(rid)
    assert got["service_request_id"] == rid and got["status"] == "open"
    assert got["service_code"] == "strade" and got["address"] == "Via Roma 12"
    assert got["description"] == "Buca profonda davanti al civico 12"
    assert "Maria" not in json.dumps(got)
    xml_got = xml_client.get_service_request(rid)
    assert xml_got["service_request_id"] == rid and xml_got["lat"] == "45.1234"
    listed = client.get_service_requests(status="open", service_code="strade")
    assert [x["service_request_id"] for x in listed] == [rid]

    [case] = cases_in(app)
    assert case.channel == "api" and case.protocol == rid.replace("-", "/")
    assert case.phone == "+393331234567"


def _three_client() -> Any:
    """`three` 0.8.0 (PyPI, by Zach Williams): an Open311 client written for Python 2. Its one
    Python-2-only name is `itertools.ifilter`; aliasing it to the built-in `filter` (which is
    what Python 3 renamed it to) is the whole shim: the client's own code does the rest."""
    import itertools

    if not hasattr(itertools, "ifilter"):
        itertools.ifilter = filter  # type: ignore[attr-defined]
    from three import Three

    return Three


def test_the_published_three_client_lists_posts_and_reads_back(
    app: Flask, live: str, key: str
) -> None:
    three_cls = _three_client()
    client = three_cls(live, api_key=key, jurisdiction="monteverde")
    services = client.services()
    assert "strade" in [s["service_code"] for s in services]
    posted = client.post(
        "strade",
        address="Via Garibaldi 8",
        name="Luca Bianchi",
        phone="3339876543",
        email="luca@example.org",
        description="Tombino sollevato all'incrocio",
        lat="45.2",
        long="9.1",
    )
    assert client.post_response.status_code == 201, posted
    rid = posted[0]["service_request_id"]
    token = posted[0].get("token")
    [got] = client.request(rid)
    assert got["service_request_id"] == rid and got["status"] == "open"
    assert got["description"] == "Tombino sollevato all'incrocio"
    assert got["address"] == "Via Garibaldi 8"
    assert "Bianchi" not in json.dumps(got) and "luca@" not in json.dumps(got)
    listed = client.requests("strade", status="open")
    assert rid in [x["service_request_id"] for x in listed]
    if token:
        assert client.token(token)[0]["service_request_id"] == rid
    [case] = cases_in(app)
    assert case.channel == "api" and case.protocol == rid.replace("-", "/")
    assert case.phone == "+393339876543" and case.category == "strade"


def test_the_worker_fetches_an_apps_media_only_from_a_public_host() -> None:
    """A name that resolves to an internal address (here localhost) is refused at download
    time, whatever the POST-time check saw; so is a redirect to one."""
    from infra.provider import SendError, TwilioProvider

    with photo_server() as url, photo_server() as provider_url:
        base = provider_url.rsplit("/", 1)[0]
        p = TwilioProvider("AC" + "0" * 32, "secret-token", base_url=base)
        by_name = url.replace("127.0.0.1", "localhost")
        for target in (url, by_name):
            with pytest.raises(SendError) as err:
                p.fetch_media(target, 1000)
            assert "not a public address" in str(err.value) and not err.value.retryable
        assert p.fetch_media(provider_url, 1000) == (PHOTO, "image/png")  # the provider's own
    with pytest.raises(SendError) as err:
        p.fetch_media("http://no-such-host.invalid/x.png", 1000)
    assert err.value.retryable  # may resolve later
