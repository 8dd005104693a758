"""Writing what must reach people: citizen texts (outbox rows) and staff notifications.

Rows are written in the caller's transaction, so a step that rolls back tells nobody, and a
step that commits is never forgotten even if the broker is down. Sending is the SMS worker's job.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cases.config import PLACEHOLDERS, Municipality
from cases.i18n import words
from cases.models import (
    Case,
    OutboxMessage,
    OutboxStatus,
    Role,
    StaffNotification,
    User,
)
from cases.phone import is_mobile
from cases.protocol import url_protocol


@dataclass(frozen=True)
class Ctx:
    """What a domain operation needs besides the database: the municipality, the time, links."""

    muni: Municipality
    now: datetime
    base_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def track_link(ctx: Ctx, case: Case) -> str:
    return f"{ctx.base_url.rstrip('/')}/track/{url_protocol(case.year, case.number)}?t={case.track_token}"


def local_date(ctx: Ctx, when: datetime) -> str:
    return when.astimezone(ctx.muni.tz).strftime("%d/%m/%Y")


def local_datetime(ctx: Ctx, when: datetime) -> str:
    return when.astimezone(ctx.muni.tz).strftime("%d/%m/%Y %H:%M")


def status_label(status: str, language: str) -> str:
    """A status as citizens read it, from the `status` catalogue (cases/translations)."""
    return words("status", language, status, {})


def office_name(muni: Municipality, code: str | None, language: str) -> str:
    """The office's name; a case not yet routed is with the URP."""
    office = muni.office(code) or muni.urp_office
    return (office.name_en or office.name) if language == "en" else office.name


def render_text(ctx: Ctx, key: str, language: str, **values: str) -> str:
    """Fill a citizen template that is not about one case (help, opt-out, unknown number)."""
    fields = dict.fromkeys(PLACEHOLDERS, "")
    fields["municipality"] = ctx.muni.name
    fields.update(values)
    return ctx.muni.template(key, language).format_map(fields).strip()


def case_fields(ctx: Ctx, case: Case) -> dict[str, str]:
    """The placeholders a text about this case may use, in the case's language."""
    lang = case.language
    return {
        "protocol": case.protocol,
        "office": office_name(ctx.muni, case.office, lang),
        "operator": case.assignee.display_name if case.assignee else "",
        "due": local_date(ctx, case.due_at),
        "link": track_link(ctx, case),
        "status": status_label(getattr(case, "status", "") or "", lang),
    }


def render(ctx: Ctx, key: str, case: Case, **values: str) -> str:
    """Fill a citizen template in the case's language."""
    fields = case_fields(ctx, case)
    fields.update(values)
    return render_text(ctx, key, case.language, **fields)


def next_send_time(muni: Municipality, now: datetime) -> datetime:
    """Now, or the end of the SMS quiet hours if now falls inside them (local time)."""
    q = muni.sms.quiet_hours
    local = now.astimezone(muni.tz)
    t = local.time().replace(tzinfo=None)
    if q.start == q.end:
        return now
    overnight = q.start > q.end
    quiet = (t >= q.start or t < q.end) if overnight else (q.start <= t < q.end)
    if not quiet:
        return now
    end_day = local.date()
    if overnight and t >= q.start:
        end_day = end_day + timedelta(days=1)
    wake = datetime.combine(end_day, q.end, tzinfo=muni.tz)
    return wake.astimezone(now.tzinfo)


def queue_citizen_text(
    session: Session, ctx: Ctx, case: Case, key: str, phone: str | None = None, **values: str
) -> OutboxMessage | None:
    """Write the outbox row for a citizen text; None when the case has no phone to text."""
    to = phone or case.phone
    if not to:
        return None
    msg = citizen_text(ctx, case, key, to, **values)
    session.add(msg)
    return msg


def citizen_text(
    ctx: Ctx, case: Case, key: str, phone: str | None = None, **values: str
) -> OutboxMessage:
    """The outbox row of a citizen text about a case (to its phone), not yet in a session."""
    to = phone or case.phone
    assert to, "a text needs a phone"
    return text_row(ctx, to, render(ctx, key, case, **values), key, case, case.language)


def queue_text(
    session: Session,
    ctx: Ctx,
    to: str,
    body: str,
    template: str,
    case: Case | None,
    language: str,
) -> OutboxMessage:
    """Write one outbox row: sent after commit, after the quiet hours, only to a mobile."""
    msg = text_row(ctx, to, body, template, case, language)
    session.add(msg)
    return msg


def text_row(
    ctx: Ctx, to: str, body: str, template: str, case: Case | None, language: str
) -> OutboxMessage:
    """One outbox row, not yet in a session."""
    return OutboxMessage(
        municipality=ctx.muni.code,
        case_id=case.id if case else None,
        phone=to,
        template=template,
        language=language,
        body=body,
        # created suppressed when it can never be sent: there is no mobile to send it to
        status=(OutboxStatus.PENDING if is_mobile(to) else OutboxStatus.SUPPRESSED).value,
        error=None if is_mobile(to) else "not a mobile number",
        created_at=ctx.now,
        not_before=next_send_time(ctx.muni, ctx.now),
    )


def staff_of(
    session: Session, municipality: str, *, office: str | None = None, roles: tuple[Role, ...] = ()
) -> list[User]:
    q = select(User).where(User.municipality == municipality, User.active.is_(True))
    if office is not None:
        q = q.where(User.office == office)
    if roles:
        q = q.where(User.role.in_([r.value for r in roles]))
    return list(session.scalars(q.order_by(User.id)))


def notify_staff(
    session: Session,
    ctx: Ctx,
    users: list[User],
    kind: str,
    case: Case | None,
    text: str,
    data: dict[str, Any] | None = None,
) -> list[StaffNotification]:
    rows = [
        StaffNotification(
            user_id=u.id,
            case_id=case.id if case else None,
            kind=kind,
            text=text,
            data={"protocol": case.protocol, **(data or {})} if case else (data or {}),
            created_at=ctx.now,
        )
        for u in {u.id: u for u in users}.values()
    ]
    session.add_all(rows)
    return rows


def office_queue_staff(session: Session, ctx: Ctx, office: str | None) -> list[User]:
    """Who sees a new case: the office's operators and referents, or URP when unrouted."""
    if office is None or office == ctx.muni.urp_office.code:
        urp = staff_of(session, ctx.muni.code, roles=(Role.URP,))
        return urp + (staff_of(session, ctx.muni.code, office=office) if office else [])
    return staff_of(session, ctx.muni.code, office=office, roles=(Role.OPERATOR, Role.REFERENT))
