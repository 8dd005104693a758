"""The `lineadiretta` command line."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
from datetime import date
from html import unescape
from pathlib import Path
from typing import Any

import click
import requests
from flask import Flask
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator
from werkzeug.serving import run_simple

from cases.apikeys import create_api_key
from cases.auth import end_all_sessions, set_password
from cases.config import ConfigError, Municipality, load_config
from cases.db import default_database_url, transaction
from cases.errors import DomainError
from cases.models import EmailMessage, OutboxMessage, User
from cases.notify import Ctx
from cases.services import REGISTER_COLUMNS, create_user, daily_register
from cases.stats import to_csv
from infra.runtime import runtime
from ivr.simulator import HANGUP, Switchboard
from lineadiretta.app import create_app
from lineadiretta.migrate import upgrade
from workers.supervise import supervise


def _app(**overrides: Any) -> Flask:
    try:
        return create_app(overrides or None)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _instance() -> Path:
    p = Path(os.environ.get("INSTANCE_PATH", "instance")).absolute()
    p.mkdir(parents=True, exist_ok=True)
    return p


def _local_secret(name: str) -> str:
    """A secret kept in instance/ so that `run` and `simulate` agree across restarts."""
    path = _instance() / name
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def embedded_env() -> None:
    """Defaults for the all-in-one mode: local secrets, sandbox provider, SQLite."""
    os.environ.setdefault("SECRET_KEY", _local_secret("secret_key"))
    if not os.environ.get("TWILIO_ACCOUNT_SID"):
        os.environ.setdefault("TWILIO_AUTH_TOKEN", _local_secret("sandbox_auth_token"))
        os.environ["LINEADIRETTA_SANDBOX"] = "1"


def _muni(app: Flask, code: str | None) -> Municipality:
    cfg = runtime(app).config
    if code is None:
        if len(cfg.municipality) > 1:
            click.echo(
                f"(several municipalities configured; using {cfg.municipality[0].code}: "
                "pass --municipality)",
                err=True,
            )
        return cfg.municipality[0]
    try:
        return cfg.get(code)
    except KeyError:
        known = ", ".join(m.code for m in cfg.municipality)
        raise click.BadParameter(f"unknown municipality {code!r}; known: {known}") from None


@click.group()
def main() -> None:
    """Linea Diretta: the municipal contact centre."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def run(host: str, port: int) -> None:
    """Everything in one: migrate the embedded database, start a worker and the web server."""
    embedded_env()
    # the address citizens' links are made from: this server's, unless configured
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    os.environ.setdefault("PUBLIC_BASE_URL", f"http://{shown}:{port}")
    app = _app()

    upgrade(str(runtime(app).engine.url.render_as_string(hide_password=False)))
    _first_admin(app)
    env = dict(os.environ)
    # The worker gets a process group of its own: a signal to ours (Ctrl-C, a service
    # manager's SIGTERM) must not reach its pool processes at the same moment as their parent,
    # which can leave the parent waiting forever on a lock a dying child held. We stop it.
    worker = subprocess.Popen(
        [sys.executable, "-m", "lineadiretta.cli", "worker", "--beat", "--concurrency", "2"],
        env=env,
        start_new_session=True,
    )

    def _terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds to the finally below, which stops the worker

    signal.signal(signal.SIGTERM, _terminate)
    # Catch up on periodic work missed while the service was down (the worker picks it up).
    app.extensions["celery"].send_task("workers.tasks.flag_overdue")
    click.echo(f"Linea Diretta on http://{host}:{port}  (worker pid {worker.pid})")
    if os.environ.get("LINEADIRETTA_SANDBOX"):
        click.echo("Sandbox provider: outbound texts go to the local outbox, not to any phone.")
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False)
    finally:
        worker.send_signal(signal.SIGTERM)  # a warm shutdown: running tasks finish
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def _first_admin(app: Flask) -> None:
    """On a brand-new register, create an admin account so the API can be used at once."""

    rt = runtime(app)
    with transaction(rt.sessions) as s:
        if s.scalar(select(func.count()).select_from(User)):
            return
        muni = rt.config.municipality[0]
        user, token = create_user(
            s, Ctx(muni, runtime(app).clock()), "admin", "admin", full_name="Amministratore"
        )
        password = secrets.token_urlsafe(12)
        set_password(user, password)
    path = _instance() / "admin_token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    pw_path = _instance() / "admin_password"
    pw_path.write_text(password + "\n")
    pw_path.chmod(0o600)
    click.echo(
        f"First start: created the admin account of {muni.code}; its API token is in {path}, "
        f"its console password (user admin, /console) in {pw_path}"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """The web app alone (production runs gunicorn, see the Procfile)."""
    app = _app()

    run_simple(host, port, app, threaded=True, use_reloader=False)


@main.command()
@click.option("--concurrency", default=2, show_default=True, type=int)
@click.option("--beat", is_flag=True, help="Also run the periodic scheduler (one per deployment).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(concurrency: int, beat: bool, loglevel: str) -> None:
    """A Celery worker (Redis from REDIS_URL, or the embedded broker), started again if it
    exits or stops consuming (see workers.supervise)."""
    app = _app()  # the configuration is checked here, once, before any child starts

    args = [f"--concurrency={concurrency}", f"--loglevel={loglevel}"] + (["--beat"] if beat else [])
    sys.exit(supervise(args, app.config["REDIS_URL"], app.config["WORKER_STUCK_SECONDS"]))


@main.command("celery-worker", hidden=True)
@click.option("--concurrency", default=2, type=int)
@click.option("--beat", is_flag=True)
@click.option("--loglevel", default="INFO")
def celery_worker(concurrency: int, beat: bool, loglevel: str) -> None:
    """The Celery worker itself (the child of `worker`)."""
    app = _app()
    celery_app = app.extensions["celery"]
    argv = ["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}"]
    # no broadcast over the broker (see workers.celery_app): a Redis restart must not end us
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    if beat:
        argv.append("--beat")
    celery_app.worker_main(argv)


@main.command()
@click.option("--loglevel", default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """The periodic scheduler alone (exactly one per deployment)."""
    app = _app(NEEDS_PUBLIC_BASE_URL=False)  # sends no links
    app.extensions["celery"].start(["beat", f"--loglevel={loglevel}"])


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the Alembic migrations to DATABASE_URL."""

    url = default_database_url(str(_instance()))
    upgrade(url, revision)
    click.echo("database is up to date")


@main.group("user")
def user_group() -> None:
    """Staff accounts."""


@user_group.command("add")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["urp", "referent", "operator", "supervisor", "admin"]),
)
@click.option("--office", default=None, help="Office code (required for referent and operator).")
@click.option("--municipality", default=None)
@click.option("--full-name", default="", help="Name shown to citizens (L. 241/1990 art. 8).")
@click.option("--phone", default=None, help="Mobile for referents' SMS notifications.")
@click.option("--email", default=None, help="Address for referents' e-mail notifications.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read a console password from standard input (one line).",
)
def user_add(
    name: str,
    role: str,
    office: str | None,
    municipality: str | None,
    full_name: str,
    phone: str | None,
    email: str | None,
    password_stdin: bool,
) -> None:
    """Create a staff account; prints its API token once, alone on the last line."""
    os.environ.setdefault("SECRET_KEY", "cli")
    app = _app(NEEDS_PUBLIC_BASE_URL=False)  # sends no links

    muni = _muni(app, municipality)
    try:
        with transaction(runtime(app).sessions) as s:
            user, token = create_user(
                s,
                Ctx(muni, runtime(app).clock()),
                name,
                role,
                office,
                full_name,
                phone=phone,
                email=email,
            )
            if password_stdin:
                set_password(user, _read_password())
    except DomainError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"created {user.role} {user.name} in {muni.code}" + (f", office {office}" if office else "")
    )
    click.echo("API token (shown once):")
    click.echo(token)


@main.group("apikey")
def apikey_group() -> None:
    """Open311 API keys for outside apps."""


@apikey_group.command("add")
@click.argument("name")
@click.option("--municipality", default=None, help="The municipality the key may report to.")
def apikey_add(name: str, municipality: str | None) -> None:
    """Issue an Open311 API key for an outside app; prints it once, alone on the last line."""
    os.environ.setdefault("SECRET_KEY", "cli")
    app = _app(NEEDS_PUBLIC_BASE_URL=False)  # sends no links

    muni = _muni(app, municipality)
    try:
        with transaction(runtime(app).sessions) as s:
            _, key = create_api_key(s, Ctx(muni, runtime(app).clock()), name)
    except DomainError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created Open311 API key {name!r} for {muni.code} (jurisdiction_id {muni.code})")
    click.echo("API key (shown once):")
    click.echo(key)


def _read_password() -> str:
    """One line from stdin (a pipe), or asked twice without echo at a terminal."""
    if sys.stdin.isatty():
        value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        return value
    return sys.stdin.readline().rstrip("\r\n")


@user_group.command("password")
@click.argument("name")
@click.option("--municipality", default=None)
def user_password(name: str, municipality: str | None) -> None:
    """Set a staff member's console password (from stdin, or asked at the terminal);
    every open login of theirs ends."""
    os.environ.setdefault("SECRET_KEY", "cli")
    app = _app(NEEDS_PUBLIC_BASE_URL=False)  # sends no links

    muni = _muni(app, municipality)
    password = _read_password()
    try:
        with transaction(runtime(app).sessions) as s:
            user = s.scalar(select(User).where(User.municipality == muni.code, User.name == name))
            if user is None:
                raise click.ClickException(f"no user {name!r} in {muni.code}")
            set_password(user, password)
            end_all_sessions(s, user, runtime(app).clock())
    except DomainError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password set for {name} in {muni.code}")


@main.command()
@click.option("--date", "day", required=True, help="YYYY-MM-DD, in the municipality's time zone.")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option("--municipality", default=None)
def register(day: str, fmt: str, municipality: str | None) -> None:
    """Print the daily protocol register (registro giornaliero) of that day."""
    os.environ.setdefault("SECRET_KEY", "cli")
    try:
        when = date.fromisoformat(day)
    except ValueError:
        raise click.BadParameter(
            f"{day!r} is not a date as YYYY-MM-DD", param_hint="--date"
        ) from None
    app = _app(NEEDS_PUBLIC_BASE_URL=False)  # sends no links

    muni = _muni(app, municipality)
    with transaction(runtime(app).sessions) as s:
        rows = daily_register(s, muni, when)
    if fmt == "json":
        click.echo(
            json.dumps(
                {"municipality": muni.code, "name": muni.name, "date": day, "registrations": rows},
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    # the same CSV as the console's download: a cell that a spreadsheet would run as a
    # formula (=, +, -, @, tab, CR) is written as text
    click.echo(to_csv(REGISTER_COLUMNS, rows), nl=False)


@main.group()
def simulate() -> None:
    """Play the provider against a running service (signed requests)."""


def _webhook_token() -> str:
    token = os.environ.get("TWILIO_AUTH_TOKEN")
    if token:
        return token
    path = _instance() / "sandbox_auth_token"
    if not path.exists():
        raise click.ClickException(
            "no TWILIO_AUTH_TOKEN and no instance/sandbox_auth_token: start the service with "
            "`lineadiretta run` first (or export TWILIO_AUTH_TOKEN)"
        )
    return path.read_text().strip()


def signed_webhook(base: str, path: str, form: dict[str, str]) -> tuple[int, str]:
    """POST a form to the service as the provider would, signed with the account token."""

    public = os.environ.get("PUBLIC_BASE_URL") or base
    sig = RequestValidator(_webhook_token()).compute_signature(public.rstrip("/") + path, form)
    try:
        r = requests.post(
            base.rstrip("/") + path, data=form, headers={"X-Twilio-Signature": sig}, timeout=20
        )
    except requests.RequestException as exc:
        raise click.ClickException(f"the service at {base} did not answer: {exc}") from None
    return r.status_code, r.text


@simulate.command("sms")
@click.option("--from", "from_", required=True, help="The citizen's number.")
@click.option(
    "--to", default=None, help="The municipality's SMS number (default: the first configured)."
)
@click.option("--url", default="http://127.0.0.1:5000", show_default=True)
@click.option("--media", multiple=True, help="A media URL to attach (MMS); repeatable.")
@click.argument("text", nargs=-1)
def simulate_sms(
    from_: str, to: str | None, url: str, media: tuple[str, ...], text: tuple[str, ...]
) -> None:
    """Send a signed inbound text to the running service and print its reply."""

    if to is None:
        cfg = load_config(os.environ.get("LINEADIRETTA_CONFIG", "config.toml"))
        to = cfg.municipality[0].sms.numbers[0]
    form = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "AccountSid": "AC" + "0" * 32,
        "From": from_,
        "To": to,
        "Body": " ".join(text),
        "NumMedia": str(len(media)),
    }
    for i, m in enumerate(media):
        form[f"MediaUrl{i}"] = m
        form[f"MediaContentType{i}"] = "image/jpeg"
    status, body = signed_webhook(url, "/sms/inbound", form)
    if status != 200:
        raise click.ClickException(f"HTTP {status}: {body.strip()[:300]}")
    messages = [unescape(m) for m in re.findall(r"<Message>(.*?)</Message>", body, re.S)]
    click.echo("\n".join(messages) if messages else "(no reply)")


@simulate.command("call")
@click.option("--from", "from_", required=True, help="The caller's number.")
@click.option(
    "--to", default=None, help="The municipality's voice number (default: the first configured)."
)
@click.option("--url", default="http://127.0.0.1:5000", show_default=True)
@click.option(
    "--dial-result",
    default="no-answer",
    show_default=True,
    type=click.Choice(["completed", "no-answer", "busy", "failed"]),
    help="What happens when the IVR dials the operators.",
)
@click.option(
    "--script",
    "script",
    multiple=True,
    help="Keys or phrases to answer with, in order (repeatable); '' is silence. "
    "Without --script the call is interactive.",
)
def simulate_call(
    from_: str, to: str | None, url: str, dial_result: str, script: tuple[str, ...]
) -> None:
    """Play the IVR in the terminal as the provider would: prompts as text, keys or words."""

    if to is None:
        cfg = load_config(os.environ.get("LINEADIRETTA_CONFIG", "config.toml"))
        to = cfg.municipality[0].voice.numbers[0]

    def post(path: str, form: dict[str, str]) -> tuple[int, str]:
        return signed_webhook(url, path, form)

    def ask(prompt: str) -> str:
        try:
            return input("keys or words (empty: silence, Ctrl-D: hang up) " + prompt)
        except EOFError:
            return HANGUP

    board = Switchboard(
        post,
        from_=from_,
        to=to,
        inputs=list(script) if script else None,
        ask=None if script else ask,
        out=lambda line: click.echo(f"IVR: {line}"),
        dial_result=dial_result,
    )
    log = board.run()
    click.echo(f"(call {log.sid} ended: {log.ended_by or 'hung up'})")


@main.command()
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--email", is_flag=True, help="Staff e-mails instead of texts.")
def outbox(limit: int, email: bool) -> None:
    """Show the latest outbound texts or staff e-mails (in sandbox mode: what would have been
    sent)."""
    os.environ.setdefault("SECRET_KEY", "cli")
    app = _app(NEEDS_PUBLIC_BASE_URL=False)  # sends no links

    if email:
        with runtime(app).sessions() as s:
            mails = s.scalars(
                select(EmailMessage).order_by(EmailMessage.id.desc()).limit(limit)
            ).all()
        for m in reversed(mails):
            via = f" via {m.transport}" if m.transport else ""
            click.echo(
                f"{m.created_at:%Y-%m-%d %H:%M} #{m.id} {m.status:<10}{via} "
                f"to {', '.join(m.recipients)}: {m.subject}"
            )
            click.echo("    " + m.body.replace("\n", "\n    ").rstrip())
        return
    with runtime(app).sessions() as s:
        rows = s.scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)).all()
    for r in reversed(rows):
        state = r.delivery_status or r.status
        click.echo(
            f"{r.created_at:%Y-%m-%d %H:%M} #{r.id} {r.status:<10} {state:<10} to {r.phone}: {r.body}"
        )


if __name__ == "__main__":
    main()
