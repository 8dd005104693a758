"""POST /sms/status: signed, forward only, unknown ids ignored, a dead worker's send recorded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cases.db import transaction
from cases.models import OutboxMessage, OutboxStatus
from infra.runtime import runtime
from tests.conftest import signed_post

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def _row(app: Flask, **values: object) -> int:
    base: dict[str, object] = dict(
        municipality="monteverde",
        phone="+393331234567",
        template="closed",
        language="it",
        body="Comune: chiuso",
        status=OutboxStatus.SENT.value,
        created_at=NOW,
        not_before=NOW,
    )
    base.update(values)
    with transaction(runtime(app).sessions) as s:
        row = OutboxMessage(**base)
        s.add(row)
        s.flush()
        return row.id


def _get(app: Flask, rid: int) -> OutboxMessage:
    with runtime(app).sessions() as s:
        row = s.get(OutboxMessage, rid)
        assert row is not None
        return row


def _callback(
    client: FlaskClient, sid: str, status: str, path: str = "/sms/status", **extra: str
) -> int:
    form = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC1",
        "MessageStatus": status,
        "SmsStatus": status,
        "To": "+393331234567",
        "From": "+393475550123",
        "ApiVersion": "2010-04-01",
        **extra,
    }
    return int(signed_post(client, path, form).status_code)


def test_status_only_moves_forward(app: Flask, client: FlaskClient) -> None:
    rid = _row(app, provider_sid="SM" + "1" * 32, delivery_status="queued")
    assert _callback(client, "SM" + "1" * 32, "delivered") == 200
    assert _callback(client, "SM" + "1" * 32, "sent") == 200  # late, out of order
    row = _get(app, rid)
    assert row.delivery_status == "delivered" and row.delivery_updated_at is not None


def test_undelivered_keeps_its_error_code(app: Flask, client: FlaskClient) -> None:
    rid = _row(app, provider_sid="SM" + "2" * 32, delivery_status="sent")
    _callback(client, "SM" + "2" * 32, "undelivered", ErrorCode="30003")
    row = _get(app, rid)
    assert (row.delivery_status, row.error_code) == ("undelivered", "30003")


def test_unknown_message_is_ignored_with_a_log_line(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert _callback(client, "SM" + "9" * 32, "delivered") == 200
    assert "unknown message" in caplog.text


def test_callback_records_the_id_of_a_send_whose_worker_died(
    app: Flask, client: FlaskClient
) -> None:
    rid = _row(app, status=OutboxStatus.CLAIMED.value, claim_token="dead", claimed_at=NOW)
    assert _callback(client, "SM" + "3" * 32, "sent", path=f"/sms/status?o={rid}") == 200
    row = _get(app, rid)
    assert (row.status, row.provider_sid, row.claim_token) == ("sent", "SM" + "3" * 32, None)


def test_status_callback_must_be_signed(app: Flask, client: FlaskClient) -> None:
    rid = _row(app, provider_sid="SM" + "4" * 32, delivery_status="queued")
    form = {"MessageSid": "SM" + "4" * 32, "MessageStatus": "delivered"}
    assert signed_post(client, "/sms/status", form, signature="nope").status_code == 403
    assert _get(app, rid).delivery_status == "queued"
    assert signed_post(client, "/sms/status", {"MessageSid": "x"}).status_code == 400
