"""The production install: the package alone, without the dev extras, in a fresh virtual
environment, runs every process of the Procfile against Redis and PostgreSQL.

The test environment has pytest and its friends, which pull in packages the product may
forget to declare (kombu's Redis transport imports `packaging`, which only Celery's `redis`
extra declares). Here nothing but the package's own dependencies is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from cases.db import make_engine
from cases.models import Case
from tests.conftest import IN_CI, ROOT, need
from tests.fakes.provider import FakeProvider
from tests.test_sms_e2e import CITIZEN, SID, TOKEN, Stack, reply, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

# What the source tree holds that an sdist would not: never copied into the build.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "instance",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    "test-artifacts",
    "control",
)


def _run(*argv: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def prod_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with `pip install .` (no extras); returns its bin/."""
    tmp = tmp_path_factory.mktemp("install")
    # A copy of the source, so the build neither writes into the work tree nor finds a file
    # that the package does not declare.
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    venv = tmp / "venv"
    made = _run(sys.executable, "-m", "venv", venv, cwd=tmp)
    assert made.returncode == 0, made.stderr
    installed = _run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        src,
        cwd=tmp,
        timeout=540,
    )
    if installed.returncode != 0:
        out = installed.stdout + installed.stderr
        if not IN_CI and "Could not find a version" in out:
            pytest.skip("no package index reachable for a fresh install")
        pytest.fail("pip install . failed:\n" + out[-4000:])
    return venv / "bin"


def test_production_install_is_consistent_and_has_no_dev_tools(prod_venv: Path) -> None:
    check = _run(prod_venv / "pip", "check", cwd=prod_venv)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No broken requirements" in check.stdout
    # the dev extras are not there, so nothing below can lean on them
    for dev_only in ("pytest", "playwright", "mypy"):
        probe = _run(prod_venv / "python", "-c", f"import {dev_only}", cwd=prod_venv)
        assert probe.returncode != 0, f"{dev_only} is in the production environment"
    # the installed package is the one imported, not the work tree
    where = _run(
        prod_venv / "python",
        "-c",
        "import lineadiretta, sys; print(lineadiretta.__file__)",
        cwd=prod_venv,
    )
    assert where.returncode == 0 and "site-packages" in where.stdout, where.stdout + where.stderr
    # the migrations and templates are package data
    data = _run(
        prod_venv / "python",
        "-c",
        "import importlib.resources as r; "
        "m = r.files('lineadiretta').joinpath('migrations'); "
        "print(m.joinpath('env.py').is_file(), "
        "any(p.name.endswith('.py') for p in m.joinpath('versions').iterdir()), "
        "r.files('console').joinpath('templates').is_dir())",
        cwd=prod_venv,
    )
    assert data.stdout.split() == ["True"] * 3, data.stdout + data.stderr


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own, dropped after."""
    base = make_url(need("TEST_DATABASE_URL", "PostgreSQL"))
    name = f"{base.database}_install"
    admin = make_engine(base.set(database="postgres").render_as_string(hide_password=False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_the_procfile_runs_from_the_production_install(
    prod_venv: Path, fresh_database: str, tmp_path: Path
) -> None:
    need("TEST_REDIS_URL", "Redis")
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is required for the install test in CI")
        pytest.skip("redis-server not installed")
    with FakeProvider(account_sid=SID, auth_token=TOKEN) as fake:
        st = Stack(tmp_path, fresh_database, fake, bin_dir=prod_venv)
        try:
            st.start_redis()
            # the release step migrates the empty database
            st.start_procfile("release")
            release = st.procs["release"]
            assert release.wait(timeout=120) == 0, st.log("release")
            st.start_procfile("web", PORT=st.base.rsplit(":", 1)[1], WEB_CONCURRENCY="2")
            st.start_procfile("worker", WORKER_CONCURRENCY="2")
            st.start_procfile("beat")

            answer = st.text("Buca profonda in via Cavour 3")
            first = reply(answer)
            assert re.search(r"\d{4}/0000001", first), first
            # production names no server version (issue 21, item 8)
            assert "/" not in answer.headers.get("Server", ""), answer.headers
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            with st.sessions() as s:
                assert s.scalar(select(func.count()).select_from(Case)) == 1
                case = s.scalar(select(Case))
                assert case is not None
            urp = st.staff("urp", "urp")
            st.api(
                urp,
                "POST",
                f"/cases/{case.protocol.replace('/', '-')}/note",
                {"text": "Sopralluogo fissato per domani", "public": True},
            )
            sent = wait_until(lambda: st.fake.sent_to(CITIZEN), 60, "the worker's text")
            assert len(sent) == 1 and "Sopralluogo" in sent[0]["body"], sent
            wait_until(
                lambda: all(o.status == "sent" for o in st.outbox()), 30, "the outbox row sent"
            )
            for name in ("web", "worker", "beat"):
                assert st.procs[name].poll() is None, st.log(name)[-3000:]
                assert "Traceback" not in st.log(name), st.log(name)[-3000:]
        finally:
            st.close()
