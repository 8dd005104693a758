"""End to end, as in production: the real web service and a real Celery worker (with beat) on a
real Redis, PostgreSQL, the official Twilio client, and the fake provider sending signed
callbacks back. Requests are signed exactly as the provider signs them."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from cases.config import load_config
from cases.db import make_engine, make_sessionmaker, transaction
from cases.models import Case, OutboxMessage
from cases.notify import Ctx
from cases.services import create_user
from tests.conftest import IN_CI, ROOT, _truncate, need
from tests.fakes.provider import FakeProvider

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
SID, TOKEN = "AC" + "e" * 32, "e2e-auth-token"
CITIZEN = "+393331112233"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


class Stack:
    """The processes of a deployment, on this machine's loopback."""

    def __init__(
        self, tmp: Path, db_url: str, fake: FakeProvider, bin_dir: Path | None = None
    ) -> None:
        self.tmp = tmp
        # Where the deployment's commands are (a production virtual environment's bin/);
        # None runs them with the test interpreter.
        self.bin_dir = bin_dir
        self.db_url = db_url
        self.fake = fake
        self.redis_port = free_port()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # The stack runs on the wall clock: no quiet hours, or a run in the evening would
        # see every text wait for the morning (quiet hours are tested with a given clock).
        cfg = (
            (ROOT / "config.toml")
            .read_text()
            .replace("rate_per_second = 1.0", "rate_per_second = 200")
            .replace('start = "21:00"\nend = "08:00"', 'start = "00:00"\nend = "00:00"')
        )
        assert 'start = "00:00"' in cfg, "the example's quiet hours moved: say none here"
        (tmp / "config.toml").write_text(cfg)
        self.config = load_config(tmp / "config.toml")
        self.muni = self.config.municipality[0]
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TWILIO_", "DATABASE_", "REDIS_"))
        }
        self.env.update(
            DATABASE_URL=db_url,
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            SECRET_KEY="e2e",
            TWILIO_ACCOUNT_SID=SID,
            TWILIO_AUTH_TOKEN=TOKEN,
            TWILIO_API_BASE_URL=fake.base_url,
            PUBLIC_BASE_URL=self.base,
            LINEADIRETTA_CONFIG=str(tmp / "config.toml"),
            INSTANCE_PATH=str(tmp / "instance"),
            SMS_CLAIM_TIMEOUT_SECONDS="12",
            SMS_REQUEUE_SECONDS="2",
            SWEEP_EVERY_SECONDS="1",
            LOG_LEVEL="INFO",
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        engine = make_engine(db_url)
        self.sessions = make_sessionmaker(engine)

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            args,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.tmp,
        )

    def start_procfile(self, name: str, **env: str) -> None:
        """Start a process type exactly as the Procfile says, from `bin_dir`."""
        self.env.update(env)
        path = f"{self.bin_dir}{os.pathsep}" if self.bin_dir else ""
        self.env["PATH"] = path + os.environ.get("PATH", "")
        self._spawn(name, *procfile_command(name, self.env, self.bin_dir))
        proc = self.procs[name]

        def up(ready: Callable[[], bool]) -> Callable[[], bool]:
            def check() -> bool:
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")
                return ready()

            return check

        if name == "web":
            port = self.env.get("PORT", "8000")
            assert self.base.endswith(":" + port), "PORT must be the stack's port"
            wait_until(up(lambda: _get_ok(self.base + "/healthz")), 60, "the web service")
        elif name == "worker":
            wait_until(up(lambda: "ready" in self.log("worker")), 60, "the worker")
        elif name == "beat":
            wait_until(up(lambda: "beat: Starting" in self.log("beat")), 60, "beat")

    def start_redis(self) -> None:
        self._spawn(
            "redis",
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        )
        wait_until(lambda: _ping(self.redis_port), 10, "redis-server")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def start_web(self) -> None:
        self._spawn(
            "web", sys.executable, "-m", "lineadiretta.cli", "serve", "--port", str(self.port)
        )
        wait_until(lambda: _get_ok(self.base + "/healthz"), 30, "the web service")

    def start_worker(self) -> None:
        self._spawn(
            "worker",
            sys.executable,
            "-m",
            "lineadiretta.cli",
            "worker",
            "--beat",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
        )
        wait_until(lambda: "ready" in self.log("worker"), 30, "the worker")

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    # --- acting as the provider and as staff

    def text(
        self,
        body: str,
        frm: str = CITIZEN,
        sid: str | None = None,
        token: str = TOKEN,
        media: list[tuple[str, str]] | None = None,
    ) -> requests.Response:
        form = {
            "MessageSid": sid or "SM" + os.urandom(16).hex(),
            "AccountSid": SID,
            "From": frm,
            "To": self.muni.sms.numbers[0],
            "Body": body,
            "NumMedia": str(len(media or [])),
            "ApiVersion": "2010-04-01",
        }
        for i, (url, ctype) in enumerate(media or []):
            form[f"MediaUrl{i}"], form[f"MediaContentType{i}"] = url, ctype
        sig = RequestValidator(token).compute_signature(self.base + "/sms/inbound", form)
        return requests.post(
            self.base + "/sms/inbound", data=form, headers={"X-Twilio-Signature": sig}, timeout=20
        )

    def staff(self, name: str, role: str, office: str | None = None) -> str:
        with transaction(self.sessions) as s:
            _, token = create_user(
                s, Ctx(self.muni, datetime.now(UTC)), name, role, office, full_name=name.title()
            )
        return token

    def api(self, token: str, method: str, path: str, body: Any = None) -> Any:
        r = requests.request(
            method,
            self.base + "/api/v1" + path,
            json=body,
            timeout=20,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code < 300, r.text
        return r.json()

    def outbox(self) -> list[OutboxMessage]:
        with self.sessions() as s:
            return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def procfile_command(name: str, env: dict[str, str], bin_dir: Path | None = None) -> list[str]:
    """The argv of the Procfile's process type `name`, with ${VAR:-default} expanded from env."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        kind, sep, command = line.partition(":")
        if sep and kind.strip() == name:
            expanded = re.sub(
                r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], command.strip()
            )
            argv = shlex.split(expanded)
            if bin_dir is not None and (bin_dir / argv[0]).exists():
                argv[0] = str(bin_dir / argv[0])
            return argv
    raise KeyError(f"no process type {name!r} in the Procfile")


def _ping(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _get_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def reply(resp: requests.Response) -> str:
    assert resp.status_code == 200, resp.text
    m = re.search(r"<Message>(.*)</Message>", resp.text, re.S)
    return m.group(1) if m else ""


@contextmanager
def running_stack(tmp: Path, url: str, **env: str) -> Iterator[Stack]:
    """Redis, the web service and a worker (with beat) on `url`, with the fake provider."""
    with running_stack_with(tmp, url, **env) as st:
        yield st


@contextmanager
def running_stack_with(
    tmp: Path, url: str, *, procfile: bool = False, bin_dir: Path | None = None, **env: str
) -> Iterator[Stack]:
    """`running_stack`; with `procfile`, the Procfile's web (gunicorn), worker and beat."""
    need("TEST_REDIS_URL", "Redis")
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is required for the end-to-end tests in CI")
        pytest.skip("redis-server not installed")
    with FakeProvider(account_sid=SID, auth_token=TOKEN) as fake:
        st = Stack(tmp, url, fake, bin_dir=bin_dir)
        st.env.update(env)
        try:
            st.start_redis()
            if procfile:
                st.start_procfile("web", PORT=st.base.rsplit(":", 1)[1], WEB_CONCURRENCY="2")
                st.start_procfile("worker", WORKER_CONCURRENCY="2")
                st.start_procfile("beat")
            else:
                st.start_web()
                st.start_worker()
            yield st
        finally:
            st.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[Stack]:
    # pg_url is migrated, and a database of its own under pytest-xdist
    with running_stack(tmp_path_factory.mktemp("e2e"), pg_url) as st:
        yield st


@pytest.fixture
def e2e(stack: Stack) -> Stack:
    _truncate(stack.db_url)
    stack.fake.reset()
    for name in ("web", "worker"):
        assert stack.procs[name].poll() is None, stack.log(name)[-3000:]
    return stack


def test_texts_become_cases_and_replies_go_out_exactly_once(e2e: Stack) -> None:
    first = reply(e2e.text("Buca profonda in via Cavour 3, pericolosa per le bici"))
    assert re.search(r"\d{4}/0000001", first)
    sid = "SM" + "1" * 32
    replies = {
        reply(e2e.text("lampione spento in via Po", frm="+393470000001", sid=sid))
        for _ in range(10)
    }
    assert len(replies) == 1
    assert e2e.text("buca", token="forged").status_code == 403
    with e2e.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 2
        case = s.scalar(select(Case).where(Case.phone == CITIZEN))
        assert case is not None
    other = reply(e2e.text(f"STATO {case.protocol}", frm="+393479999999"))
    assert case.protocol in other and "?t=" not in other and "Cavour" not in other

    p = case.protocol.replace("/", "-")
    urp, op = e2e.staff("urp", "urp"), e2e.staff("op", "operator", case.office)
    if case.status == "received":
        e2e.api(urp, "POST", f"/cases/{p}/assign", {"category": "strade"})
    e2e.api(op, "POST", f"/cases/{p}/take")
    e2e.api(op, "POST", f"/cases/{p}/resolve", {"note": "asfaltata"})
    e2e.api(urp, "POST", f"/cases/{p}/close", {"reply": "La buca è stata chiusa. Grazie."})
    to_citizen = wait_until(
        lambda: len(e2e.fake.sent_to(CITIZEN)) >= 2 and e2e.fake.sent_to(CITIZEN), 30, "texts"
    )
    time.sleep(1.5)  # time enough for any duplicate to show up
    bodies = [m["body"] for m in e2e.fake.sent_to(CITIZEN)]
    assert len(bodies) == len(set(bodies)) == len([o for o in e2e.outbox() if o.phone == CITIZEN])
    assert any("chiusa" in b for b in bodies) and any("Op" in b for b in bodies), to_citizen
    # signed callbacks from the provider moved each text to delivered
    wait_until(
        lambda: all(o.delivery_status == "delivered" for o in e2e.outbox()),
        20,
        "delivery callbacks",
    )


def test_after_stop_no_text_is_sent(e2e: Stack) -> None:
    reply(e2e.text("rifiuti abbandonati in via Roma"))
    assert reply(e2e.text("STOP")) == ""
    with e2e.sessions() as s:
        case = s.scalar(select(Case))
        assert case is not None
    urp = e2e.staff("urp", "urp")
    p = case.protocol.replace("/", "-")
    e2e.api(urp, "POST", f"/cases/{p}/note", {"text": "Intervento domani", "public": True})
    wait_until(
        lambda: e2e.outbox() and all(o.status == "suppressed" for o in e2e.outbox()),
        20,
        "suppression",
    )
    assert e2e.fake.sent_to(CITIZEN) == [] and all(
        r.get("to") != CITIZEN for r in e2e.fake.requests
    )


def test_worker_killed_mid_sending_leaves_every_text_sent_once(e2e: Stack) -> None:
    phones = [f"+39347{n:07d}" for n in range(30)]
    for ph in phones:
        e2e.fake.behave(ph, "slow", seconds=0.15)
    with transaction(e2e.sessions) as s:
        now = datetime.now(UTC)
        s.add_all(
            [
                OutboxMessage(
                    municipality=e2e.muni.code,
                    phone=ph,
                    template="public_note",
                    language="it",
                    body=f"Comune di Monteverde: avviso {i}",
                    status="pending",
                    created_at=now,
                    not_before=now,
                )
                for i, ph in enumerate(phones)
            ]
        )
    wait_until(lambda: len(e2e.fake.messages) >= 4, 30, "the first texts")
    e2e.stop("worker", signal.SIGKILL)  # mid-sending, no goodbye
    killed_at = len(e2e.fake.messages)
    assert killed_at < 30, "the worker finished before it could be killed"
    e2e.start_worker()
    wait_until(lambda: all(o.status == "sent" for o in e2e.outbox()), 90, "every text sent")
    time.sleep(1.5)
    bodies = [m["body"] for m in e2e.fake.messages]
    assert len(bodies) == 30 and len(set(bodies)) == 30, "each text exactly once"
    sids = {o.provider_sid for o in e2e.outbox()}
    assert sids == {m["sid"] for m in e2e.fake.messages}


def test_with_redis_down_texts_still_become_cases_and_replies_go_out_after(e2e: Stack) -> None:
    urp = e2e.staff("urp", "urp")
    e2e.stop("redis")
    started = time.monotonic()
    numbers = [reply(e2e.text(f"NUOVA lampione spento numero {i} in via Milano")) for i in range(3)]
    assert all(re.search(r"/000000[123]", n) for n in numbers)
    assert time.monotonic() - started < 15, "intake must not hang on the broker"
    with e2e.sessions() as s:
        case = s.scalar(select(Case).order_by(Case.id))
        assert case is not None
    e2e.api(
        urp,
        "POST",
        f"/cases/{case.protocol.replace('/', '-')}/note",
        {"text": "Preso in carico dal Comune", "public": True},
    )
    time.sleep(2)
    assert e2e.fake.messages == []  # nothing can be sent while the broker is out
    e2e.start_redis()
    wait_until(lambda: e2e.fake.sent_to(CITIZEN), 90, "the text after Redis came back")
    # the worker records the provider's answer just after the provider has the text
    wait_until(lambda: all(o.status == "sent" for o in e2e.outbox()), 10, "the send recorded")
    assert len(e2e.fake.sent_to(CITIZEN)) == 1


def test_mms_photos_are_downloaded_with_the_account_credentials_and_checked(e2e: Stack) -> None:
    from cases.models import Attachment

    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(2048)
    good = e2e.fake.add_media(jpeg, "image/jpeg")
    html = e2e.fake.add_media(b"<html>not a photo</html>", "text/html")
    huge = e2e.fake.add_media(
        b"\xff\xd8" + b"0" * (e2e.muni.sms.max_media_bytes + 10), "image/jpeg"
    )
    r = reply(e2e.text("", media=[(good, "image/jpeg"), (html, "text/html"), (huge, "image/jpeg")]))
    assert re.search(r"/0000001", r)  # a photo alone is still a case

    def settled() -> list[Attachment] | None:
        with e2e.sessions() as s:
            atts = list(s.scalars(select(Attachment).order_by(Attachment.id)))
        return atts if atts and all(a.state != "pending" for a in atts) else None

    first, second, third = wait_until(settled, 30, "the media downloads")
    assert (first.state, first.content_type, first.size) == ("stored", "image/jpeg", len(jpeg))
    assert first.storage_path and Path(first.storage_path).read_bytes() == jpeg
    assert second.state == "rejected" and "text/html" in (second.error or "")
    assert third.state == "rejected" and "larger" in (third.error or "")
