"""The one state machine of a case: which step, from which status, by whom, with what effect.

Every caller (API, console, channels, workers) goes through perform(); nothing else changes a
case's status. Each step checks the actor's role and office, applies its effect, appends a
history event and, for public steps, queues the citizen's text, all in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy.orm import Session

from cases.errors import Forbidden, IllegalTransition, Invalid, NotFound
from cases.models import OPEN_STATUSES, Case, CaseEvent, Role, Status, User
from cases.notify import Ctx, notify_staff, queue_citizen_text, render, staff_of
from cases.protocol import case_by_number, parse_protocol, protocol_year

SYSTEM = "sistema"
ALL_POWERFUL = frozenset({Role.SUPERVISOR, Role.ADMIN})
ALL_STATUSES = frozenset(Status)

Effect = Callable[[Session, Ctx, User | None, Case, dict[str, Any]], "Outcome"]


@dataclass
class Outcome:
    """What a step's effect decided: target status, event note, citizen text, event data."""

    to: Status | None = None
    note: str = ""
    public: bool = False
    template: str | None = None
    values: dict[str, str] | None = None
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class Step:
    name: str
    sources: frozenset[Status]
    roles: frozenset[Role]  # besides supervisor and admin, who may do every step
    office_scoped: bool  # referents and operators act only on their own office's cases
    effect: Effect
    label_it: str
    label_en: str


# The steps whose text, written by staff, reaches the citizen: the SMS template wrapped around
# it (the staff's words fill {reply} or {note}).
REPLY_TEMPLATES = {"close": "closed", "not_competent": "not_competent", "note": "public_note"}

# History actions that are not workflow steps (the registration, the system's own entries).
OTHER_ACTIONS: dict[str, tuple[str, str]] = {
    "register": ("Registrato", "Registered"),
    "overdue": ("Scaduto", "Overdue"),
    "citizen_message": ("Messaggio del cittadino", "Citizen message"),
    "transcript": ("Trascrizione", "Transcript"),
    "master_closed": ("Chiuso con il caso principale", "Closed with its master case"),
}

# ---------------------------------------------------------------- helpers


def _text(body: dict[str, Any], key: str, *, required: bool = True, limit: int = 4000) -> str:
    value = body.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise Invalid(f"'{key}' must be a string")
    value = value.strip()
    if required and not value:
        raise Invalid(f"'{key}' is required")
    if len(value) > limit:
        raise Invalid(f"'{key}' is longer than {limit} characters")
    return value


def due_for(ctx: Ctx, case: Case) -> Any:
    cat = ctx.muni.category(case.category)
    days = cat.due_days if cat and cat.due_days else ctx.muni.due_days
    return case.registered_at + timedelta(days=days)


def set_category(ctx: Ctx, case: Case, code: str) -> None:
    if ctx.muni.category(code) is None:
        raise Invalid(f"unknown category {code!r}")
    case.category = code
    case.due_at = due_for(ctx, case)


# ---------------------------------------------------------------- effects


def _assign(s: Session, ctx: Ctx, actor: User | None, case: Case, body: dict[str, Any]) -> Outcome:
    category = _text(body, "category", required=False, limit=64)
    office = _text(body, "office", required=False, limit=32)
    if category:
        set_category(ctx, case, category)
    if not office:
        cat = ctx.muni.category(case.category)
        if cat is None:
            raise Invalid("'office' is required (or a 'category' that routes to one)")
        office = cat.office
    if ctx.muni.office(office) is None:
        raise Invalid(f"unknown office {office!r}")
    previous = case.office
    if case.status == Status.ASSIGNED and previous == office and not category:
        raise IllegalTransition(f"the case is already assigned to {office}")
    case.office = office
    if previous != office:
        case.assignee_id = None
        case.assignee = None
    notify_staff(
        s,
        ctx,
        staff_of(s, ctx.muni.code, office=office, roles=(Role.REFERENT,)),
        "assigned",
        case,
        f"{case.protocol}: nuovo caso per l'ufficio {office}",
    )
    return Outcome(
        Status.ASSIGNED,
        note=_text(body, "note", required=False),
        public=True,
        template="assigned",
        data={"office": office, "previous_office": previous, "category": case.category},
    )


def _dispatch(
    s: Session, ctx: Ctx, actor: User | None, case: Case, body: dict[str, Any]
) -> Outcome:
    who = body.get("operator")
    if isinstance(who, int) and not isinstance(who, bool):
        op = s.get(User, who)
    elif isinstance(who, str) and who.strip():
        op = s.scalar(
            select(User).where(User.municipality == ctx.muni.code, User.name == who.strip())
        )
    else:
        raise Invalid("'operator' (user name or id) is required")
    if (
        op is None
        or op.municipality != ctx.muni.code
        or not op.active
        or op.office != case.office
        or op.role not in (Role.OPERATOR, Role.REFERENT)
    ):
        raise Invalid(f"{who!r} is not an active operator of office {case.office}")
    case.assignee_id = op.id
    case.assignee = op
    notify_staff(s, ctx, [op], "dispatched", case, f"{case.protocol}: assegnato a te")
    return Outcome(None, note=_text(body, "note", required=False), data={"operator": op.name})


def _take(s: Session, ctx: Ctx, actor: User | None, case: Case, body: dict[str, Any]) -> Outcome:
    assert actor is not None
    if case.assignee_id not in (None, actor.id) and actor.role == Role.OPERATOR:
        raise Forbidden("the case was dispatched to another operator")
    case.assignee_id = actor.id
    case.assignee = actor
    return Outcome(Status.IN_PROGRESS, public=True, template="taken", data={"operator": actor.name})


def _note(s: Session, ctx: Ctx, actor: User | None, case: Case, body: dict[str, Any]) -> Outcome:
    text = _text(body, "text")
    public = body.get("public", False)
    if not isinstance(public, bool):
        raise Invalid("'public' must be true or false")
    if public and case.status == Status.ANNULLED:
        raise IllegalTransition("an annulled case sends nothing to the citizen")
    return Outcome(
        None,
        note=text,
        public=public,
        template=REPLY_TEMPLATES["note"] if public else None,
        values={"note": text},
    )


def _resolve(s: Session, ctx: Ctx, actor: User | None, case: Case, body: dict[str, Any]) -> Outcome:
    note = _text(body, "note", required=False)
    notify_staff(
        s,
        ctx,
        staff_of(s, ctx.muni.code, roles=(Role.URP,)),
        "resolved",
        case,
        f"{case.protocol}: risolto dall'ufficio {case.office}, da chiudere",
        {"note": note},
    )
    return Outcome(Status.RESOLVED, note=note)


def _close(s: Session, ctx: Ctx, actor: User | None, case: Case, body: dict[str, Any]) -> Outcome:
    reply = _text(body, "reply", limit=1000)
    case.closed_at = ctx.now
    dups = s.scalars(
        select(Case).where(Case.master_id == case.id, Case.status == Status.DUPLICATE)
    ).all()
    for dup in dups:
        # A duplicate follows its master: closed with it, and its own reporter told.
        _apply(
            s,
            ctx,
            None,
            dup,
            "master_closed",
            Status.CLOSED,
            Outcome(
                Status.CLOSED,
                note=reply,
                public=True,
                template="master_closed",
                values={"reply": reply, "master": case.protocol},
            ),
        )
        dup.closed_at = ctx.now
    return Outcome(
        Status.CLOSED,
        note=reply,
        public=True,
        template=REPLY_TEMPLATES["close"],
        values={"reply": reply},
        data={"duplicates_closed": [d.protocol for d in dups]},
    )


def _reopen(s: Session, ctx: Ctx, actor: User | None, case: Case, body: dict[str, Any]) -> Outcome:
    reason = _text(body, "reason")
    if case.closed_at is None or ctx.now - case.closed_at > timedelta(days=ctx.muni.reopen_days):
        raise IllegalTransition(
            f"a case can be reopened only within {ctx.muni.reopen_days} days of its closing"
        )
    case.closed_at = None
    target = Status.ASSIGNED if case.office else Status.RECEIVED
    return Outcome(target, note=reason, public=True, template="reopened")


def _duplicate(
    s: Session, ctx: Ctx, actor: User | None, case: Case, body: dict[str, Any]
) -> Outcome:
    of = _text(body, "of", limit=20)
    year, number = parse_protocol(of, protocol_year(ctx.now, ctx.muni.tz))
    master = case_by_number(s, ctx.muni.code, year, number)
    if master is None:
        raise NotFound(f"no case {of}")
    if master.id == case.id:
        raise Invalid("a case cannot be a duplicate of itself")
    if master.status not in OPEN_STATUSES:
        raise IllegalTransition(f"{master.protocol} is {master.status}: pick an open master case")
    case.master_id = master.id
    case.master = master
    return Outcome(
        Status.DUPLICATE,
        note=_text(body, "note", required=False),
        public=True,
        template="duplicate",
        values={"master": master.protocol},
        data={"master": master.protocol},
    )


def _not_competent(
    s: Session, ctx: Ctx, actor: User | None, case: Case, body: dict[str, Any]
) -> Outcome:
    reply = _text(body, "reply", limit=1000)
    case.closed_at = ctx.now
    return Outcome(
        Status.NOT_COMPETENT,
        note=reply,
        public=True,
        template=REPLY_TEMPLATES["not_competent"],
        values={"reply": reply},
    )


def _annul(s: Session, ctx: Ctx, actor: User | None, case: Case, body: dict[str, Any]) -> Outcome:
    reason = _text(body, "reason")
    case.annulled_at = ctx.now
    case.annulled_by = actor.id if actor else None
    case.annul_reason = reason
    return Outcome(Status.ANNULLED, note=reason)


_OPEN = frozenset(OPEN_STATUSES)
STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step(
            "assign",
            frozenset({Status.RECEIVED, Status.ASSIGNED}),
            frozenset({Role.URP}),
            False,
            _assign,
            "Assegnato all'ufficio",
            "Assigned to office",
        ),
        Step(
            "dispatch",
            frozenset({Status.ASSIGNED, Status.IN_PROGRESS}),
            frozenset({Role.REFERENT}),
            True,
            _dispatch,
            "Affidato a un operatore",
            "Dispatched to an operator",
        ),
        Step(
            "take",
            frozenset({Status.ASSIGNED}),
            frozenset({Role.OPERATOR, Role.REFERENT}),
            True,
            _take,
            "Preso in carico",
            "Taken in charge",
        ),
        Step(
            "note",
            ALL_STATUSES,
            frozenset({Role.URP, Role.REFERENT, Role.OPERATOR}),
            True,
            _note,
            "Nota",
            "Note",
        ),
        Step(
            "resolve",
            frozenset({Status.IN_PROGRESS}),
            frozenset({Role.OPERATOR, Role.REFERENT}),
            True,
            _resolve,
            "Risolto dall'ufficio",
            "Resolved by the office",
        ),
        Step(
            "close",
            frozenset({Status.RESOLVED}),
            frozenset({Role.URP}),
            False,
            _close,
            "Chiuso con risposta",
            "Closed with a reply",
        ),
        Step(
            "reopen",
            frozenset({Status.CLOSED}),
            frozenset({Role.URP}),
            False,
            _reopen,
            "Riaperto",
            "Reopened",
        ),
        Step(
            "duplicate",
            frozenset({Status.RECEIVED, Status.ASSIGNED, Status.IN_PROGRESS}),
            frozenset({Role.URP}),
            False,
            _duplicate,
            "Duplicato",
            "Duplicate",
        ),
        Step(
            "not_competent",
            frozenset({Status.RECEIVED, Status.ASSIGNED}),
            frozenset({Role.URP}),
            False,
            _not_competent,
            "Non di competenza",
            "Not competent",
        ),
        Step(
            "annul",
            ALL_STATUSES - {Status.ANNULLED},
            frozenset(),
            False,
            _annul,
            "Annullato",
            "Annulled",
        ),
    )
}


def step_label(action: str, language: str) -> str | None:
    """A workflow step's name in Italian or English; None for anything else."""
    step = STEPS.get(action)
    if step is None:
        return None
    return step.label_en if language == "en" else step.label_it


def action_label(action: str, language: str) -> str:
    """What a history event is called, for staff: the step's name, or the system entry's."""
    label = step_label(action, language)
    if label is not None:
        return label
    it, en = OTHER_ACTIONS.get(action, (action, action))
    return en if language == "en" else it


def reply_preview(ctx: Ctx, case: Case, action: str, text: str) -> str:
    """The SMS the citizen would get if `action` were done with `text` now."""
    key = REPLY_TEMPLATES.get(action)
    if key is None:
        raise Invalid(f"step must be one of {', '.join(REPLY_TEMPLATES)}")
    return render(ctx, key, case, reply=text, note=text)


# ---------------------------------------------------------------- who sees which case
#
# One rule, in two forms: `can_view` for a case in hand, `visible_to` for a query. Every query
# that lists, counts, mails or notifies about cases takes its scope from here (a test checks
# that the two forms agree). Referents and operators see their office's cases and those they
# hold; every other role sees its municipality's; nobody sees another municipality's.


def can_view(actor: User, case: Case) -> bool:
    """Whether this actor may see this case."""
    if actor.municipality != case.municipality or not actor.active:
        return False
    if actor.role in (Role.REFERENT, Role.OPERATOR):
        return case.office == actor.office or case.assignee_id == actor.id
    return True


def visible_to(actor: User) -> ColumnElement[bool]:
    """The cases this actor may see, as a condition on `Case` (can_view, for queries)."""
    if not actor.active:
        return false()
    mine = Case.municipality == actor.municipality
    if actor.role in (Role.REFERENT, Role.OPERATOR):
        return and_(mine, or_(Case.office == actor.office, Case.assignee_id == actor.id))
    return mine


def visible_to_office(ctx: Ctx, office: str | None) -> ColumnElement[bool]:
    """The cases every member of an office's staff may see, for what is sent to all of them
    (an e-mail to its referents, a notification to its queue): the office's own cases; the
    URP's staff (office None or the URP office) see the municipality's."""
    mine = Case.municipality == ctx.muni.code
    if office is None or office == ctx.muni.urp_office.code:
        return mine
    return and_(mine, Case.office == office)


def check(actor: User, case: Case, action: str) -> Step:
    """The step if this actor may do it now; raises Forbidden or IllegalTransition otherwise."""
    step = STEPS.get(action)
    if step is None:
        raise NotFound(f"unknown action {action!r}; known: {', '.join(STEPS)}")
    if not can_view(actor, case):
        raise NotFound(f"no case {case.protocol}")
    role = Role(actor.role)
    if role not in ALL_POWERFUL:
        if role not in step.roles:
            raise Forbidden(f"a {role.value} cannot {action} a case")
        if (
            step.office_scoped
            and role in (Role.REFERENT, Role.OPERATOR)
            and case.office != actor.office
        ):
            raise Forbidden(f"{case.protocol} belongs to office {case.office}, not yours")
    if Status(case.status) not in step.sources:
        raise IllegalTransition(f"cannot {action} a case that is {case.status}")
    return step


def allowed_actions(actor: User, case: Case) -> list[str]:
    """The steps this actor could try now (the console shows only these)."""
    out = []
    for name in STEPS:
        try:
            check(actor, case, name)
        except (Forbidden, IllegalTransition, NotFound):
            continue
        out.append(name)
    return out


def _apply(
    s: Session | None,
    ctx: Ctx,
    actor: User | None,
    case: Case,
    action: str,
    _to: Status | None,
    out: Outcome,
) -> CaseEvent:
    before = case.status
    if out.to is not None:
        case.status = out.to.value
    case.updated_at = ctx.now
    event = CaseEvent(
        at=ctx.now,
        actor_id=actor.id if actor else None,
        actor_label=f"{actor.display_name} ({actor.role})" if actor else SYSTEM,
        action=action,
        from_status=before,
        to_status=case.status,
        note=out.note,
        public=out.public,
        data=out.data or {},
    )
    # Appending (not session.add) keeps the loaded history free of a second copy of the event.
    case.events.append(event)
    if out.public and out.template:
        if s is None:
            raise RuntimeError(f"step {action!r} texts the citizen: it needs a session")
        queue_citizen_text(s, ctx, case, out.template, **(out.values or {}))
    return event


def perform(
    s: Session, ctx: Ctx, actor: User, case: Case, action: str, body: dict[str, Any] | None = None
) -> CaseEvent:
    """Do one workflow step as `actor`, in the caller's transaction."""
    step = check(actor, case, action)
    out = step.effect(s, ctx, actor, case, body or {})
    return _apply(s, ctx, actor, case, action, out.to, out)


def system_step(
    s: Session | None,
    ctx: Ctx,
    case: Case,
    action: str,
    out: Outcome,
    actor: User | None = None,
) -> CaseEvent:
    """A step taken by the system (auto-routing, overdue flag), or recorded for `actor`
    without a permission check (the registration itself). Without a session (a case being
    prepared in memory) the step may not text the citizen."""
    return _apply(s, ctx, actor, case, action, out.to, out)
