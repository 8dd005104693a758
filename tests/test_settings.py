"""Settings from the environment: declared once (infra.settings), read strictly."""

from __future__ import annotations

from typing import Any

import pytest

from cases.config import ConfigError
from infra.settings import load_settings
from sms.outbound import Sender


def test_unset_or_empty_means_the_default() -> None:
    s = load_settings({"SMS_REQUEUE_SECONDS": "", "REDIS_URL": "  "})
    assert s.SMS_REQUEUE_SECONDS == 60 and s.REDIS_URL is None
    assert Sender.claim_timeout.total_seconds() == s.SMS_CLAIM_TIMEOUT_SECONDS  # one default
    assert s.OVERDUE_EVERY_MINUTES == 15 and s.OPEN311_ALLOW_PRIVATE_MEDIA is False
    assert s.CONFIG_PATH == "config.toml"


def test_values_are_parsed_to_their_types() -> None:
    s = load_settings(
        {
            "PROXY_HOPS": "2",
            "OPEN311_ALLOW_PRIVATE_MEDIA": "true",
            "TRUSTED_HOSTS": "lb.example.it, 10.0.0.5",
            "LINEADIRETTA_CONFIG": "/etc/ld.toml",
            "WORKER_STUCK_SECONDS": "15",
        }
    )
    assert s.PROXY_HOPS == 2 and s.OPEN311_ALLOW_PRIVATE_MEDIA is True
    assert s.TRUSTED_HOSTS == ("lb.example.it", "10.0.0.5")
    assert s.CONFIG_PATH == "/etc/ld.toml" and s.WORKER_STUCK_SECONDS == 15


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMS_CLAIM_TIMEOUT_SECONDS", "two minutes"),
        ("SMS_CLAIM_TIMEOUT_SECONDS", "5"),
        ("PROXY_HOPS", "-1"),
        ("SWEEP_EVERY_SECONDS", "0"),
        ("CONSOLE_LOGINS_PER_MINUTE", "lots"),
        ("OPEN311_ALLOW_PRIVATE_MEDIA", "perhaps"),
        ("OVERDUE_EVERY_MINUTES", "nan"),
        ("SMTP_PORT", "submission"),
        ("SMTP_PORT", "70000"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_the_app_does_not_start_with_a_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from lineadiretta.app import create_app

    monkeypatch.setenv("SMS_REQUEUE_SECONDS", "sixty")
    with pytest.raises(ConfigError, match="SMS_REQUEUE_SECONDS='sixty'"):
        create_app({"SECRET_KEY": "t", "PUBLIC_BASE_URL": "https://comune.example.it"})


def test_one_provider_client_per_process_and_twiml_from_the_builder(app: Any) -> None:
    """Problem 7: the provider's client is built once (the worker's sender and the console's
    recordings share it), and the SMS webhook's refusals are built, not written by hand."""
    import xml.etree.ElementTree as ET

    from infra.runtime import runtime
    from tests.conftest import signed_post
    from workers.tasks import sender

    with app.app_context():
        assert sender().provider is runtime(app).provider is runtime(app).provider
    form = {"MessageSid": "SM" + "5" * 32, "From": "+393331234567", "To": "+39---->", "Body": "x"}
    r = signed_post(app.test_client(), "/sms/inbound", form)
    assert r.status_code == 404
    assert ET.fromstring(r.get_data()).tag == "Response" and b"--" not in r.get_data()


def test_the_app_reads_one_clock_it_is_given(db_url: str, config: Any, tmp_path: Any) -> None:
    """Problem 9: the clock is injected, not patched: what a request stamps, what a spooled
    contact records and what the workers' senders read all come from the clock the app was
    given."""
    from datetime import UTC, datetime

    from infra.runtime import runtime
    from infra.web import ctx_for, keep_while_away
    from tests.conftest import Clock, make_app
    from workers.tasks import email_sender, sender

    clock = Clock(datetime(2031, 5, 6, 7, 8, tzinfo=UTC))
    app = make_app(db_url, config, tmp_path, clock)
    muni = runtime(app).config.municipality[0]
    with app.test_request_context("/sms/inbound", method="POST"):
        assert abs((ctx_for(muni).now - clock.t).total_seconds()) < 5
        keep_while_away("sms", "SM1", muni.code, {})
        (item,) = runtime(app).spool.pending()
        assert item.received_at.year == 2031
        assert sender().clock is email_sender().clock is runtime(app).clock is clock
    runtime(app).engine.dispose()
