"""The OpenAPI 3.1 description of /api/v1, served at /api/v1/openapi.json. The bodies of the
workflow steps are generated from their typed inputs (`cases.step_inputs`), the enums from
the models: what a step takes is written once, in the domain."""

from __future__ import annotations

from typing import Any

from cases.models import Channel, Status
from cases.step_inputs import Inputs, RegisterInputs, schema
from cases.workflow import STEPS

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_DT = {"type": "string", "format": "date-time"}
_NDT = {"type": ["string", "null"], "format": "date-time"}


def _err(desc: str) -> dict[str, Any]:
    return {
        "description": desc,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _input_models() -> list[type[Inputs]]:
    """Each step's inputs model, once (the JSON schema of a step's body)."""
    return list(dict.fromkeys(step.inputs for step in STEPS.values()))


def _fields(model: type[Inputs]) -> str:
    """What a step takes, in words: its fields, the required ones marked."""
    names = [f"{n} (required)" if n in model.required else n for n in model.model_fields]
    return ", ".join(names) or "nothing"


def spec() -> dict[str, Any]:
    case_props: dict[str, Any] = {
        "protocol": {"type": "string", "pattern": r"^\d{4}/\d{7}$"},
        "municipality": _STR,
        "registered_at": _DT,
        "received_at": _DT,
        "channel": {"type": "string", "enum": [c.value for c in Channel]},
        "phone": _NSTR,
        "description": _STR,
        "language": _STR,
        "status": {"type": "string", "enum": [s.value for s in Status]},
        "category": _NSTR,
        "category_name": _NSTR,
        "suggested_category": _NSTR,
        "suggestion_confidence": {"type": ["number", "null"]},
        "office": _NSTR,
        "office_name": _NSTR,
        "assignee": _NSTR,
        "assignee_name": _NSTR,
        "due_at": _DT,
        "overdue": {"type": "boolean"},
        "updated_at": _DT,
        "closed_at": _NDT,
        "master": _NSTR,
        "address": _NSTR,
        "annulment": {
            "type": ["object", "null"],
            "properties": {"at": _DT, "by": {"type": ["integer", "null"]}, "reason": _STR},
            "required": ["at", "by", "reason"],
        },
        "attachments": {"type": "array", "items": {"$ref": "#/components/schemas/Attachment"}},
        "allowed_actions": {"type": "array", "items": {"type": "string", "enum": list(STEPS)}},
        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
    }
    required = [k for k in case_props if k != "events"]
    protocol_param = {
        "name": "protocol",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": r"^\d{4}-\d{1,7}$"},
        "description": "Protocol number as written in URLs: 2026-0000123",
    }
    action_body = {
        "anyOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in _input_models()],
        "description": "; ".join(f"{name}: {_fields(step.inputs)}" for name, step in STEPS.items()),
    }
    auth_errors = {"401": _err("missing or wrong token")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Linea Diretta operators' API", "version": "1.0.0"},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": _STR, "status": {"type": "integer"}},
                    "required": ["error", "status"],
                },
                "Attachment": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "kind": _STR,
                        "url": _STR,
                        "content_type": _NSTR,
                        "size": {"type": ["integer", "null"]},
                        "duration_seconds": {"type": ["integer", "null"]},
                        "state": _STR,
                    },
                    "required": ["id", "kind", "url", "state"],
                },
                "Event": {
                    "type": "object",
                    "properties": {
                        "at": _DT,
                        "actor": _STR,
                        "action": _STR,
                        "from": _NSTR,
                        "to": _NSTR,
                        "note": _STR,
                        "public": {"type": "boolean"},
                        "data": {"type": "object"},
                    },
                    "required": ["at", "actor", "action", "from", "to", "note", "public"],
                },
                "Case": {"type": "object", "properties": case_props, "required": required},
                "CaseList": {
                    "type": "object",
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Case"}},
                        "total": {
                            "type": "integer",
                            "description": "how many cases match, counted up to 1000",
                        },
                        "total_exact": {
                            "type": "boolean",
                            "description": "false when more cases may match: then `total` is a lower bound",
                        },
                        "page": {"type": "integer"},
                        "per_page": {"type": "integer"},
                        "next_after": {
                            "type": ["string", "null"],
                            "description": "pass as `after` for the next page (keyset "
                            "pagination: any page costs what the first does); null at the end "
                            "and for a search by words",
                        },
                    },
                    "required": ["items", "total", "total_exact", "page", "per_page"],
                },
                "NewCase": schema(RegisterInputs),
                **{m.__name__: schema(m) for m in _input_models()},
                "Notification": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "kind": _STR,
                        "text": _STR,
                        "protocol": _NSTR,
                        "data": {"type": "object"},
                        "created_at": _DT,
                        "read": {"type": "boolean"},
                    },
                    "required": ["id", "kind", "text", "created_at", "read"],
                },
            },
        },
        "paths": {
            "/cases": {
                "post": {
                    "summary": "Register a contact taken at the counter, by phone or e-mail",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/NewCase"}}
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "registered",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Case"}
                                }
                            },
                        },
                        "400": _err("malformed body"),
                        "403": _err("role may not register"),
                        **auth_errors,
                    },
                },
                "get": {
                    "summary": "List cases visible to the caller",
                    "parameters": [
                        {"name": n, "in": "query", "required": False, "schema": {"type": t}}
                        for n, t in (
                            ("status", "string"),
                            ("office", "string"),
                            ("category", "string"),
                            ("assignee", "string"),
                            ("channel", "string"),
                            ("q", "string"),
                            ("phone", "string"),
                            ("date", "string"),
                            ("date_from", "string"),
                            ("date_to", "string"),
                            ("overdue", "string"),
                            ("page", "integer"),
                            ("per_page", "integer"),
                            ("after", "string"),
                        )
                    ],
                    "responses": {
                        "200": {
                            "description": "a page of cases",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/CaseList"}
                                }
                            },
                        },
                        "400": _err("bad filter"),
                        **auth_errors,
                    },
                },
            },
            "/cases/{protocol}": {
                "get": {
                    "summary": "One case with its history",
                    "parameters": [protocol_param],
                    "responses": {
                        "200": {
                            "description": "the case",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Case"}
                                }
                            },
                        },
                        "400": _err("malformed protocol"),
                        "404": _err("unknown or not visible"),
                        **auth_errors,
                    },
                },
            },
            "/cases/{protocol}/{action}": {
                "post": {
                    "summary": "One workflow step",
                    "parameters": [
                        protocol_param,
                        {
                            "name": "action",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": list(STEPS)},
                        },
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": action_body}},
                    },
                    "responses": {
                        "200": {
                            "description": "the case after the step",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Case"}
                                }
                            },
                        },
                        "400": _err("malformed body"),
                        "403": _err("role or office may not"),
                        "404": _err("unknown case or action"),
                        "409": _err("illegal transition"),
                        **auth_errors,
                    },
                },
            },
            "/notifications": {
                "get": {
                    "summary": "The caller's notifications",
                    "responses": {
                        "200": {
                            "description": "notifications",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "items": {
                                                "type": "array",
                                                "items": {
                                                    "$ref": "#/components/schemas/Notification"
                                                },
                                            }
                                        },
                                        "required": ["items"],
                                    }
                                }
                            },
                        },
                        **auth_errors,
                    },
                },
            },
        },
    }
