"""What each workflow step takes, typed, once.

Each step of `cases.workflow.STEPS` names one of these models. From it the domain validates
the body it is given (`parse`: a clear Invalid naming the field, never a KeyError), the
console reads its form (`from_form`: every field is a form field of the same name, a
checkbox for a yes/no) and the API's OpenAPI description is generated (`schema`). A new
input is added here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
)
from pydantic import StrictInt as _StrictInt

from cases.errors import Invalid
from cases.models import Channel


def _blank_for_none(value: Any) -> Any:
    return "" if value is None else value


def _says(limit: int, description: str) -> Any:
    return Field(max_length=limit, description=description)


# Text fields: a string (null counts as empty), trimmed, at most so many characters.
Blank = BeforeValidator(_blank_for_none)
Office = Annotated[str, Blank, _says(32, "the office's code (or a category that routes to one)")]
Category = Annotated[
    str, Blank, _says(64, "the category's code: sets it, and the office if none is given")
]
Note = Annotated[str, Blank, _says(4000, "a note for the case's history")]
NoteText = Annotated[str, Blank, _says(4000, "the note")]
Reason = Annotated[str, Blank, _says(4000, "why (kept in the history)")]
Reply = Annotated[str, Blank, _says(1000, "the answer the citizen reads")]
Protocol = Annotated[str, Blank, _says(20, "the master case's protocol number")]
Operator = Annotated[_StrictInt | str, Blank, Field(description="the operator's user name or id")]


class Inputs(BaseModel):
    """A step's inputs. Fields not listed are ignored; `required` are those that may not be
    empty (a missing or blank one is refused as required)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)
    required: ClassVar[tuple[str, ...]] = ()


Model = TypeVar("Model", bound=Inputs)


class NoInputs(Inputs):
    """The step takes nothing."""


class AssignInputs(Inputs):
    """To an office, directly or through the category that routes to it."""

    office: Office = ""
    category: Category = ""
    note: Note = ""


class DispatchInputs(Inputs):
    """To one of the office's operators."""

    operator: Operator = ""
    note: Note = ""
    required = ("operator",)


class NoteInputs(Inputs):
    """A note; a public one is texted to the citizen."""

    text: NoteText = ""
    public: StrictBool = Field(False, description="texted to the citizen too")
    required = ("text",)


class ResolveInputs(Inputs):
    note: Note = ""


class ReplyInputs(Inputs):
    """Closing with the answer the citizen receives."""

    reply: Reply = ""
    required = ("reply",)


class ReasonInputs(Inputs):
    reason: Reason = ""
    required = ("reason",)


class DuplicateInputs(Inputs):
    """A duplicate of an open case, given by its protocol number."""

    of: Protocol = ""
    note: Note = ""
    required = ("of",)


# The channels staff register a contact from (the others are the citizens' own).
STAFF_CHANNELS = tuple(
    c.value for c in (Channel.COUNTER, Channel.VOICE, Channel.EMAIL, Channel.WEB)
)


def _staff_channel(value: str) -> str:
    if value not in STAFF_CHANNELS:
        raise ValueError(f"must be one of {', '.join(STAFF_CHANNELS)}")
    return value


Optional = Annotated[str, Blank]


class RegisterInputs(Inputs):
    """A contact staff register: taken at the counter, on the phone, by e-mail or on the web."""

    channel: Annotated[
        str,
        AfterValidator(_staff_channel),
        Field(description="how the contact came", json_schema_extra={"enum": list(STAFF_CHANNELS)}),
    ] = Channel.COUNTER.value
    text: Annotated[str, Blank, Field(description="what the citizen reported")] = ""
    phone: Optional = Field("", description="the citizen's phone, to text them the number")
    category: Optional = Field("", description="the category's code, if known")
    language: Optional = Field("", description="the citizen's language (it, en)")
    address: Optional = Field("", description="where")
    required = ("text",)


_SAID = {
    "string_too_long": "is longer than {max_length} characters",
    "too_long": "is longer than {max_length} characters",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
}


def parse(model: type[Model], body: Mapping[str, Any] | None) -> Model:
    """The step's inputs from a body (JSON, or a form read by `from_form`); Invalid, naming
    the field, for a value of the wrong kind, too long, or missing where required."""
    if body is not None and not isinstance(body, Mapping):
        raise Invalid("the body must be an object")
    try:
        inputs = model.model_validate(dict(body or {}))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "body"
        said = _SAID.get(first["type"])
        if first["type"] == "value_error":  # a rule of ours: its own words
            said = str(first["ctx"]["error"])
        if said is None and field == "operator":
            said = "(user name or id) is required"
        raise Invalid(
            f"'{field}' {(said or first['msg']).format(**first.get('ctx', {}))}"
        ) from None
    for name in model.required:
        value = getattr(inputs, name)
        if isinstance(value, str) and not value:
            raise Invalid(f"'{name}' is required")
    return inputs


def from_form(model: type[Inputs], form: Mapping[str, str]) -> dict[str, Any]:
    """The body a console form gives for this step: each field by its name; a yes/no field is
    a checkbox that sends "1"."""
    body: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if field.annotation is bool:
            body[name] = form.get(name) == "1"
        else:
            body[name] = form.get(name, "")
    return body


def limits(model: type[Inputs], name: str) -> tuple[bool, int | None]:
    """(whether the field is required, its longest length) for a form's attributes."""
    longest = next(
        (m.max_length for m in model.model_fields[name].metadata if hasattr(m, "max_length")),
        None,
    )
    return name in model.required, longest


def schema(model: type[Inputs]) -> dict[str, Any]:
    """The JSON schema of the step's body, for the OpenAPI description."""
    out = model.model_json_schema()
    out.pop("title", None)
    for prop in out.get("properties", {}).values():
        prop.pop("title", None)
    if model.required:
        out["required"] = list(model.required)
    return out
