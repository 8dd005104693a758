"""The operators' API over HTTP: registration, listing, steps, errors, office scoping."""

from __future__ import annotations

from typing import Any

import pytest

from cases.config import Municipality
from tests.conftest import Staff


@pytest.fixture
def team(staff: Staff, muni: Municipality) -> dict[str, str]:
    offices = [o.code for o in muni.offices if not o.urp]
    staff.add("urp", "urp")
    staff.add("ref", "referent", offices[0])
    staff.add("op", "operator", offices[0])
    staff.add("op_other", "operator", offices[1])
    staff.add("boss", "supervisor")
    return {"office": offices[0], "other": offices[1]}


def _new(staff: Staff, **body: Any) -> dict[str, Any]:
    payload = {"channel": "counter", "phone": "333 123 4567", "text": "testo senza categoria"}
    payload.update(body)
    r = staff.post("urp", "/cases", payload)
    assert r.status_code == 201, r.get_json()
    data: dict[str, Any] = r.get_json()
    return data


def url(protocol: str) -> str:
    return protocol.replace("/", "-")


def test_register_at_the_counter(staff: Staff, team: dict[str, str], muni: Municipality) -> None:
    c = _new(staff, text="C'è una buca enorme in via Garibaldi")
    assert c["protocol"].endswith("/0000001")
    assert c["phone"] == "+393331234567"  # normalised to E.164
    assert c["channel"] == "counter" and c["description"].startswith("C'è una buca")
    assert c["suggested_category"] is not None
    assert c["events"][0]["action"] == "register" and c["events"][0]["actor"] == "Urp (urp)"
    # a confident suggestion routes the case at once (auto_assign): history shows both steps once
    assert [e["action"] for e in c["events"]] == ["register", "assign"]
    assert c["status"] == "assigned" and c["office"] == muni.category(c["category"]).office
    got = staff.get("urp", f"/cases/{url(c['protocol'])}").get_json()
    assert got["protocol"] == c["protocol"]
    for key in (
        "protocol",
        "status",
        "channel",
        "category",
        "office",
        "assignee",
        "description",
        "due_at",
        "events",
    ):
        assert key in got


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"channel": "counter", "phone": "123"}, "text"),
        ({"channel": "fax", "text": "x"}, "channel"),
        ({"channel": "counter", "text": "x", "phone": "not a phone"}, "phone"),
        ({"channel": "counter", "text": "x", "category": "nope"}, "category"),
        ({"channel": "counter", "text": 5}, "text"),
        ({"channel": "counter", "text": "x" * 10_001}, "longer"),
        ({"channel": "counter", "text": "buca\u0000"}, "NUL"),
        ({"channel": "counter", "text": "buca", "address": "via\u0000Roma"}, "NUL"),
    ],
)
def test_malformed_registration_is_400_and_stores_nothing(
    staff: Staff, team: dict[str, str], body: dict[str, Any], message: str
) -> None:
    r = staff.post("urp", "/cases", body)
    assert r.status_code == 400 and message in r.get_json()["error"]
    assert staff.get("urp", "/cases").get_json()["total"] == 0


def test_body_that_is_not_json_object_is_400(staff: Staff, team: dict[str, str]) -> None:
    r = staff.call("urp", "POST", "/cases", data="{not json", content_type="application/json")
    assert r.status_code == 400
    r = staff.post("urp", "/cases", ["a", "list"])
    assert r.status_code == 400


def test_auth_is_required_and_checked(client: Any, staff: Staff, team: dict[str, str]) -> None:
    assert client.get("/api/v1/cases").status_code == 401
    r = client.get("/api/v1/cases", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "token" in r.get_json()["error"]
    assert client.get("/api/v1/cases", headers={"Authorization": "Basic abc"}).status_code == 401


def test_workflow_over_http_and_error_codes(staff: Staff, team: dict[str, str]) -> None:
    p = url(_new(staff)["protocol"])
    assert staff.post("op", f"/cases/{p}/take").status_code == 404  # not routed to op's office yet
    r = staff.post("urp", f"/cases/{p}/assign", {"office": team["office"]})
    assert r.status_code == 200 and r.get_json()["status"] == "assigned"
    assert staff.post("urp", f"/cases/{p}/take").status_code == 403  # URP does not work cases
    assert staff.post("op", f"/cases/{p}/resolve").status_code == 409  # must take first
    assert staff.post("ref", f"/cases/{p}/dispatch", {"operator": "op"}).status_code == 200
    r = staff.post("op", f"/cases/{p}/take")
    assert r.status_code == 200 and r.get_json()["assignee"] == "op"
    assert staff.post("op", f"/cases/{p}/note", {"public": "yes", "text": "x"}).status_code == 400
    assert (
        staff.post("op", f"/cases/{p}/note", {"text": "visto", "public": True}).status_code == 200
    )
    assert staff.post("op", f"/cases/{p}/resolve", {"note": "fatto"}).status_code == 200
    assert staff.post("urp", f"/cases/{p}/close", {}).status_code == 400  # the reply is required
    r = staff.post("urp", f"/cases/{p}/close", {"reply": "Fatto, grazie della segnalazione."})
    assert r.status_code == 200 and r.get_json()["status"] == "closed"
    assert staff.post("urp", f"/cases/{p}/close", {"reply": "ancora"}).status_code == 409
    assert staff.post("urp", f"/cases/{p}/fly").status_code == 404
    assert staff.post("urp", "/cases/2026-0099999/assign", {"office": "X"}).status_code == 404
    assert staff.get("urp", "/cases/garbage").status_code == 400
    events = staff.get("urp", f"/cases/{p}").get_json()["events"]
    assert [e["action"] for e in events] == [
        "register",
        "assign",
        "dispatch",
        "take",
        "note",
        "resolve",
        "close",
    ]
    assert staff.post("op", f"/cases/{p}/annul", {"reason": "x"}).status_code == 403
    r = staff.post("boss", f"/cases/{p}/annul", {"reason": "doppia registrazione"})
    assert r.status_code == 200 and r.get_json()["annulment"]["reason"] == "doppia registrazione"


def test_operators_see_only_their_office(staff: Staff, team: dict[str, str]) -> None:
    mine = url(_new(staff)["protocol"])
    theirs = url(_new(staff)["protocol"])
    staff.post("urp", f"/cases/{mine}/assign", {"office": team["office"]})
    staff.post("urp", f"/cases/{theirs}/assign", {"office": team["other"]})
    assert staff.get("op", f"/cases/{mine}").status_code == 200
    assert staff.get("op", f"/cases/{theirs}").status_code == 404
    assert staff.post("op", f"/cases/{theirs}/take").status_code == 404
    listed = [c["protocol"] for c in staff.get("op", "/cases").get_json()["items"]]
    assert listed == [mine.replace("-", "/")]
    assert staff.get("urp", "/cases").get_json()["total"] == 2
    assert staff.post("op", "/cases", {"text": "x", "phone": "3331234567"}).status_code == 403


def test_list_filters_and_pagination(
    staff: Staff, team: dict[str, str], muni: Municipality
) -> None:
    cat = muni.categories[0]
    for i in range(5):
        _new(staff, text=f"caso numero {i}", phone=f"+39333000000{i}")
    _new(staff, text="una segnalazione particolare", category=cat.code, channel="email")
    r = staff.get("urp", "/cases?per_page=2&page=2").get_json()
    assert r["total"] == 6 and len(r["items"]) == 2 and r["page"] == 2
    assert staff.get("urp", f"/cases?category={cat.code}").get_json()["total"] == 1
    assert staff.get("urp", "/cases?channel=email").get_json()["total"] == 1
    assert staff.get("urp", "/cases?q=PARTICOLARE").get_json()["total"] == 1
    assert staff.get("urp", "/cases?phone=333 000 0003").get_json()["total"] == 1
    assert staff.get("urp", "/cases?status=received").get_json()["total"] == 5
    assert staff.get("urp", "/cases?status=open").get_json()["total"] == 6
    assert staff.get("urp", "/cases?status=bogus").status_code == 400
    assert staff.get("urp", "/cases?date_from=2020-01-01").get_json()["total"] == 6
    assert staff.get("urp", "/cases?date_to=2020-01-01").get_json()["total"] == 0
    assert staff.get("urp", "/cases?date_from=yesterday").status_code == 400
    assert staff.get("urp", "/cases?per_page=1000").status_code == 400
    office = cat.office
    assert staff.get("urp", f"/cases?office={office}").get_json()["total"] == 1


def test_notifications_reach_the_right_people(staff: Staff, team: dict[str, str]) -> None:
    p = url(_new(staff)["protocol"])
    staff.post("urp", f"/cases/{p}/assign", {"office": team["office"]})
    ref = staff.get("ref", "/notifications").get_json()["items"]
    assert [n["kind"] for n in ref] == ["assigned"] and ref[0]["protocol"] == p.replace("-", "/")
    staff.post("ref", f"/cases/{p}/dispatch", {"operator": "op"})
    staff.post("op", f"/cases/{p}/take")
    staff.post("op", f"/cases/{p}/resolve")
    urp = staff.get("urp", "/notifications").get_json()["items"]
    assert urp[0]["kind"] == "resolved"
    nid = urp[0]["id"]
    assert staff.post("urp", f"/notifications/{nid}/read").get_json()["read"] is True
    assert staff.get("urp", "/notifications?unread=1").get_json()["items"] == []
    assert staff.post("op", f"/notifications/{nid}/read").status_code == 404


def test_openapi_describes_the_api(client: Any) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert {"/cases", "/cases/{protocol}", "/cases/{protocol}/{action}", "/notifications"} <= set(
        spec["paths"]
    )


def test_case_json_matches_the_openapi_schema(
    staff: Staff, team: dict[str, str], client: Any
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    spec = client.get("/api/v1/openapi.json").get_json()
    p = url(_new(staff)["protocol"])
    staff.post("urp", f"/cases/{p}/assign", {"office": team["office"]})
    schema = {"$ref": "#/components/schemas/Case", "components": spec["components"]}
    jsonschema.validate(staff.get("urp", f"/cases/{p}").get_json(), schema)
    listing = {"$ref": "#/components/schemas/CaseList", "components": spec["components"]}
    jsonschema.validate(staff.get("urp", "/cases").get_json(), listing)


def test_healthz(client: Any) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json()["database"] == "ok"
