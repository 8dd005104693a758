"""The baseline for bench/ivr.py: a bare Flask app answering any /ivr/ step with fixed TwiML.

Reads the form as the real webhook does and answers a typical menu document as ``text/xml``,
so the ratio app/bare shows what the product's own work costs (signature check, call state,
step record, the TwiML builder).
"""

from __future__ import annotations

from flask import Flask, Response, request

TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Gather action="/ivr/lookup/2" '
    'actionOnEmptyResult="true" finishOnKey="#" input="dtmf" language="it-IT" method="POST" '
    'timeout="10"><Say language="it-IT" voice="Polly.Bianca">Digiti il numero della pratica e '
    "termini con cancelletto.</Say></Gather></Response>"
)


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/ivr/<path:step>")
    def step(step: str) -> Response:
        request.form  # parse the body like the real webhook does  # noqa: B018
        return Response(TWIML, 200, mimetype="text/xml")

    @app.get("/")
    def health() -> str:
        return "ok"

    return app
