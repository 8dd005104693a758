"""The answer archive: replies kept by URP staff per category and step, with placeholders."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cases.errors import Invalid, NotFound
from cases.models import Case, ReplyTemplate, Role, User
from cases.notify import Ctx, case_fields
from cases.queues import require_role
from cases.workflow import REPLY_TEMPLATES

# The steps whose text reaches the citizen (the workflow's own list).
REPLY_STEPS = tuple(REPLY_TEMPLATES)
# What a reply may say about its case; {link} is left out: the SMS template adds it.
ANSWER_PLACEHOLDERS = ("protocol", "office", "operator", "due", "status")
KEEPERS = frozenset({Role.URP, Role.SUPERVISOR, Role.ADMIN})
MAX_BODY = 1000


@dataclass(frozen=True)
class AnswerInput:
    title: str
    body: str
    step: str
    category: str | None
    language: str


def require_keeper(actor: User) -> None:
    """Forbidden unless the actor keeps the answer archive (URP, supervisors, admins)."""
    require_role(actor, KEEPERS, "only URP staff and supervisors keep the answer archive")


def validate(ctx: Ctx, data: AnswerInput) -> AnswerInput:
    """The input cleaned, or Invalid naming the first thing wrong."""
    title, body = data.title.strip(), data.body.strip()
    if not title or len(title) > 200:
        raise Invalid("the title is required, at most 200 characters")
    if not body or len(body) > MAX_BODY:
        raise Invalid(f"the text is required, at most {MAX_BODY} characters")
    if data.step not in REPLY_STEPS:
        raise Invalid(f"step must be one of {', '.join(REPLY_STEPS)}")
    category = data.category or None
    if category is not None and ctx.muni.category(category) is None:
        raise Invalid(f"unknown category {category!r}")
    if data.language not in ("it", "en"):
        raise Invalid("language must be it or en")
    try:
        names = {n for _, n, _, _ in string.Formatter().parse(body) if n is not None}
    except ValueError as exc:
        raise Invalid(f"the text has a broken placeholder: {exc}") from None
    unknown = sorted(n for n in names if n not in ANSWER_PLACEHOLDERS)
    if unknown:
        raise Invalid(
            f"unknown placeholder {{{unknown[0]}}}; use {', '.join('{' + p + '}' for p in ANSWER_PLACEHOLDERS)}"
        )
    return AnswerInput(title, body, data.step, category, data.language)


def save_answer(
    s: Session, ctx: Ctx, actor: User, data: AnswerInput, answer_id: int | None = None
) -> ReplyTemplate:
    """Create or edit an archived answer (URP, supervisors, admins)."""
    require_keeper(actor)
    clean = validate(ctx, data)
    if answer_id is None:
        row = ReplyTemplate(municipality=ctx.muni.code)
        s.add(row)
    else:
        row = get_answer(s, ctx, answer_id)
    row.title, row.body, row.step = clean.title, clean.body, clean.step
    row.category, row.language, row.active = clean.category, clean.language, True
    row.updated_at, row.updated_by = ctx.now, actor.id
    s.flush()
    return row


def retire_answer(s: Session, ctx: Ctx, actor: User, answer_id: int) -> None:
    """Take an answer out of use; kept, since closed cases may have used it."""
    require_keeper(actor)
    row = get_answer(s, ctx, answer_id)
    row.active, row.updated_at, row.updated_by = False, ctx.now, actor.id


def get_answer(s: Session, ctx: Ctx, answer_id: int) -> ReplyTemplate:
    row = s.get(ReplyTemplate, answer_id)
    if row is None or row.municipality != ctx.muni.code:
        raise NotFound(f"no answer {answer_id}")
    return row


def list_answers(
    s: Session, ctx: Ctx, *, step: str | None = None, include_retired: bool = False
) -> list[ReplyTemplate]:
    q = select(ReplyTemplate).where(ReplyTemplate.municipality == ctx.muni.code)
    if step:
        q = q.where(ReplyTemplate.step == step)
    if not include_retired:
        q = q.where(ReplyTemplate.active.is_(True))
    return list(s.scalars(q.order_by(ReplyTemplate.step, ReplyTemplate.title)))


def answers_for_case(s: Session, ctx: Ctx, case: Case) -> dict[str, list[dict[str, Any]]]:
    """Per reply step, the active answers that fit the case, filled in for it.

    Those for the case's own category come first, then the general ones; the case's language
    first within each.
    """
    rows = s.scalars(
        select(ReplyTemplate).where(
            ReplyTemplate.municipality == ctx.muni.code,
            ReplyTemplate.active.is_(True),
            or_(ReplyTemplate.category.is_(None), ReplyTemplate.category == case.category),
        )
    ).all()
    fields = {k: v for k, v in case_fields(ctx, case).items() if k in ANSWER_PLACEHOLDERS}
    out: dict[str, list[dict[str, Any]]] = {step: [] for step in REPLY_STEPS}
    ordered = sorted(
        rows,
        key=lambda r: (r.category is None, r.language != case.language, r.title.lower()),
    )
    for r in ordered:
        out[r.step].append(
            {"id": r.id, "title": r.title, "text": fill(r.body, fields), "language": r.language}
        )
    return out


def fill(body: str, fields: dict[str, str]) -> str:
    """The body with its placeholders replaced; an unknown one stays as written."""

    class _Keep(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return body.format_map(_Keep(fields))
    except (ValueError, IndexError):
        return body
