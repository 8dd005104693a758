"""The operators' web console (/console): server-rendered pages over the domain's functions.

Views stay thin: load the login, parse the form, call the same domain function the API calls
(cases.workflow.perform for every step), commit, render. Roles and office scoping are never
checked here on their own: the domain raises Forbidden/NotFound and the console shows it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    stream_with_context,
    url_for,
)
from flask_wtf.csrf import CSRFError, generate_csrf
from markupsafe import Markup
from sqlalchemy import select

from cases import answers, queues
from cases.auth import (
    SessionPolicy,
    change_password,
    check_login,
    end_session,
    session_user,
    start_session,
)
from cases.config import Municipality
from cases.errors import DomainError, Invalid, NotFound
from cases.gsm import is_gsm7, segments
from cases.i18n import N_, translate
from cases.models import (
    Attachment,
    Case,
    Role,
    StaffNotification,
    Status,
    User,
)
from cases.notify import Ctx, office_name, status_label
from cases.phone import mask_phone
from cases.protocol import parse_protocol, url_protocol
from cases.services import (
    COUNT_CAP,
    REGISTER_COLUMNS,
    CaseFilter,
    case_for,
    daily_register,
    list_cases,
    notifications_for,
    other_open_cases,
    status_values,
    unread_notifications,
)
from cases.stats import csv_chunks, to_csv
from cases.stats import dashboard as compute
from cases.step_inputs import from_form, limits
from cases.tracking import LANGUAGES
from cases.workflow import (
    STEPS,
    action_label,
    allowed_actions,
    can_view,
    perform,
    reply_preview,
    visible_to,
)
from infra.dispatch import after_commit
from infra.inputs import whole_number
from infra.provider import SendError
from infra.runtime import runtime
from infra.web import (
    ctx_for,
    date_arg,
    db,
    domain_status,
    install_error_handlers,
    over_limit,
)

log = logging.getLogger(__name__)
bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
)


@bp.record_once
def _cookie_settings(state: Any) -> None:
    """The login cookie is HTTPS-only when the console is served over HTTPS (its other
    settings are the app's defaults, lineadiretta.app)."""
    config = state.app.config
    public = config.get("PUBLIC_BASE_URL") or ""
    if not config.get("SESSION_COOKIE_SECURE"):
        testing = bool(config.get("TESTING"))
        config["SESSION_COOKIE_SECURE"] = public.startswith("https://") and not testing


_PUBLIC_ENDPOINTS = {"console.login", "console.static"}
HOME = {
    Role.URP: "console.triage",
    Role.REFERENT: "console.office",
    Role.OPERATOR: "console.mine",
    Role.SUPERVISOR: "console.dashboard",
    Role.ADMIN: "console.dashboard",
}


def policy() -> SessionPolicy:
    return SessionPolicy(
        lifetime=timedelta(minutes=current_app.config.get("CONSOLE_SESSION_MINUTES", 600)),
        idle=timedelta(minutes=current_app.config.get("CONSOLE_IDLE_MINUTES", 60)),
    )


def _config() -> Any:
    return runtime().config


def user() -> User:
    u: User = g.user
    return u


def muni() -> Municipality:
    m: Municipality = _config().get(user().municipality)
    return m


def ctx() -> Ctx:
    return ctx_for(muni())


def lang() -> str:
    return str(g.get("lang", "it"))


def t(key: str, **values: object) -> str:
    return translate(lang(), key, **values)


@bp.app_template_filter("ld_local")
def _local(when: datetime | None, fmt: str = "%d/%m/%Y %H:%M") -> str:
    if when is None:
        return ""
    tz = muni().tz if "user" in g else _config().municipality[0].tz
    return when.astimezone(tz).strftime(fmt)


@bp.app_template_filter("selecting")
def _selecting(options: Markup, value: str | None) -> Markup:
    """`<option>`s rendered once for a whole list, with the one of `value` marked selected
    (the codes are config's, letters and digits only, so the match is exact)."""
    if not value:
        return options
    mark = str(Markup('<option value="{}">').format(value))
    return Markup(str(options).replace(mark, mark[:-1] + " selected>", 1))


@bp.context_processor
def _inject() -> dict[str, Any]:
    u = g.get("user")
    return {
        "t": t,
        "N_": N_,
        "lang": lang(),
        "me": u,
        "muni": muni() if u else None,
        "status_name": lambda s: status_label(s, lang()),
        "step_label": _step_label,
        "limits": _limits,
        "allowed_actions": allowed_actions,
        "url_protocol": lambda c: url_protocol(c.year, c.number),
        "mask_phone": mask_phone,
        "csrf_token": generate_csrf,
        "category_name": _category_name,
        "office_name": _office_name,
        "now": runtime().clock(),
        "nav": _nav(u) if u else [],
        "spooled": _spooled() if u else None,
    }


def _spooled() -> Any:
    """This host's spool, for the banner that tells staff contacts are waiting for a number."""
    try:
        return runtime().spool.stats(runtime().clock())
    except Exception as exc:  # the banner must never break a page
        log.warning("console: spool unreadable: %s", exc.__class__.__name__)
        return None


def _limits(action: str, name: str, *, required: bool = True) -> Markup:
    """A form field's `required` and `maxlength` attributes, from the step's inputs."""
    needed, longest = limits(STEPS[action].inputs, name)
    out = " required" if needed and required else ""
    return Markup(out + (f' maxlength="{longest}"' if longest else ""))


def _step_label(action: str) -> str:
    return action_label(action, lang())


def _category_name(code: str | None) -> str:
    cat = muni().category(code) if code else None
    return cat.name(lang()) if cat else t("uncategorised")


def _office_name(code: str | None) -> str:
    return office_name(muni(), code, lang()) if muni().office(code) else t("none")


def _nav(u: User) -> list[tuple[str, str]]:
    role = Role(u.role)
    items: list[tuple[str, str]] = []
    if role in queues.TRIAGE_ROLES:
        items.append(("console.triage", N_("triage")))
    if role in queues.OFFICE_ROLES:
        items.append(("console.office", N_("office_queue")))
    if role in queues.OWN_CASE_ROLES:
        items.append(("console.mine", N_("my_cases")))
    items.append(("console.search", N_("search")))
    if role in answers.KEEPERS:
        items.append(("console.answers_list", N_("answers")))
    if role in queues.STATS_ROLES:
        items.append(("console.dashboard", N_("dashboard")))
    items.append(("console.notifications", N_("notifications")))
    return items


# ---------------------------------------------------------------- login plumbing


@bp.before_request
def _load_login() -> Any:
    g.lang = session.get("lang", "it") if session.get("lang") in LANGUAGES else "it"
    if request.method == "POST":
        current_app.extensions["csrf"].protect()
    if request.endpoint in _PUBLIC_ENDPOINTS:
        return None
    s = db()
    found = session_user(s, session.get("sid", ""), runtime().clock(), policy())
    if found is None:
        had = "sid" in session
        session.pop("sid", None)
        if request.endpoint == "console.notifications_json":
            return jsonify(error="not logged in", status=401), 401
        if had:
            flash(t("session_expired"), "info")
        target = request.full_path if request.method == "GET" else None
        return redirect(url_for("console.login", next=target))
    g.staff_session, g.user = found
    g.lang = found[0].language
    s.commit()  # the touch of last_seen_at, before the view's own work
    return None


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; "
        "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    )
    return resp


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> Any:
    log.info("console %s %s -> 400: CSRF %s", request.method, request.path, exc.description)
    return _page_error(400, t("csrf"))


def _page_error(status: int, message: str) -> Any:
    s = g.get("db")
    if s is not None:
        s.rollback()
    return render_template("console/error.html", status=status, message=message), status


install_error_handlers(bp, _page_error)


def _safe_next(target: str | None) -> str | None:
    """Only a path of this console, never another site (no open redirect)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console/"):
        return None
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    config = _config()
    munis = config.municipality
    if request.method == "GET":
        return render_template("console/login.html", munis=munis, next=request.args.get("next"))
    code = request.form.get("municipality") or munis[0].code
    name = request.form.get("username", "")
    password = request.form.get("password", "")
    if code not in {m.code for m in munis} or not name or not password:
        log.info("console login -> 400: incomplete form")
        return render_template(
            "console/login.html", munis=munis, error=t("login_failed"), next=None
        ), 400
    per_minute = float(current_app.config.get("CONSOLE_LOGINS_PER_MINUTE", 10))
    wait = over_limit(f"login:{request.remote_addr}", per_minute)
    if wait is not None:
        log.warning("console login from %s refused: too many attempts", request.remote_addr)
        message = t("too_many_logins", seconds=round(wait))
        return render_template("console/login.html", munis=munis, error=message, next=None), 429
    s = db()
    now = runtime().clock()
    try:
        u = check_login(s, code, name, password, now)
    except Invalid:
        s.commit()  # the failure count (and any lockout) must stick
        log.info("console login failed for %r in %s", name[:40], code)
        return render_template(
            "console/login.html", munis=munis, error=t("login_failed"), next=None
        ), 401
    chosen = request.form.get("lang") or session.get("lang") or "it"
    sid = start_session(s, u, now, policy(), chosen if chosen in LANGUAGES else "it")
    s.commit()
    session.clear()  # a fresh cookie (and CSRF token) at every login: no session fixation
    session.permanent = True
    session["sid"] = sid
    session["lang"] = chosen if chosen in LANGUAGES else "it"
    log.info("console login: %s (%s) in %s", u.name, u.role, code)
    return redirect(_safe_next(request.form.get("next")) or url_for(HOME[Role(u.role)]))


@bp.post("/logout")
def logout() -> Any:
    s = db()
    end_session(s, session.get("sid", ""), runtime().clock())
    s.commit()
    log.info("console logout: %s", user().name)
    session.clear()
    flash(translate(g.lang, "logged_out"), "info")
    return redirect(url_for("console.login"))


@bp.post("/language")
def language() -> Any:
    chosen = request.form.get("lang", "it")
    if chosen not in LANGUAGES:
        raise Invalid("language must be it or en")
    g.staff_session.language = chosen
    db().commit()
    session["lang"] = chosen
    return redirect(_safe_next(request.form.get("next")) or url_for("console.home"))


@bp.route("/password", methods=["GET", "POST"])
def password() -> Any:
    """Change one's own password; the other open logins of the account end."""
    if request.method == "GET":
        return render_template("console/password.html")
    f = request.form
    if f.get("new", "") != f.get("confirm", ""):
        raise Invalid(t("password_mismatch"))
    # the current password is guessed no faster here than at the login
    per_minute = float(current_app.config.get("CONSOLE_LOGINS_PER_MINUTE", 10))
    wait = over_limit(f"login:{request.remote_addr}", per_minute)
    if wait is not None:
        log.warning("console password change by %s refused: too many attempts", user().name)
        return _page_error(429, t("too_many_logins", seconds=round(wait)))
    s = db()
    try:
        change_password(
            s, user(), f.get("current", ""), f.get("new", ""), runtime().clock(), g.staff_session
        )
    except Invalid:
        s.commit()  # the failure count (and any lockout) must stick
        log.info("console: %s gave a wrong current password", user().name)
        raise
    s.commit()
    log.info("console: %s changed their password", user().name)
    flash(t("password_changed"), "ok")
    return redirect(url_for("console.home"), code=303)


@bp.get("/")
def home() -> Any:
    return redirect(url_for(HOME[Role(user().role)]))


# ---------------------------------------------------------------- lists


def _csv_response(rows: Iterable[queues.ExportRow], filename: str) -> Response:
    """The list as a CSV download, streamed as it is read (constant memory at any length)."""
    tz, now = muni().tz, runtime().clock()
    columns = [
        "protocol",
        "registered_at",
        "channel",
        "status",
        "category",
        "office",
        "assignee",
        "due_at",
        "overdue",
        "text",
    ]
    cells = (
        [
            r.protocol,
            r.registered_at.astimezone(tz).isoformat(timespec="seconds"),
            r.channel,
            r.status,
            r.category or "",
            r.office or "",
            r.assignee or "",
            r.due_at.astimezone(tz).date().isoformat(),
            "yes" if r.is_overdue(now) else "",
            r.text,
        ]
        for r in rows
    )
    return Response(
        stream_with_context(csv_chunks(columns, cells)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _wants_csv() -> bool:
    return request.args.get("format") == "csv"


def _work_list(wl: queues.WorkList, filename: str, template: str, **values: Any) -> Any:
    """A work list: one page of it (after the case in `after`), or all of it as CSV."""
    s = db()
    if _wants_csv():
        return _csv_response(queues.everything(s, wl), filename)
    after = request.args.get("after")
    shown = queues.page(s, wl, whole_number(after, "after") if after else None)
    here: dict[str, Any] = {k: v for k, v in request.args.items() if k != "after"}
    endpoint = request.endpoint or ""
    return render_template(
        template,
        cases=shown.cases,
        total=shown.total,
        next_url=url_for(endpoint, **here, after=shown.after) if shown.after else None,
        first_url=url_for(endpoint, **here) if after else None,
        **values,
    )


@bp.get("/triage")
def triage() -> Any:
    tab = request.args.get("tab", "new")
    if tab not in ("new", "to_close"):
        raise Invalid("tab must be new or to_close")
    wl = queues.triage(user()) if tab == "new" else queues.to_close(user())
    return _work_list(
        wl,
        f"triage-{tab}.csv",
        "console/triage.html",
        tab=tab,
        offices=muni().offices,
        categories=muni().categories,
    )


@bp.get("/office")
def office() -> Any:
    u = user()
    code = queues.queue_office(u, request.args.get("office") or None)
    if code is not None and muni().office(code) is None:
        raise Invalid(f"unknown office {code!r}")
    wl = queues.office_queue(u, code)
    load = queues.operator_load(db(), ctx(), code) if code and not _wants_csv() else []
    return _work_list(
        wl,
        f"office-{code or 'all'}.csv",
        "console/office.html",
        office=code,
        load=load,
        offices=muni().offices,
    )


@bp.get("/mine")
def mine() -> Any:
    return _work_list(
        queues.my_cases(user()), "my-cases.csv", "console/list.html", title=t("my_cases")
    )


SEARCH_PAGE = 50  # matches shown on the search page; the CSV holds all that are counted


@bp.get("/search")
def search() -> Any:
    q = (request.args.get("q") or "").strip()
    date_from, date_to = date_arg("from"), date_arg("to")
    status = request.args.get("status") or None
    if status and status not in {s.value for s in Status} | {"open", "overdue"}:
        raise Invalid(f"unknown status {status!r}")
    if len(q) > 200:
        raise Invalid("the search text is longer than 200 characters")
    s, c, u = db(), ctx(), user()
    cases: list[Case] = []
    total, more = 0, False
    searched = bool(q or date_from or date_to or status)
    if searched:
        f_status = None
        overdue = None
        if status == "overdue":
            overdue = True
        elif status:
            f_status = status_values([status])
        base = CaseFilter(status=f_status, date_from=date_from, date_to=date_to, overdue=overdue)
        kind = _query_kind(q)
        if kind == "protocol":
            try:
                cases, total = [case_for(s, c, u, q)], 1
            except (NotFound, Invalid):
                cases, total = [], 0
        else:
            f = replace(base, phone=q) if kind == "phone" else replace(base, text=q or None)
            csv = _wants_csv()  # the download holds every counted match; the page, the first
            found = list_cases(s, c, u, f, page=1, per_page=COUNT_CAP if csv else SEARCH_PAGE)
            cases, total, more = found.cases, found.total, found.more
    if _wants_csv():
        return _csv_response((queues.ExportRow.of(c) for c in cases), "search.csv")
    return render_template(
        "console/search.html",
        cases=cases,
        total=total,
        more=more,
        q=q,
        date_from=date_from,
        date_to=date_to,
        status=status,
        searched=searched,
        statuses=[x.value for x in Status],
    )


def _query_kind(q: str) -> str:
    """What the one search box holds: a protocol number, a phone number, or words."""
    if "/" in q or "-" in q or "." in q:  # year and number, as parse_protocol reads them
        try:
            parse_protocol(q)
            return "protocol"
        except Invalid:
            pass  # a phone number written with dashes or dots, or words
    compact = re.sub(r"[\s.()/-]", "", q)
    if re.fullmatch(r"\d{1,7}", compact):
        return "protocol"  # this year's number; no phone number is that short
    if re.fullmatch(r"\+?\d{8,15}", compact):
        return "phone"
    return "text"


# ---------------------------------------------------------------- the case page


def _thread_and_more(case: Case) -> dict[str, Any]:
    s, c = db(), ctx()
    others = other_open_cases(s, case, visible_to(user()))
    actions = allowed_actions(user(), case)
    extra: dict[str, Any] = {
        "thread": queues.sms_thread(s, case),
        "others": others,
        "actions": actions,
        "answers": answers.answers_for_case(s, c, case),
        "photos": [a for a in case.attachments if a.kind == "photo"],
        "recordings": [a for a in case.attachments if a.kind == "recording"],
    }
    if "dispatch" in actions and case.office:
        extra["load"] = queues.operator_load(s, c, case.office)
    if "duplicate" in actions:
        extra["similar"] = queues.similar_open_cases(s, c, case, visible_to(user()))
    if "assign" in actions:
        extra["offices"] = muni().offices
        extra["categories"] = muni().categories
    return extra


@bp.get("/cases/<protocol>")
def case_page(protocol: str) -> Any:
    case = case_for(db(), ctx(), user(), protocol)
    return render_template("console/case.html", case=case, **_thread_and_more(case))


@bp.post("/cases/<protocol>/<action>")
def case_action(protocol: str, action: str) -> Any:
    if action not in STEPS:
        raise NotFound(f"unknown action {action!r}")
    s, c, u = db(), ctx(), user()
    case = case_for(s, c, u, protocol, lock=True)
    try:
        event = perform(s, c, u, case, action, from_form(STEPS[action].inputs, request.form))
    except DomainError as exc:
        status = domain_status(exc)
        s.rollback()
        log.info(
            "console case %s: %s by %s refused (%s): %s", protocol, action, u.name, status, exc
        )
        case = case_for(s, c, u, protocol)
        return render_template(
            "console/case.html",
            case=case,
            error=str(exc),
            form=request.form,
            failed=action,
            **_thread_and_more(case),
        ), status
    after_commit(s)
    log.info(
        "case %s: %s by %s via console (%s -> %s)",
        case.protocol,
        action,
        u.name,
        event.from_status,
        event.to_status,
    )
    flash(t("done", action=_step_label(action)), "ok")
    nxt = _safe_next(request.form.get("next"))
    if nxt:
        return redirect(nxt, code=303)
    if case_visible(case):
        return redirect(
            url_for("console.case_page", protocol=url_protocol(case.year, case.number)), code=303
        )
    return redirect(url_for("console.home"), code=303)


def case_visible(case: Case) -> bool:
    return can_view(user(), case)


@bp.post("/cases/<protocol>/preview")
def preview(protocol: str) -> Any:
    """The SMS the citizen would get for this reply, and how many segments it costs."""

    s, c, u = db(), ctx(), user()
    case = case_for(s, c, u, protocol)
    text = request.form.get("text", "")[:2000]
    body = reply_preview(c, case, request.form.get("step", "close"), text)
    gsm = is_gsm7(body)
    n = segments(body)
    return jsonify(
        text=body,
        segments=n,
        chars=len(body),
        encoding="GSM-7" if gsm else "UCS-2",
        hint=t("segments_hint", n=n, chars=len(body), enc="GSM-7" if gsm else "UCS-2"),
    )


@bp.get("/attachments/<int:aid>")
def attachment(aid: int) -> Any:
    s = db()
    att = s.get(Attachment, aid)
    if att is None:
        raise NotFound(f"no attachment {aid}")
    case = s.get(Case, att.case_id)
    if case is None or not case_visible(case):
        raise NotFound(f"no attachment {aid}")
    if att.storage_path:
        media_root = os.path.realpath(os.path.join(current_app.instance_path, "media"))
        path = os.path.realpath(att.storage_path)
        if not path.startswith(media_root + os.sep) or not os.path.exists(path):
            log.warning("attachment %d of case %s: file missing", aid, case.protocol)
            raise NotFound(f"attachment {aid} is not stored here")
        return send_file(path, mimetype=att.content_type or "application/octet-stream")
    if att.kind == "recording" and att.state == "available":
        # Recordings stay with the provider; staff hear them through us, fetched with the
        # account's credentials (Twilio serves WAV at the bare URL, which browsers play).
        try:
            data, ctype = runtime().provider.fetch_media(att.source_url, 50_000_000)
        except (SendError, requests.RequestException) as exc:
            log.warning("recording %d of case %s unavailable: %s", aid, case.protocol, exc)
            abort(502, "the provider did not return the recording")
        return Response(data, mimetype=ctype or "audio/mpeg")
    raise NotFound(f"attachment {aid} is not available ({att.state})")


# ---------------------------------------------------------------- notifications


def _notification_dicts(rows: list[StaffNotification]) -> list[dict[str, Any]]:
    tz = muni().tz
    out = []
    for n in rows:
        # notify_staff keeps the case's protocol number in the notification: no query
        protocol = (n.data or {}).get("protocol") if n.case_id else None
        url = (
            url_for("console.case_page", protocol=url_protocol(*parse_protocol(protocol)))
            if protocol
            else None
        )
        out.append(
            {
                "id": n.id,
                "kind": n.kind,
                "text": n.text,
                "at": n.created_at.astimezone(tz).strftime("%d/%m %H:%M"),
                "read": n.read_at is not None,
                "url": url,
            }
        )
    return out


@bp.get("/notifications")
def notifications() -> Any:
    rows = notifications_for(db(), user())
    return render_template("console/notifications.html", items=_notification_dicts(rows))


@bp.get("/notifications.json")
def notifications_json() -> Any:
    """Polled by the page every few seconds: unread count and what is new since `after`."""
    after = whole_number(request.args.get("after", "0"), "after")
    s = db()
    count, newest = unread_notifications(s, user())
    new = notifications_for(s, user(), unread_only=True, after_id=after, limit=10)
    return jsonify(
        unread=count,
        latest=max(newest or after, after),
        items=_notification_dicts(new),
    )


@bp.post("/notifications/read")
def notifications_read() -> Any:
    s = db()
    now = runtime().clock()
    nid = request.form.get("id")
    q = select(StaffNotification).where(
        StaffNotification.user_id == user().id, StaffNotification.read_at.is_(None)
    )
    if nid:
        q = q.where(StaffNotification.id == whole_number(nid, "id"))
    for n in s.scalars(q):
        n.read_at = now
    s.commit()
    return redirect(
        _safe_next(request.form.get("next")) or url_for("console.notifications"), code=303
    )


# ---------------------------------------------------------------- answer archive


def _answer_input() -> answers.AnswerInput:
    f = request.form
    return answers.AnswerInput(
        title=f.get("title", ""),
        body=f.get("body", ""),
        step=f.get("step", ""),
        category=f.get("category") or None,
        language=f.get("language", "it"),
    )


def _answers_page(edit: Any = None) -> Any:
    answers.require_keeper(user())
    rows = answers.list_answers(db(), ctx(), include_retired=request.args.get("all") == "1")
    return render_template(
        "console/answers.html",
        rows=rows,
        steps=list(answers.REPLY_STEPS),
        categories=muni().categories,
        placeholders=answers.ANSWER_PLACEHOLDERS,
        edit=edit,
    )


@bp.get("/answers")
def answers_list() -> Any:
    return _answers_page()


@bp.get("/answers/<int:aid>")
def answer_edit(aid: int) -> Any:
    answers.require_keeper(user())
    return _answers_page(answers.get_answer(db(), ctx(), aid))


@bp.post("/answers")
def answer_create() -> Any:
    s = db()
    row = answers.save_answer(s, ctx(), user(), _answer_input())
    s.commit()
    log.info("answer %d saved by %s", row.id, user().name)
    flash(t("saved"), "ok")
    return redirect(url_for("console.answers_list"), code=303)


@bp.post("/answers/<int:aid>")
def answer_update(aid: int) -> Any:
    s = db()
    if request.form.get("retire") == "1":
        answers.retire_answer(s, ctx(), user(), aid)
    else:
        answers.save_answer(s, ctx(), user(), _answer_input(), aid)
    s.commit()
    flash(t("saved"), "ok")
    return redirect(url_for("console.answers_list"), code=303)


# ---------------------------------------------------------------- supervisors


@bp.get("/dashboard")
def dashboard() -> Any:
    queues.require_role(user(), queues.STATS_ROLES, "statistics are for supervisors")
    tz = muni().tz
    today = runtime().clock().astimezone(tz).date()
    end = date_arg("to") or today
    start = date_arg("from") or (end - timedelta(weeks=12))
    if start > end:
        raise Invalid("'from' must not be after 'to'")
    if (end - start).days > 3 * 366:
        raise Invalid("the period may be at most three years")
    data = compute(db(), muni().code, start=start, end=end, now=runtime().clock(), tz=tz)
    if request.args.get("format") == "csv":
        return _dashboard_csv(data)
    return render_template("console/dashboard.html", d=data, start=start, end=end)


def _dashboard_csv(data: Any) -> Response:
    tz = muni().tz
    rows = [
        [o.protocol, o.office or "", o.holder, o.days_overdue, o.due_at.astimezone(tz).date()]
        for o in data.overdue
    ]
    return Response(
        to_csv(["protocol", "office", "holder", "days_overdue", "due"], rows),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="overdue.csv"'},
    )


@bp.get("/register")
def register_download() -> Any:
    queues.require_role(
        user(), queues.REGISTER_ROLES, "the daily register is for URP staff and supervisors"
    )
    day = date_arg("date") or runtime().clock().astimezone(muni().tz).date()
    rows = daily_register(db(), muni(), day)
    body = stream_with_context(csv_chunks(REGISTER_COLUMNS, rows))
    log.info("daily register %s of %s downloaded by %s", day, muni().code, user().name)
    return Response(
        body,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="registro-{muni().code}-{day}.csv"'},
    )
