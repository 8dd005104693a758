"""The floor of the webhook benchmarks: the bare endpoint plus only the work that the brief
requires of any implementation, and none of the product's own.

- ``create_sms_app()`` (POST /sms/inbound): twilio's ``RequestValidator.validate`` against the
  public URL, the sender normalised with phonenumbers, ONE durable statement that numbers the
  text gap-free and stores it (``cases.db.DirectConnections``: autocommit, the thread's own
  connection, no pool, as the product does), and the reply built with twilio's
  ``MessagingResponse``. No case, no history, no classifier, no look-up of the sender.
- ``create_ivr_app()`` (POST /ivr/<step>): ``RequestValidator.validate``, the call's state read
  from Redis and written back with the product's own ``CallStore`` (the two round trips that
  state outside the process needs: read before the answer, write after it), and the answer
  built with twilio's ``VoiceResponse``. No menu logic.

Served under the same gunicorn settings in the same run as the bare endpoint and the product
(``--floor``), floor / bare is the highest ratio any implementation could reach with these
parts on this machine.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response, request
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import Gather, VoiceResponse

SMS_TABLES = (
    "CREATE TABLE IF NOT EXISTS bench_floor_counter (id int PRIMARY KEY, last_number int NOT NULL)",
    "INSERT INTO bench_floor_counter VALUES (1, 0) ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS bench_floor_texts (number int PRIMARY KEY, sid text NOT NULL"
    " UNIQUE, phone text NOT NULL, body text NOT NULL)",
)
SMS_STATEMENT = (
    "WITH n AS (UPDATE bench_floor_counter SET last_number = last_number + 1 WHERE id = 1"
    " RETURNING last_number) INSERT INTO bench_floor_texts (number, sid, phone, body)"
    " SELECT last_number, $1, $2, $3 FROM n RETURNING number"
)


def prepare_sms_floor(libpq_url: str) -> None:
    """Create the floor's two tables (before serving: the workers must not race to)."""
    import psycopg

    with psycopg.connect(libpq_url, autocommit=True) as conn:
        for sql in SMS_TABLES:
            conn.execute(sql)


def _signed(app: Flask) -> bool:
    url = app.config["PUBLIC_BASE_URL"].rstrip("/") + request.path
    validator: RequestValidator = app.config["VALIDATOR"]
    return validator.validate(url, request.form, request.headers.get("X-Twilio-Signature", ""))


def _app() -> Flask:
    app = Flask(__name__)
    app.config["PUBLIC_BASE_URL"] = os.environ["PUBLIC_BASE_URL"]
    app.config["VALIDATOR"] = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
    return app


def create_sms_app() -> Flask:
    from cases.db import default_database_url, direct_connections, make_engine
    from cases.phone import normalise_phone

    app = _app()
    direct = direct_connections(make_engine(default_database_url()))

    @app.post("/sms/inbound")
    def inbound() -> Any:
        if not _signed(app):
            return Response("forged\n", 403)
        f = request.form
        phone = normalise_phone(f["From"], "IT")
        (number,) = direct.fetchone(
            SMS_STATEMENT, (f["MessageSid"], phone, f.get("Body", "")), repeatable=True
        )
        resp = MessagingResponse()
        resp.message(f"Registrata con protocollo 2026/{number:07d}.")
        return Response(str(resp), 200, mimetype="text/xml")

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    return app


def create_ivr_app() -> Flask:
    from ivr.callstate import CallStore, Snapshot

    app = _app()
    store = CallStore.from_url(
        os.environ["IVR_REDIS_URL"], prefix=os.environ.get("IVR_REDIS_PREFIX", "ld:call:")
    )

    @app.post("/ivr/<path:step>")
    def step(step: str) -> Any:
        if not _signed(app):
            return Response("forged\n", 403)
        sid = request.form["CallSid"]
        snap, _answer = store.load(sid, step, "floor")
        state = dict(snap.state) if snap else {}
        state["turn"] = int(state.get("turn", 0)) + 1
        resp = VoiceResponse()
        gather = Gather(
            action=f"/ivr/lookup/{state['turn']}",
            action_on_empty_result=True,
            finish_on_key="#",
            input="dtmf",
            language="it-IT",
            method="POST",
            timeout=10,
        )
        gather.say(
            "Digiti il numero della pratica e termini con cancelletto.",
            language="it-IT",
            voice="Polly.Bianca",
        )
        resp.append(gather)
        xml = str(resp)
        new = Snapshot("monteverde", "+393330000000", "+390000000000", "it", None, state)
        store.save_nav(sid, new, step, "floor", xml)
        return Response(xml, 200, mimetype="text/xml")

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    return app
