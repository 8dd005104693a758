"""The command line, run as a user would: db upgrade, user add, register; and `run` end to end."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT


def cli(
    *args: str, env: dict[str, str], check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "lineadiretta.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=env.get("PWD_FOR_TEST"),
    )
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        DATABASE_URL=db_url,
        LINEADIRETTA_CONFIG=str(ROOT / "config.toml"),
        INSTANCE_PATH=str(tmp_path / "instance"),
        SECRET_KEY="cli-test",
    )
    e.pop("REDIS_URL", None)
    return e


def _api(base: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_user_add_prints_token_last_and_register_lists_the_day(env: dict[str, str]) -> None:
    cli("db", "upgrade", env=env)
    out = cli(
        "user", "add", "giulia", "--role", "urp", "--municipality", "monteverde", env=env
    ).stdout
    token = out.strip().splitlines()[-1]
    assert len(token) >= 40 and " " not in token
    bad = cli("user", "add", "x", "--role", "operator", env=env, check=False)
    assert bad.returncode != 0 and "office" in bad.stderr
    bad = cli(
        "user",
        "add",
        "x",
        "--role",
        "operator",
        "--office",
        "NOPE",
        "--municipality",
        "monteverde",
        env=env,
        check=False,
    )
    assert bad.returncode != 0 and "NOPE" in bad.stderr

    from lineadiretta.app import create_app

    app = create_app(
        {
            "DATABASE_URL": env["DATABASE_URL"],
            "SECRET_KEY": "t",
            "CONFIG_PATH": env["LINEADIRETTA_CONFIG"],
            "PUBLIC_BASE_URL": "https://comune.example.it",
        }
    )
    c = app.test_client()
    h = {"Authorization": f"Bearer {token}"}
    for text in ("buca in via Verdi", '=HYPERLINK("http://x.example","lampione spento")'):
        assert (
            c.post(
                "/api/v1/cases", json={"text": text, "phone": "3331234567"}, headers=h
            ).status_code
            == 201
        )
    p = c.get("/api/v1/cases?per_page=1", headers=h).get_json()["items"][0]["protocol"]
    boss = cli(
        "user", "add", "capo", "--role", "supervisor", "--municipality", "monteverde", env=env
    ).stdout.split()[-1]
    c.post(
        f"/api/v1/cases/{p.replace('/', '-')}/annul",
        json={"reason": "doppione"},
        headers={"Authorization": f"Bearer {boss}"},
    )
    from infra.runtime import runtime

    runtime(app).engine.dispose()

    today = datetime.now(UTC).astimezone(runtime(app).config.municipality[0].tz).date()
    out = cli(
        "register", "--date", today.isoformat(), "--municipality", "monteverde", env=env
    ).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["protocol"][-7:] for r in rows] == ["0000001", "0000002"]
    assert rows[0]["registered_by"] == "giulia" and rows[0]["sender"] == "'+393331234567"
    assert rows[1]["annulled"] == "true" and rows[1]["annul_reason"] == "doppione"
    # the console's CSV writer: a formula is text to a spreadsheet (issue 21, item 6)
    assert rows[1]["text"].startswith("'=HYPERLINK(")
    data = json.loads(
        cli(
            "register",
            "--date",
            today.isoformat(),
            "--format",
            "json",
            "--municipality",
            "monteverde",
            env=env,
        ).stdout
    )
    assert data["municipality"] == "monteverde" and len(data["registrations"]) == 2
    empty = cli("register", "--date", "2001-01-01", "--municipality", "monteverde", env=env).stdout
    assert empty.strip().splitlines() == [empty.strip().splitlines()[0]]  # header only
    bad = cli("register", "--date", "yesterday", env=env, check=False)
    assert bad.returncode != 0 and "YYYY-MM-DD" in bad.stderr


def test_bad_config_stops_start_up_naming_the_key(env: dict[str, str], tmp_path: Path) -> None:
    text = (
        (ROOT / "config.toml")
        .read_text()
        .replace('timezone = "Europe/Rome"', 'timezone = "Europe/Atlantis"', 1)
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    env["LINEADIRETTA_CONFIG"] = str(bad)
    proc = cli("register", "--date", "2026-01-01", env=env, check=False)
    assert proc.returncode != 0 and "timezone" in proc.stderr and "Traceback" not in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_run_starts_everything_on_embedded_defaults(tmp_path: Path, db_url: str) -> None:
    """`lineadiretta run` with nothing configured: migrates, makes an admin, serves, runs a worker."""
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DATABASE_URL",
            "REDIS_URL",
            "SECRET_KEY",
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN",
        )
    }
    # the example configuration, on the wall clock without its quiet hours (an evening run
    # would otherwise see the confirmation wait for the morning)
    config = (ROOT / "config.toml").read_text()
    config = config.replace('start = "21:00"\nend = "08:00"', 'start = "00:00"\nend = "00:00"')
    assert 'start = "00:00"' in config, "the example's quiet hours moved: say none here"
    (tmp_path / "config.toml").write_text(config)
    env["LINEADIRETTA_CONFIG"] = str(tmp_path / "config.toml")
    workdir = tmp_path / "site"
    workdir.mkdir()
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "lineadiretta.cli", "run", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    health = json.loads(r.read())
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("lineadiretta run did not answer /healthz within 60 s")
        assert health == {
            "status": "ok",
            "database": "ok",
            "broker": "embedded",
            "spool": {"depth": 0, "oldest_age_seconds": None, "held": 0},
        }
        assert (workdir / "instance" / "lineadiretta.sqlite").exists()
        token = (workdir / "instance" / "admin_token").read_text().strip()
        status, case = _api(
            base,
            "POST",
            "/api/v1/cases",
            token,
            {"text": "albero caduto sulla strada", "phone": "+39 333 765 4321"},
        )
        assert status == 201 and case["protocol"].endswith("/0000001"), case
        status, _ = _api(base, "POST", "/api/v1/cases", "wrong", {"text": "x"})
        assert status == 401
        # the first admin can log in to the console with the password `run` wrote
        import requests

        password = (workdir / "instance" / "admin_password").read_text().strip()
        browser = requests.Session()
        page = browser.get(base + "/console/login", timeout=10).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf, page
        r = browser.post(
            base + "/console/login",
            data={"csrf_token": csrf.group(1), "username": "admin", "password": password},
            timeout=10,
        )
        assert r.status_code == 200 and r.url.endswith("/console/dashboard"), r.text[:500]
        # a citizen texts, through the simulator, signed with the local sandbox token
        sim_env = dict(env, INSTANCE_PATH=str(workdir / "instance"))
        sim = subprocess.run(
            [
                sys.executable,
                "-m",
                "lineadiretta.cli",
                "simulate",
                "sms",
                "--from",
                "+393351112222",
                "--url",
                base,
                "lampione",
                "spento",
                "in",
                "via",
                "Roma",
            ],
            env=sim_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sim.returncode == 0 and "/0000002" in sim.stdout, sim.stderr + sim.stdout
        # and a citizen phones, through the switchboard simulator, from a script of answers
        sim = subprocess.run(
            [
                sys.executable,
                "-m",
                "lineadiretta.cli",
                "simulate",
                "call",
                "--from",
                "+393351112233",
                "--url",
                base,
                "--script",
                "1",
                "--script",
                "1",
                "--script",
                "buca profonda in via Verdi 7",
                "--script",
                "1",
            ],
            env=sim_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sim.returncode == 0, sim.stderr + sim.stdout
        assert "IVR: Benvenuti" in sim.stdout and "barra, 3" in sim.stdout, sim.stdout
        # the worker is a separate process consuming the embedded broker: the catch-up task
        # that `run` queues at start is executed there
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = (tmp_path / "run.log").read_text()
            if "workers.tasks.flag_overdue" in out and "succeeded" in out:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the embedded worker did not run the task:\n" + out[-3000:])
        # the counter case's confirmation went through the worker to the sandbox outbox
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = subprocess.run(
                [sys.executable, "-m", "lineadiretta.cli", "outbox"],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            if "sent" in shown and "+393337654321" in shown:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the sandbox outbox never showed the confirmation as sent:\n" + shown)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # as a service manager stops `run`
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    # `run` stopped its worker (in a process group of its own) before it exited: none is left
    started = re.search(r"worker pid (\d+)", (tmp_path / "run.log").read_text())
    assert started, "run did not say which worker it started"
    worker_pid = int(started.group(1))

    def group_alive() -> bool:
        """The worker itself, or any process of its group (its pool), still there."""
        for probe in (os.kill, os.killpg):
            try:
                probe(worker_pid, 0)
            except ProcessLookupError:
                continue
            return True
        return False

    deadline = time.monotonic() + 10  # its pool processes follow their parent out
    while group_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker_pid, signal.SIGKILL)  # do not leak it into later tests
        pytest.fail(f"the worker (pid {worker_pid}) outlived `lineadiretta run`")


def test_console_password_from_the_command_line(env: dict[str, str]) -> None:
    cli("db", "upgrade", env=env)
    add = ("user", "add", "marta", "--role", "urp", "--municipality", "monteverde")
    short = cli(*add, "--password-stdin", env=env, stdin="corta\n", check=False)
    assert short.returncode != 0 and "at least 10" in short.stderr  # too short: no account
    cli(*add, "--password-stdin", env=env, stdin="una password lunga\n")
    change = cli(
        "user",
        "password",
        "marta",
        "--municipality",
        "monteverde",
        env=env,
        stdin="un'altra password lunga\n",
    )
    assert "password set" in change.stdout

    from sqlalchemy import select

    from cases.auth import check_login
    from cases.clock import utcnow
    from cases.db import make_engine, make_sessionmaker
    from cases.errors import Invalid
    from cases.models import User

    engine = make_engine(env["DATABASE_URL"])
    with make_sessionmaker(engine)() as s:
        assert s.scalar(select(User).where(User.name == "marta")) is not None
        assert check_login(s, "monteverde", "marta", "un'altra password lunga", utcnow())
        with pytest.raises(Invalid):
            check_login(s, "monteverde", "marta", "una password lunga", utcnow())
        s.rollback()
    engine.dispose()


def test_user_add_records_the_contacts_notifications_use(env: dict[str, str]) -> None:
    cli("db", "upgrade", env=env)
    base = ("user", "add", "rita", "--role", "referent", "--office", "AMB")
    bad = cli(
        *base, "--municipality", "monteverde", "--email", "non-un-indirizzo", env=env, check=False
    )
    assert bad.returncode != 0 and "e-mail" in bad.stderr
    bad = cli(*base, "--municipality", "monteverde", "--phone", "12", env=env, check=False)
    assert bad.returncode != 0 and "--phone" in bad.stderr
    cli(
        *base,
        "--municipality",
        "monteverde",
        "--phone",
        "333 765 4321",
        "--email",
        "rita@comune.example.it",
        env=env,
    )
    from sqlalchemy import select

    from cases.db import make_engine, make_sessionmaker
    from cases.models import User

    engine = make_engine(env["DATABASE_URL"])
    with make_sessionmaker(engine)() as s:
        rita = s.scalar(select(User).where(User.name == "rita"))
        assert rita is not None
        assert (rita.phone, rita.email) == ("+393337654321", "rita@comune.example.it")
    engine.dispose()


def test_outbox_email_lists_staff_e_mails(env: dict[str, str]) -> None:
    cli("db", "upgrade", env=env)
    from datetime import UTC, datetime

    from cases.db import make_engine, make_sessionmaker, transaction
    from cases.models import EmailMessage

    engine = make_engine(env["DATABASE_URL"])
    now = datetime.now(UTC)
    with transaction(make_sessionmaker(engine)) as s:
        s.add(
            EmailMessage(
                municipality="monteverde",
                kind="voice_case",
                recipients=["anna@comune.example.it"],
                subject="Nuova segnalazione telefonica 2026/0000007",
                body="Trascrizione: lampione spento\nChiamante: +39 333 ••• 4567",
                message_id="<x@lineadiretta>",
                status="sent",
                transport="sandbox",
                created_at=now,
                not_before=now,
            )
        )
    engine.dispose()
    shown = cli("outbox", "--email", env=env).stdout
    assert "to anna@comune.example.it: Nuova segnalazione telefonica 2026/0000007" in shown
    assert "via sandbox" in shown and "    Trascrizione: lampione spento" in shown
    assert "anna@" not in cli("outbox", env=env).stdout  # texts only without --email
