"""The one state machine of a case: `MOVES`, the table of legal moves (from which statuses,
by whom, with what effect and inputs, to which statuses).

Staff go through perform() (the API, the console), the system through system_step() (the
registration, automatic routing, a citizen's message, the overdue flag); nothing else changes
a case's status. Each move is checked against the table, applies its effect, appends a
history event and, for public steps, queues the citizen's text, all in the caller's
transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy.orm import Session

from cases.db import built
from cases.errors import Forbidden, IllegalTransition, Invalid, NotFound
from cases.i18n import words
from cases.models import OPEN_STATUSES, Case, CaseEvent, Role, Status, User
from cases.notify import Ctx, notify_staff, queue_citizen_text, render, staff_of
from cases.protocol import case_by_number, parse_protocol, protocol_year
from cases.step_inputs import (
    AssignInputs,
    DispatchInputs,
    DuplicateInputs,
    Inputs,
    NoInputs,
    NoteInputs,
    ReasonInputs,
    ReplyInputs,
    ResolveInputs,
    parse,
)

SYSTEM = "sistema"
ALL_POWERFUL = frozenset({Role.SUPERVISOR, Role.ADMIN})
ALL_STATUSES = frozenset(Status)

# An effect gets the step's typed inputs (its `Step.inputs` model, validated by perform).
Effect = Callable[[Session, Ctx, User | None, Case, Any], "Outcome"]


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
    """One legal move: from which statuses, by whom, doing what, with which inputs, to which
    statuses (None: the status stays)."""

    name: str
    sources: frozenset[Status]
    # besides supervisor and admin, who may take every staff step; None: the system's only
    roles: frozenset[Role] | None
    office_scoped: bool  # referents and operators act only on their own office's cases
    effect: Effect | None  # None: the system says the outcome (system_step)
    inputs: type[Inputs]
    targets: frozenset[Status | None]


# The steps whose text, written by staff, reaches the citizen: the SMS template wrapped around
# it (the staff's words fill {reply} or {note}).
REPLY_TEMPLATES = {"close": "closed", "not_competent": "not_competent", "note": "public_note"}

# ---------------------------------------------------------------- helpers


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


def _assign(s: Session, ctx: Ctx, actor: User | None, case: Case, i: AssignInputs) -> Outcome:
    category, office = i.category, i.office
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
        note=i.note,
        public=True,
        template="assigned",
        data={"office": office, "previous_office": previous, "category": case.category},
    )


def _dispatch(s: Session, ctx: Ctx, actor: User | None, case: Case, i: DispatchInputs) -> Outcome:
    who = i.operator
    if isinstance(who, int):
        op = s.get(User, who)
    else:
        op = s.scalar(select(User).where(User.municipality == ctx.muni.code, User.name == who))
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
    return Outcome(None, note=i.note, data={"operator": op.name})


def _take(s: Session, ctx: Ctx, actor: User | None, case: Case, i: NoInputs) -> Outcome:
    assert actor is not None
    if case.assignee_id not in (None, actor.id) and actor.role == Role.OPERATOR:
        raise Forbidden("the case was dispatched to another operator")
    case.assignee_id = actor.id
    case.assignee = actor
    return Outcome(Status.IN_PROGRESS, public=True, template="taken", data={"operator": actor.name})


def _note(s: Session, ctx: Ctx, actor: User | None, case: Case, i: NoteInputs) -> Outcome:
    text, public = i.text, i.public
    if public and case.status == Status.ANNULLED:
        raise IllegalTransition("an annulled case sends nothing to the citizen")
    return Outcome(
        None,
        note=text,
        public=public,
        template=REPLY_TEMPLATES["note"] if public else None,
        values={"note": text},
    )


def _resolve(s: Session, ctx: Ctx, actor: User | None, case: Case, i: ResolveInputs) -> Outcome:
    note = i.note
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


def _answered(ctx: Ctx, case: Case, to: Status, step: str, reply: str, **data: Any) -> Outcome:
    """The case ends with an answer to the citizen (closed, or not ours): texted to them."""
    case.closed_at = ctx.now
    return Outcome(
        to,
        note=reply,
        public=True,
        template=REPLY_TEMPLATES[step],
        values={"reply": reply},
        data=data or None,
    )


def _close(s: Session, ctx: Ctx, actor: User | None, case: Case, i: ReplyInputs) -> Outcome:
    reply = i.reply
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
            MOVES["master_closed"],
            Outcome(
                Status.CLOSED,
                note=reply,
                public=True,
                template="master_closed",
                values={"reply": reply, "master": case.protocol},
            ),
        )
        dup.closed_at = ctx.now
    closed = [d.protocol for d in dups]
    return _answered(ctx, case, Status.CLOSED, "close", reply, duplicates_closed=closed)


def _reopen(s: Session, ctx: Ctx, actor: User | None, case: Case, i: ReasonInputs) -> Outcome:
    reason = i.reason
    if case.closed_at is None or ctx.now - case.closed_at > timedelta(days=ctx.muni.reopen_days):
        raise IllegalTransition(
            f"a case can be reopened only within {ctx.muni.reopen_days} days of its closing"
        )
    case.closed_at = None
    target = Status.ASSIGNED if case.office else Status.RECEIVED
    return Outcome(target, note=reason, public=True, template="reopened")


def _duplicate(s: Session, ctx: Ctx, actor: User | None, case: Case, i: DuplicateInputs) -> Outcome:
    of = i.of
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
        note=i.note,
        public=True,
        template="duplicate",
        values={"master": master.protocol},
        data={"master": master.protocol},
    )


def _not_competent(s: Session, ctx: Ctx, actor: User | None, case: Case, i: ReplyInputs) -> Outcome:
    return _answered(ctx, case, Status.NOT_COMPETENT, "not_competent", i.reply)


def _annul(s: Session, ctx: Ctx, actor: User | None, case: Case, i: ReasonInputs) -> Outcome:
    reason = i.reason
    case.annulled_at = ctx.now
    case.annulled_by = actor.id if actor else None
    case.annul_reason = reason
    return Outcome(Status.ANNULLED, note=reason)


_OPEN = frozenset(OPEN_STATUSES)
S = Status
# who takes a step, besides supervisors and admins (who may take every staff step)
_URP, _REFERENT = frozenset({Role.URP}), frozenset({Role.REFERENT})
_OFFICE = frozenset({Role.OPERATOR, Role.REFERENT})  # the office that does the work
_ALL_STAFF = frozenset({Role.URP, Role.REFERENT, Role.OPERATOR})
_NOBODY: frozenset[Role] = frozenset()  # supervisors and admins only
_STAY: frozenset[Status | None] = frozenset({None})  # the status does not change


def _from(*statuses: Status) -> frozenset[Status]:
    return frozenset(statuses)


def _to(*statuses: Status) -> frozenset[Status | None]:
    return frozenset(statuses)


# The table of legal moves: every change to a case, by staff or by the system, is one of
# these, from one of its source statuses to one of its targets. Staff take the steps with
# roles through `perform`; the system records its own (and routes automatically) through
# `system_step`, against the same sources and targets. Their names for people are in the
# "history" catalogue (cases/translations/*/LC_MESSAGES/history.po).
# fmt: off
MOVES: dict[str, Step] = {
    s.name: s
    for s in (
        #    name               sources                                       roles       office effect          inputs           targets
        Step("assign",          _from(S.RECEIVED, S.ASSIGNED),                _URP,       False, _assign,        AssignInputs,    _to(S.ASSIGNED)),
        Step("dispatch",        _from(S.ASSIGNED, S.IN_PROGRESS),             _REFERENT,  True,  _dispatch,      DispatchInputs,  _STAY),
        Step("take",            _from(S.ASSIGNED),                            _OFFICE,    True,  _take,          NoInputs,        _to(S.IN_PROGRESS)),
        Step("note",            ALL_STATUSES,                                 _ALL_STAFF, True,  _note,          NoteInputs,      _STAY),
        Step("resolve",         _from(S.IN_PROGRESS),                         _OFFICE,    True,  _resolve,       ResolveInputs,   _to(S.RESOLVED)),
        Step("close",           _from(S.RESOLVED),                            _URP,       False, _close,         ReplyInputs,     _to(S.CLOSED)),
        Step("reopen",          _from(S.CLOSED),                              _URP,       False, _reopen,        ReasonInputs,    _to(S.ASSIGNED, S.RECEIVED)),
        Step("duplicate",       _from(S.RECEIVED, S.ASSIGNED, S.IN_PROGRESS), _URP,       False, _duplicate,     DuplicateInputs, _to(S.DUPLICATE)),
        Step("not_competent",   _from(S.RECEIVED, S.ASSIGNED),                _URP,       False, _not_competent, ReplyInputs,     _to(S.NOT_COMPETENT)),
        Step("annul",           ALL_STATUSES - {S.ANNULLED},                  _NOBODY,    False, _annul,         ReasonInputs,    _to(S.ANNULLED)),
        # the system's own entries: no role takes them, no effect (the caller says the outcome)
        Step("register",        _from(S.RECEIVED),                            None,       False, None,           NoInputs,        _to(S.RECEIVED)),
        Step("citizen_message", ALL_STATUSES,                                 None,       False, None,           NoInputs,        _STAY),
        Step("transcript",      ALL_STATUSES,                                 None,       False, None,           NoInputs,        _STAY),
        Step("overdue",         _OPEN,                                        None,       False, None,           NoInputs,        _STAY),
        Step("master_closed",   _from(S.DUPLICATE),                           None,       False, None,           NoInputs,        _to(S.CLOSED)),
    )
}
# fmt: on
# The steps staff take (the API's and the console's actions), in the table's order.
STEPS: dict[str, Step] = {name: s for name, s in MOVES.items() if s.roles is not None}


def step_label(action: str, language: str) -> str | None:
    """A staff step's name in `language` (from the history catalogue); None for anything else."""
    return words("history", language, action, {}) if action in STEPS else None


def action_label(action: str, language: str) -> str:
    """What a history event is called, for staff: the name of its move in the table."""
    return words("history", language, action, {}) if action in MOVES else action


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
        if role not in (step.roles or ()):
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
    step: Step,
    out: Outcome,
    history: list[CaseEvent] | None = None,
) -> CaseEvent:
    """Make the move, as the table allows it: from one of its sources to one of its targets.
    The event goes into the case's history, or into `history` (a case being prepared)."""
    action = step.name
    if Status(case.status) not in step.sources:
        raise IllegalTransition(f"cannot {action} a case that is {case.status}")
    if out.to not in step.targets:  # an effect that breaks the table: a bug, not a request
        raise RuntimeError(f"{action} may not make a case {out.to}")
    before = case.status
    if out.to is not None:
        case.status = out.to.value
    case.updated_at = ctx.now
    event = built(
        CaseEvent,
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
    if history is not None:
        history.append(event)
    else:
        # Appending (not session.add) keeps the loaded history free of a second copy.
        case.events.append(event)
    if out.public and out.template:
        if s is None:
            raise RuntimeError(f"step {action!r} texts the citizen: it needs a session")
        queue_citizen_text(s, ctx, case, out.template, **(out.values or {}))
    return event


def perform(
    s: Session, ctx: Ctx, actor: User, case: Case, action: str, body: dict[str, Any] | None = None
) -> CaseEvent:
    """Do one workflow step as `actor`, in the caller's transaction; `body`: the step's inputs
    (its `Step.inputs` model), refused as Invalid when they do not fit it."""
    step = check(actor, case, action)
    assert step.effect is not None  # every staff step has one
    out = step.effect(s, ctx, actor, case, parse(step.inputs, body))
    return _apply(s, ctx, actor, case, step, out)


def system_step(
    s: Session | None,
    ctx: Ctx,
    case: Case,
    action: str,
    out: Outcome,
    actor: User | None = None,
    history: list[CaseEvent] | None = None,
) -> CaseEvent:
    """A move of the table taken by the system (the registration, automatic routing, the
    overdue flag, a citizen's message), with the outcome the caller decided: checked against
    the table's sources and targets like a staff step, without a permission check (`actor`:
    who the entry is recorded for, the registration's operator). Without a session (a case
    being prepared in memory, its events collected in `history`) the step may not text the
    citizen."""
    step = MOVES.get(action)
    if step is None:
        raise RuntimeError(f"{action!r} is not a move of the table")
    return _apply(s, ctx, actor, case, step, out, history)
