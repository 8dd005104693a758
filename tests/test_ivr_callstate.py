"""Navigation state of calls in Redis: menu steps touch no database row, what the caller said
still goes to PostgreSQL, provider retries are answered the same, and Redis going away in the
middle of a call costs the caller nothing but speed. (tests/test_ivr.py runs every call path
with and without Redis; these check the Redis-specific guarantees.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cases.config import Municipality
from cases.models import Call, CallStep, Case
from infra.runtime import runtime
from ivr.callstate import CallStore, Snapshot
from ivr.simulator import Switchboard
from tests.conftest import Clock, redis_call_store, signed_post

pytestmark = pytest.mark.redis
CALLER = "+393331234567"
IN_HOURS = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    """The app's clock: in office hours."""
    return Clock(IN_HOURS)


@pytest.fixture
def store(app: Flask) -> Iterator[CallStore]:
    with redis_call_store(app) as s:
        yield s


class Recorder:
    """The provider's side: every request sent, so that one can be sent again."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.sent: list[tuple[str, dict[str, str], str]] = []

    def __call__(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        r = signed_post(self.client, path, form)
        body = r.get_data(as_text=True)
        self.sent.append((path, form, body))
        return r.status_code, body

    def first(self, prefix: str) -> tuple[str, dict[str, str], str]:
        return next(x for x in self.sent if x[0].startswith(prefix))


def run_call(post: Any, muni: Municipality, *inputs: str) -> Any:
    return Switchboard(post, from_=CALLER, to=muni.voice.numbers[0], inputs=inputs).run()


def steps_in_db(app: Flask, sid: str) -> list[str]:
    with runtime(app).sessions() as s:
        return list(s.scalars(select(CallStep.step).where(CallStep.call_sid == sid)))


def test_menu_steps_touch_no_row_and_what_was_said_is_in_the_database(
    app: Flask, client: FlaskClient, muni: Municipality, store: CallStore
) -> None:
    post = Recorder(client)
    log = run_call(post, muni, "4", "1", "1", "pothole in via Roma 3", "1")
    assert all(status == 200 for _, _, status in log.requests), log.requests
    steps = steps_in_db(app, log.sid)
    # choosing English, then "report a problem", was navigation only: Redis, no database row
    assert len([x for x in post.sent if x[0].startswith("/ivr/menu/")]) == 2
    assert not [s for s in steps if s.startswith("menu/")], steps
    # the description, the confirmation and the registration are in PostgreSQL
    assert any(s.startswith("described/") for s in steps)
    assert any(s.startswith("confirm/") for s in steps)
    with runtime(app).sessions() as s:
        call = s.get(Call, log.sid)
        [case] = s.scalars(select(Case)).all()
        assert call is not None and call.case_id == case.id
        assert call.state["transcript"] == "pothole in via Roma 3"
    assert case.language == "en" and case.original_text == "pothole in via Roma 3"
    snap = Snapshot.loads(store.client.hget(store.key(log.sid), "s"))  # type: ignore[arg-type]
    assert snap.language == "en" and snap.case_id == case.id


def test_a_retried_menu_step_gets_the_same_answer_and_moves_nothing(
    app: Flask, client: FlaskClient, muni: Municipality, store: CallStore
) -> None:
    post = Recorder(client)
    log = run_call(post, muni, "2")  # asks for a case number, then hangs up
    path, form, body = post.first("/ivr/menu/")
    before = store.client.hget(store.key(log.sid), "s")
    status, again = post(path, form)
    assert status == 200 and again == body
    assert store.client.hget(store.key(log.sid), "s") == before  # the turn did not move on
    # a concurrent retry that lost the race is given the winner's answer
    snap = Snapshot.loads(before)  # type: ignore[arg-type]
    assert store.save_nav(log.sid, snap, "menu/9", "d", "<a/>") is None
    assert store.save_nav(log.sid, snap, "menu/9", "d", "<b/>") == "<a/>"


def test_redis_going_away_mid_call_falls_back_to_the_database(
    app: Flask, client: FlaskClient, muni: Municipality, store: CallStore
) -> None:
    post = Recorder(client)
    inputs = ["1", "1", "Buca in via Po 4", "1"]
    working = store.client

    def flaky(prompt: str) -> str:
        if len(inputs) == 3:  # Redis dies before the caller picks the category
            store.client = redis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
        return inputs.pop(0) if inputs else "<hangup>"

    log = Switchboard(post, from_=CALLER, to=muni.voice.numbers[0], ask=flaky).run()
    store.client = working
    assert all(status == 200 for _, _, status in log.requests), log.requests
    assert "Ho registrato: Buca in via Po 4" in log.text
    with runtime(app).sessions() as s:
        [case] = s.scalars(select(Case)).all()
        assert case.original_text == "Buca in via Po 4"
        assert case.category == muni.categories[0].code
    # the category step, whose menu was only in Redis, ran on the database row
    assert any(x.startswith("category/") for x in steps_in_db(app, log.sid))


def test_a_stale_snapshot_is_not_trusted(
    app: Flask, client: FlaskClient, muni: Municipality, store: CallStore
) -> None:
    """Redis lost the latest navigation: the action URL's turn shows it, the row takes over."""
    post = Recorder(client)
    log = run_call(post, muni, "2")  # menu -> asks for a case number -> hangs up
    _, form, body = post.first("/ivr/menu/")
    assert 'action="/ivr/lookup/2"' in body
    key = store.key(log.sid)
    snap = Snapshot.loads(store.client.hget(key, "s"))  # type: ignore[arg-type]
    stale = Snapshot(snap.municipality, snap.from_phone, snap.to_phone, "it", None, {"turn": 0})
    store.client.hset(key, "s", stale.dumps())
    status, answer = post("/ivr/lookup/2", {**form, "Digits": "99"})
    # the row was at turn 3 (the status callback after the hang-up); trusting the snapshot
    # would have sent the call back to turn 1
    assert status == 200 and 'action="/ivr/lookup/4"' in answer
    assert "lookup/2" in steps_in_db(app, log.sid)
    assert Snapshot.loads(store.client.hget(key, "s")).turn == 4  # type: ignore[arg-type]


def test_unknown_call_is_still_a_404_with_redis(
    client: FlaskClient, muni: Municipality, store: CallStore
) -> None:
    r = signed_post(client, "/ivr/menu/1", {"CallSid": "CAnobody", "Digits": "1"})
    assert r.status_code == 404


def test_the_store_survives_a_dropped_connection_and_a_flushed_script(
    store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = Snapshot("monteverde", CALLER, "+390575123400", "it", None, {"turn": 1})
    assert store.save_nav("CAdrop", snap, "menu/1", "d1", "<a/>") is None
    # Redis closed this thread's idle connection (a restart, a client timeout): reopened
    store.client.client_kill_filter(_id=store._command("CLIENT", "ID"))
    assert store.load("CAdrop", "menu/1", "d1") == (snap, "<a/>")
    # the script is not in Redis's cache (a restart, SCRIPT FLUSH): sent again in full
    monkeypatch.setattr("ivr.callstate._SAVE_NAV_SHA", "0" * 40)
    assert store.save_nav("CAdrop", snap, "menu/2", "d2", "<b/>") is None
    assert store.save_nav("CAdrop", snap, "menu/2", "d2", "<c/>") == "<b/>"
    assert store.load("CAdrop", "menu/2", "d2") == (snap, "<b/>")
