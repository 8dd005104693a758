"""E-mails to staff, written as outbox rows in the caller's transaction (sent after commit).

The one e-mail today: a voice case routed to an office whose configuration asks for it goes to
the office's referents. An e-mail leaves our systems, so it carries the caller's number masked
(the full one is a click away in the console) and nothing personal in the subject.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy.orm import Session

from cases.config import Office
from cases.models import Case, EmailMessage, OutboxStatus, Role, User
from cases.notify import Ctx, local_datetime, staff_of
from cases.phone import mask_phone
from cases.protocol import url_protocol
from cases.services import other_open_cases
from cases.workflow import visible_to_office

log = logging.getLogger(__name__)
MAX_TRANSCRIPT = 4000


def console_link(ctx: Ctx, case: Case) -> str:
    return f"{ctx.base_url.rstrip('/')}/console/cases/{url_protocol(case.year, case.number)}"


def referent_addresses(
    s: Session, ctx: Ctx, office: Office, referents: list[User] | None = None
) -> list[str]:
    """The office's active referents' e-mail addresses (of `referents` when the caller has
    them already); the office's own address if none has one."""
    if referents is None:
        referents = staff_of(s, ctx.muni.code, office=office.code, roles=(Role.REFERENT,))
    found = [u.email.strip() for u in referents if u.email and u.email.strip()]
    if not found and office.email:
        found = [office.email]
    return list(dict.fromkeys(found))


def voice_case_email(
    s: Session,
    ctx: Ctx,
    case: Case,
    recording: str | None = None,
    referents: list[User] | None = None,
) -> EmailMessage | None:
    """Queue the referents' e-mail for a new voice case, if its office asks for one.

    Uncategorised cases belong to the URP. None when the office does not want e-mails or has
    no address to send to (logged: the in-app notification still reaches the queue).
    """
    office = ctx.muni.office(case.office) or ctx.muni.urp_office
    if not office.notify_referents_by_email:
        return None
    to = referent_addresses(s, ctx, office, referents)
    if not to:
        log.warning(
            "case %s: office %s wants e-mails but has no address", case.protocol, office.code
        )
        return None
    category = ctx.muni.category(case.category)
    cat_name = category.name_it if category else "non classificata"
    # only what every referent of the office may see
    others = [c.protocol for c in other_open_cases(s, case, visible_to_office(ctx, office.code))]
    registered = local_datetime(ctx, case.registered_at)
    transcript = case.original_text[:MAX_TRANSCRIPT] or "(nessuna trascrizione)"
    lines = [
        f"Nuova segnalazione telefonica per l'ufficio {office.name}.",
        "",
        f"Protocollo: {case.protocol}",
        f"Registrata il: {registered}",
        f"Categoria: {cat_name}",
        f"Ufficio: {office.name}",
        f"Chiamante: {mask_phone(case.phone) if case.phone else 'numero nascosto'}",
        "",
        "Trascrizione:",
        transcript,
        "",
        f"Registrazione: {recording or 'non ancora pronta (la troverà nella console)'}",
        "Altre segnalazioni aperte dello stesso numero: " + (", ".join(others) or "nessuna"),
        "",
        f"Apri la segnalazione nella console: {console_link(ctx, case)}",
        "",
        f"-- \n{ctx.muni.name}, Linea Diretta. Messaggio automatico: non rispondere.",
    ]
    msg = EmailMessage(
        municipality=ctx.muni.code,
        case_id=case.id,
        kind="voice_case",
        recipients=to,
        subject=f"[{ctx.muni.name}] Segnalazione telefonica {case.protocol}: {cat_name}"[:300],
        body="\n".join(lines),
        message_id=f"<ld.{secrets.token_hex(10)}@lineadiretta.local>",  # short: never folded
        status=OutboxStatus.PENDING.value,
        created_at=ctx.now,
        not_before=ctx.now,
        attempts=0,
    )
    s.add(msg)
    return msg
