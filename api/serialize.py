"""JSON shapes of the operators' API (also described in api/openapi.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cases.models import Case, StaffNotification, User
from cases.notify import Ctx
from cases.workflow import allowed_actions


def iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when else None


def case_json(case: Case, ctx: Ctx, viewer: User, *, events: bool = True) -> dict[str, Any]:
    cat = ctx.muni.category(case.category)
    office = ctx.muni.office(case.office)
    out: dict[str, Any] = {
        "protocol": case.protocol,
        "municipality": case.municipality,
        "registered_at": iso(case.registered_at),
        # when the contact reached us, if it waited in a host's spool (else registered_at)
        "received_at": iso(case.received_at or case.registered_at),
        "channel": case.channel,
        "phone": case.phone,
        "description": case.original_text,
        "language": case.language,
        "status": case.status,
        "category": case.category,
        "category_name": cat.name(viewer_lang(ctx)) if cat else None,
        "suggested_category": case.suggested_category,
        "suggestion_confidence": case.suggestion_confidence,
        "office": case.office,
        "office_name": office.name if office else None,
        "assignee": case.assignee.name if case.assignee else None,
        "assignee_name": case.assignee.display_name if case.assignee else None,
        "due_at": iso(case.due_at),
        "overdue": case.is_overdue(ctx.now),
        "updated_at": iso(case.updated_at),
        "closed_at": iso(case.closed_at),
        "master": case.master.protocol if case.master else None,
        "address": case.address,
        "annulment": {
            "at": iso(case.annulled_at),
            "by": case.annulled_by,
            "reason": case.annul_reason,
        }
        if case.annulled_at
        else None,
        "attachments": [
            {
                "id": a.id,
                "kind": a.kind,
                "url": a.source_url,
                "content_type": a.content_type,
                "size": a.size,
                "duration_seconds": a.duration_seconds,
                "state": a.state,
            }
            for a in case.attachments
        ],
        "allowed_actions": allowed_actions(viewer, case),
    }
    if events:
        out["events"] = [
            {
                "at": iso(e.at),
                "actor": e.actor_label,
                "action": e.action,
                "from": e.from_status,
                "to": e.to_status,
                "note": e.note,
                "public": e.public,
                "data": e.data,
            }
            for e in case.events
        ]
    return out


def viewer_lang(ctx: Ctx) -> str:
    return ctx.muni.language


def notification_json(n: StaffNotification, ctx: Ctx) -> dict[str, Any]:
    return {
        "id": n.id,
        "kind": n.kind,
        "text": n.text,
        "protocol": (n.data or {}).get("protocol"),
        "data": n.data,
        "created_at": iso(n.created_at),
        "read": n.read_at is not None,
    }
