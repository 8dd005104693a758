"""Each workflow step's inputs are written once (cases/step_inputs.py): the domain validates a
body with them, the console's forms carry exactly their fields (with their limits), and the
OpenAPI description is generated from them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask

from cases.config import Municipality
from cases.errors import Invalid
from cases.step_inputs import (
    Inputs,
    NoteInputs,
    RegisterInputs,
    ReplyInputs,
    from_form,
    limits,
    parse,
    schema,
)
from cases.workflow import STEPS
from tests.conftest import Staff
from tests.test_console import browser, new_case, team, url  # noqa: F401 (team: a fixture)

MODELS = sorted({step.inputs for step in STEPS.values()}, key=lambda m: m.__name__)
ALL_MODELS = [*MODELS, RegisterInputs]


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_a_body_that_does_not_fit_is_refused_naming_the_field(model: type[Inputs]) -> None:
    for name, field in model.model_fields.items():
        wrong: Any = [1] if field.annotation is not bool else "yes"
        with pytest.raises(Invalid, match=f"^'{name}' "):
            parse(model, {name: wrong})
        _, longest = limits(model, name)
        if longest:
            with pytest.raises(Invalid, match=f"^'{name}' is longer than {longest} characters"):
                parse(model, {name: "x" * (longest + 1)})
    for name in model.required:
        for missing in ({}, {name: None}, {name: "   "}):
            with pytest.raises(Invalid, match=f"^'{name}' "):
                parse(model, missing)
    with pytest.raises(Invalid, match="must be an object"):
        parse(model, ["not", "an", "object"])  # type: ignore[arg-type]


def test_inputs_are_trimmed_and_unknown_keys_ignored() -> None:
    got = parse(NoteInputs, {"text": "  buca chiusa  ", "public": True, "colour": "red"})
    assert got == NoteInputs(text="buca chiusa", public=True)
    assert parse(ReplyInputs, {"reply": "ok"}).reply == "ok"
    # a console form: a checkbox sends "1", an unticked one nothing
    assert from_form(NoteInputs, {"text": "x", "public": "1"}) == {"text": "x", "public": True}
    assert from_form(NoteInputs, {"text": "x"}) == {"text": "x", "public": False}


def test_the_api_refuses_a_step_body_that_does_not_fit(
    app: Flask, staff: Staff, muni: Municipality
) -> None:
    staff.add("urp", "urp")
    case = new_case(app, muni, "buca in via Roma")
    p = url(case)
    r = staff.post("urp", f"/cases/{p}/note", {"text": "visto", "public": "yes"})
    assert r.status_code == 400 and r.get_json()["error"] == "'public' must be true or false"
    r = staff.post("urp", f"/cases/{p}/close", {"reply": "x" * 1001})
    assert r.status_code in (400, 409)  # not resolved yet: the transition is checked first
    r = staff.post("urp", f"/cases/{p}/note", {"text": "x" * 4001})
    assert r.status_code == 400 and "'text' is longer than 4000" in r.get_json()["error"]
    assert staff.post("urp", f"/cases/{p}/note", {"text": " visto "}).status_code == 200


def _forms(html: str) -> dict[str, str]:
    return dict(re.findall(r'id="form-([a-z_]+)">(.*?)</form>', html, re.S))


def _fields(form: str) -> dict[str, str]:
    """Each field's name and its tag (the first tag of that name)."""
    out: dict[str, str] = {}
    for tag in re.findall(r"<(?:input|textarea|select)\b[^>]*>", form):
        name = re.search(r'name="([^"]+)"', tag)
        if name and name.group(1) not in ("csrf_token", "next"):
            out.setdefault(name.group(1), tag)
    return out


@pytest.mark.usefixtures("team")
def test_the_console_forms_carry_each_steps_inputs(app: Flask, muni: Municipality) -> None:
    boss = browser(app, "boss")  # a supervisor may do every step
    case = new_case(app, muni, "testo senza categoria", phone="3331234567")
    p = f"/console/cases/{url(case)}"
    seen: set[str] = set()
    moves = [
        ("assign", {"office": "LLPP"}),
        ("take", {}),
        ("resolve", {}),
        ("close", {"reply": "fatto"}),
    ]
    for move, body in [*moves, ("", {})]:
        forms = _forms(boss.get(p).get_data(as_text=True))
        for action, form in forms.items():
            model = STEPS[action].inputs
            fields = _fields(form)
            assert set(fields) == set(model.model_fields), action
            for name, tag in fields.items():
                needed, longest = limits(model, name)
                if longest and "<select" not in tag:
                    assert f'maxlength="{longest}"' in tag, (action, name)
                if needed and "<select" not in tag and action != "duplicate":
                    assert " required" in tag, (action, name)
            seen.add(action)
        if move:
            assert boss.post(f"{p}/{move}", body).status_code == 303, move
    assert seen == set(STEPS)


def test_the_openapi_bodies_are_the_step_inputs(client: Any) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    body = spec["paths"]["/cases/{protocol}/{action}"]["post"]["requestBody"]
    refs = {
        r["$ref"].rsplit("/", 1)[1] for r in body["content"]["application/json"]["schema"]["anyOf"]
    }
    assert refs == {m.__name__ for m in MODELS}
    for model in MODELS:
        assert set(schemas[model.__name__]["properties"]) == set(model.model_fields)
        assert schemas[model.__name__].get("required", []) == list(model.required)
    assert schemas["NoteInputs"]["properties"]["text"]["maxLength"] == 4000
    assert schemas["NoteInputs"]["properties"]["public"]["type"] == "boolean"


def test_a_contact_staff_register_is_read_with_its_own_model(
    app: Flask, staff: Staff, client: Any
) -> None:
    """POST /cases takes RegisterInputs: the API refuses what does not fit it, and the
    OpenAPI's NewCase is its schema."""
    staff.add("urp", "urp")
    r = staff.post("urp", "/cases", {"text": "buca", "channel": "sms"})
    assert r.status_code == 400
    assert r.get_json()["error"] == "'channel' must be one of counter, voice, email, web"
    r = staff.post("urp", "/cases", {"text": "buca", "phone": 3331234567})
    assert r.status_code == 400 and r.get_json()["error"] == "'phone' must be a string"
    assert staff.post("urp", "/cases", {"text": "  "}).status_code == 400
    r = staff.post("urp", "/cases", {"text": "buca", "phone": "3331234567", "address": ""})
    assert r.status_code == 201 and r.get_json()["channel"] == "counter"
    new_case = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]["NewCase"]
    assert new_case == schema(RegisterInputs)
    assert new_case["properties"]["channel"]["enum"] == ["counter", "voice", "email", "web"]
