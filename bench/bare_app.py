"""The baseline for bench/inbound_sms.py: a bare Flask app with the webhook's shape and no work.

One POST endpoint (``/sms/inbound``) that reads the form (as the real view does) and returns a
fixed TwiML reply as ``text/xml``. Served by the same gunicorn settings as the real app, so the
ratio app/bare shows what the product's own work costs (signature check, database, register).

    .venv/bin/gunicorn 'bench.bare_app:create_app()'
"""

from __future__ import annotations

from flask import Flask, Response, request

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Message>ok</Message></Response>'


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def page() -> Response:  # the baseline of a read (bench/scale.py)
        return Response("<!doctype html><title>ok</title><p>ok</p>", 200, mimetype="text/html")

    @app.post("/sms/inbound")
    def inbound() -> Response:
        request.form  # parse the body like the real webhook does  # noqa: B018
        return Response(TWIML, 200, mimetype="text/xml")

    return app
