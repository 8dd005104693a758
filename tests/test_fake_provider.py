"""The fake SMS provider (tests/fakes/provider.py), driven by the official twilio client.

Pointing the client at the fake (twilio 9.13, checked in twilio/base/domain.py and
client_base.py): every Messages call is built as ``client.api.base_url`` + ``/2010-04-01/...``
(``Domain.absolute_url``), and list paging follows ``next_page_uri`` through the same domain,
so ``client.api.base_url = fake.base_url`` redirects creates, fetches and lists. The only thing
that rewrites the host afterwards is ``ClientBase.get_hostname`` when an edge or region is set
(constructor or ``TWILIO_EDGE``/``TWILIO_REGION`` in the environment): it splices them into
the host by dots, turning ``127.0.0.1`` into ``127.ie1.0.1``. The tests delete those variables.

Reading Retry-After: create/fetch errors raise ``TwilioRestException`` (``.status``, ``.code``,
``.msg``, ``.uri``, ``.method``, ``.details`` from the body's ``details``) or, for RFC 9457
bodies, ``TwilioServiceException`` (``.status``, ``.code``, ``.title``, ``.detail``); both are
``TwilioException``. A failing ``list()``/``page()`` raises a bare ``TwilioException("Unable to
fetch page", response)`` with neither ``.status`` nor ``.code``. None carries the response
headers, so a 429's ``Retry-After`` is only reachable through the http client:
``TwilioHttpClient`` keeps the last response in ``_test_only_last_response`` (one attribute
shared by all threads), so the product subclasses it (``infra.provider.RecordingHttpClient``) to
keep the last response per thread and reads ``last.headers["Retry-After"]`` after catching
the exception.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from infra.provider import RecordingHttpClient
from tests.fakes.provider import FakeProvider, FakeProviderProcess, segments

SID = "AC" + "0" * 32
TOKEN = "tok"
CITIZEN = "+393331234567"
OTHER = "+393339876543"
COMUNE = "+390612345678"


@pytest.fixture(autouse=True)
def _no_leftover_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    monkeypatch.delenv("TWILIO_REGION", raising=False)
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2
    while True:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not left, f"threads left running: {[t.name for t in left]}"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(SID, TOKEN, status_interval=0.01, callback_retry_delay=0.01) as f:
        yield f


def make_client(base_url: str, token: str = TOKEN, timeout: float | None = 5.0) -> Client:
    client = Client(SID, token, http_client=RecordingHttpClient(timeout))
    client.api.base_url = base_url
    return client


@pytest.fixture
def client(fake: FakeProvider) -> Client:
    return make_client(fake.base_url)


def send(client: Client, to: str = CITIZEN, body: str = "Segnalazione ricevuta", **kw: Any) -> Any:
    return client.messages.create(to=to, from_=COMUNE, body=body, **kw)


def refusal(client: Client, **kw: Any) -> TwilioRestException:
    with pytest.raises(TwilioException) as info:
        send(client, **kw)
    assert isinstance(info.value, TwilioRestException)  # legacy JSON body, not RFC 9457
    return info.value


class Receiver:
    """A status-callback endpoint that checks X-Twilio-Signature with RequestValidator."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                params = dict(parse_qsl(raw.decode()))
                url = f"{receiver.base_url}{self.path}"
                signature = self.headers.get("X-Twilio-Signature", "")
                valid = RequestValidator(TOKEN).validate(url, params, signature)
                with receiver.lock:
                    receiver.calls.append({"path": self.path, "params": params, "valid": valid})
                self.send_response(500 if self.path.startswith("/fail") else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="receiver"
        )
        self.thread.start()

    def statuses(self, sid: str) -> list[str]:
        with self.lock:
            return [
                c["params"]["MessageStatus"] for c in self.calls if c["params"]["MessageSid"] == sid
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# ------------------------------------------------------------------------------------ sending


def test_send_returns_sid_and_queued(fake: FakeProvider, client: Client) -> None:
    msg = send(client, body="La sua segnalazione è protocollata")
    assert re.fullmatch(r"SM[0-9a-f]{32}", msg.sid)
    assert (msg.status, msg.to, msg.from_, msg.direction) == (
        "queued",
        CITIZEN,
        COMUNE,
        "outbound-api",
    )
    assert (msg.account_sid, msg.api_version, msg.num_segments) == (SID, "2010-04-01", "1")
    assert msg.price is None and msg.error_code is None and msg.date_sent is None
    assert msg.date_created is not None and msg.date_created.tzinfo is not None
    assert msg.uri == f"/2010-04-01/Accounts/{SID}/Messages/{msg.sid}.json"
    assert msg.subresource_uris == {
        "media": f"/2010-04-01/Accounts/{SID}/Messages/{msg.sid}/Media.json"
    }
    [seen] = fake.sent_to(CITIZEN)
    assert (seen["sid"], seen["body"], seen["from"]) == (msg.sid, msg.body, COMUNE)
    assert isinstance(seen["accepted_at"], float) and seen["status_callback"] is None
    assert [(r["status"], r["sid"]) for r in fake.requests] == [(201, msg.sid)]


def test_segment_count_gsm7_and_ucs2(client: Client) -> None:
    assert segments("à" * 160) == 1 and segments("è" * 161) == 2  # accented letters are GSM-7
    assert segments("[" * 80) == 1 and segments("[" * 81) == 2  # extension chars cost 2
    assert segments("L’ufficio" + "x" * 61) == 1 and segments("L’ufficio" + "x" * 62) == 2
    assert segments("x" * 306) == 2 and segments("x" * 307) == 3
    assert send(client, body="x" * 200).num_segments == "2"
    assert send(client, body="“Grazie”" + "x" * 70).num_segments == "2"


def test_messaging_service_send_is_accepted_then_queued(
    fake: FakeProvider, client: Client, receiver: Receiver
) -> None:
    msg = client.messages.create(
        to=CITIZEN,
        messaging_service_sid="MG" + "1" * 32,
        body="Ciao",
        status_callback=f"{receiver.base_url}/status",
    )
    assert (msg.status, msg.from_, msg.messaging_service_sid) == ("accepted", None, "MG" + "1" * 32)
    fake.wait_for_callbacks(3)
    assert receiver.statuses(msg.sid) == ["queued", "sent", "delivered"]
    assert client.messages(msg.sid).fetch().from_ == fake.messaging_service_number


@pytest.mark.parametrize(
    ("kind", "code", "message"),
    [
        ("opted_out", 21610, "Attempt to send to unsubscribed recipient"),
        ("invalid", 21211, f"Invalid 'To' Phone Number: {CITIZEN}"),
        ("not_mobile", 21614, "'To' number is not a valid mobile number"),
    ],
)
def test_permanent_refusals(
    fake: FakeProvider, client: Client, kind: str, code: int, message: str
) -> None:
    fake.behave(CITIZEN, kind)
    exc = refusal(client)
    assert (exc.status, exc.code, exc.method) == (400, code, "POST")
    assert exc.msg == f"Unable to create record: {message}"
    assert send(client, to=OTHER).status == "queued"  # only that number
    assert [r["code"] for r in fake.requests] == [code, None]
    assert fake.sent_to(CITIZEN) == [] and len(fake.messages) == 1
    fake.behave(CITIZEN, "normal")
    assert send(client).status == "queued"


def test_raw_error_body_is_twilios(fake: FakeProvider) -> None:
    fake.behave(CITIZEN, "opted_out")
    r = requests.post(
        f"{fake.base_url}/2010-04-01/Accounts/{SID}/Messages.json",
        data={"To": CITIZEN, "From": COMUNE, "Body": "x"},
        auth=(SID, TOKEN),
        timeout=5,
    )
    assert r.status_code == 400
    assert r.json() == {
        "code": 21610,
        "message": "Attempt to send to unsubscribed recipient",
        "more_info": "https://www.twilio.com/docs/errors/21610",
        "status": 400,
    }


def test_validation_errors(client: Client) -> None:
    assert refusal(client, to="").code == 21604
    assert refusal(client, body="").code == 21602
    assert refusal(client, to="3331234567").code == 21211  # not E.164
    assert refusal(client, body="x" * 1601).code == 21617
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=CITIZEN, body="no sender")
    assert info.value.code == 21603
    ok = client.messages.create(to=CITIZEN, from_=COMUNE, media_url=["https://example.org/a.jpg"])
    assert ok.num_media == "1"


def test_rate_limited_with_retry_after(fake: FakeProvider, client: Client) -> None:
    fake.behave(CITIZEN, "rate_limited", times=2, retry_after=7)
    for _ in range(2):
        exc = refusal(client)
        assert (exc.status, exc.code) == (429, 20429)
        assert not hasattr(exc, "headers")  # the exception never carries the headers...
        http_client = client.http_client
        assert isinstance(http_client, RecordingHttpClient)
        assert http_client.last is not None and http_client.last.headers["Retry-After"] == "7"
        # ...the stock client only has this single, shared, "test only" slot:
        assert http_client._test_only_last_response.headers["Retry-After"] == "7"
    assert send(client).status == "queued"
    assert [r["status"] for r in fake.requests] == [429, 429, 201]


def test_server_error_then_success(fake: FakeProvider, client: Client) -> None:
    fake.behave(CITIZEN, "server_error")
    exc = refusal(client)
    assert (exc.status, exc.code) == (500, 20500)
    assert send(client).status == "queued"
    fake.behave(CITIZEN, "server_error", times=1, status=503)
    assert refusal(client).status == 503
    fake.fail_next(2)  # any destination
    assert refusal(client, to=OTHER).status == 500
    assert refusal(client).status == 500
    fake.fail_next(1, "rate_limited", retry_after=3)
    assert refusal(client, to=OTHER).status == 429
    assert client.http_client.last.headers["Retry-After"] == "3"
    assert send(client, to=OTHER).status == "queued"
    assert len(fake.messages) == 2


def test_wrong_credentials_get_401(fake: FakeProvider) -> None:
    exc = refusal(make_client(fake.base_url, token="wrong"))
    assert (exc.status, exc.code) == (401, 20003)
    other_account = Client("AC" + "1" * 32, TOKEN)
    other_account.api.base_url = fake.base_url
    with pytest.raises(TwilioException) as listing:
        other_account.messages.list(limit=1)
    # list/page errors are a bare TwilioException("Unable to fetch page", response): no .status
    # and no .code, the twilio Response is the second argument
    assert type(listing.value) is TwilioException
    assert listing.value.args[1].status_code == 401
    assert fake.messages == [] and [r["status"] for r in fake.requests] == [401]


def test_slow_answer_after_accepting(fake: FakeProvider) -> None:
    fake.behave(CITIZEN, "slow", seconds=0.5)
    impatient = make_client(fake.base_url, timeout=0.1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        send(impatient)
    assert len(fake.sent_to(CITIZEN)) == 1  # accepted although the client gave up
    fake.delay = 0.05
    start = time.monotonic()
    send(make_client(fake.base_url), to=OTHER)
    assert time.monotonic() - start >= 0.05


# ------------------------------------------------------------------------------ list and fetch


def test_list_filtered_by_to_newest_first(fake: FakeProvider, client: Client) -> None:
    to_citizen = [send(client, body=f"n. {i}").sid for i in range(3)]
    other = [send(client, to=OTHER, body=f"altro {i}").sid for i in range(2)]
    assert [m.sid for m in client.messages.list(to=CITIZEN)] == to_citizen[::-1]
    assert [m.sid for m in client.messages.list(to=OTHER, from_=COMUNE)] == other[::-1]
    assert client.messages.list(from_="+390000000000") == []
    # paging follows next_page_uri through the same base URL
    assert [m.sid for m in client.messages.list(to=CITIZEN, page_size=2)] == to_citizen[::-1]
    assert len(client.messages.list(limit=4)) == 4
    fetched = client.messages(to_citizen[0]).fetch()
    assert (fetched.body, fetched.to) == ("n. 0", CITIZEN)
    with pytest.raises(TwilioRestException) as info:
        client.messages("SM" + "f" * 32).fetch()
    assert (info.value.status, info.value.code) == (404, 20404)


# ------------------------------------------------------------------------------------- media


def test_media_needs_auth_and_redirects_to_the_bytes(fake: FakeProvider) -> None:
    content = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    url = fake.add_media(content, "image/png")
    assert re.fullmatch(
        rf"{fake.base_url}/2010-04-01/Accounts/{SID}/Messages/MM[0-9a-f]{{32}}/Media/ME[0-9a-f]{{32}}",
        url,
    )
    with requests.Session() as s:
        assert s.get(url, timeout=5).status_code == 401
        s.auth = (SID, TOKEN)
        r = s.get(url, timeout=5)
        assert r.status_code == 200 and r.content == content
        assert [h.status_code for h in r.history] == [307]
        assert r.headers["Content-Type"] == "image/png"
        assert r.headers["Content-Length"] == str(len(content))
        meta = s.get(url + ".json", timeout=5).json()
        assert (meta["content_type"], meta["sid"]) == ("image/png", url.rsplit("/", 1)[1])
        assert s.get(url.replace("/ME", "/MEx"), timeout=5).status_code == 404


# --------------------------------------------------------------------------------- callbacks


def test_callbacks_signed_in_order(fake: FakeProvider, client: Client, receiver: Receiver) -> None:
    msg = send(client, status_callback=f"{receiver.base_url}/sms/status?municipality=x")
    fake.wait_for_callbacks(2)
    assert fake.wait_idle()
    assert receiver.statuses(msg.sid) == ["sent", "delivered"]  # never "queued"
    assert all(c["valid"] for c in receiver.calls)
    sent, delivered = (c["params"] for c in receiver.calls)
    assert sent == {
        "ApiVersion": "2010-04-01",
        "AccountSid": SID,
        "MessageSid": msg.sid,
        "SmsSid": msg.sid,
        "MessageStatus": "sent",
        "SmsStatus": "sent",
        "To": CITIZEN,
        "From": COMUNE,
    }
    assert "ErrorCode" not in delivered and "RawDlrDoneDate" in delivered  # extra field
    assert receiver.calls[0]["path"] == "/sms/status?municipality=x"
    final = client.messages(msg.sid).fetch()
    assert (final.status, final.date_sent is not None) == ("delivered", True)


def test_callbacks_out_of_order(fake: FakeProvider, client: Client, receiver: Receiver) -> None:
    fake.callbacks_out_of_order = True
    msg = send(client, status_callback=f"{receiver.base_url}/status")
    fake.wait_for_callbacks(2)
    assert receiver.statuses(msg.sid) == ["delivered", "sent"]
    assert all(c["valid"] for c in receiver.calls)


def test_undelivered_ends_with_error_code(
    fake: FakeProvider, client: Client, receiver: Receiver
) -> None:
    fake.behave(CITIZEN, "undelivered")
    msg = send(client, status_callback=f"{receiver.base_url}/status")
    assert msg.status == "queued"
    fake.wait_for_callbacks(2)
    assert receiver.statuses(msg.sid) == ["sent", "undelivered"]
    assert receiver.calls[-1]["params"]["ErrorCode"] == "30003"
    assert "ErrorCode" not in receiver.calls[0]["params"]
    fetched = client.messages(msg.sid).fetch()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)


def test_callbacks_disabled_and_duplicates(
    fake: FakeProvider, client: Client, receiver: Receiver
) -> None:
    fake.callbacks = False
    quiet = send(client, status_callback=f"{receiver.base_url}/status")
    assert fake.wait_idle()
    assert receiver.calls == [] and fake.message(quiet.sid)["status"] == "delivered"  # type: ignore[index]
    fake.callbacks = True
    fake.duplicate_callbacks = True
    loud = send(client, status_callback=f"{receiver.base_url}/status")
    fake.wait_for_callbacks(4)
    assert receiver.statuses(loud.sid) == ["sent", "sent", "delivered", "delivered"]


def test_failed_callback_retried_once_then_dropped(
    fake: FakeProvider, client: Client, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    msg = send(client, status_callback=f"{receiver.base_url}/fail")
    log = fake.wait_for_callbacks(2)
    assert [(e["status"], e["ok"], e["attempts"], e["http_status"]) for e in log] == [
        ("sent", False, 2, 500),
        ("delivered", False, 2, 500),
    ]
    assert receiver.statuses(msg.sid) == ["sent", "sent", "delivered", "delivered"]
    assert "dropped after retry" in caplog.text
    unreachable = send(client, to=OTHER, status_callback="http://127.0.0.1:9/status")
    log = fake.wait_for_callbacks(4)
    assert [e["attempts"] for e in log if e["sid"] == unreachable.sid] == [2, 2]
    assert all(e["error"].startswith("ConnectionError") for e in log if e["sid"] == unreachable.sid)


def test_reset_forgets_everything(fake: FakeProvider, client: Client) -> None:
    fake.behave(CITIZEN, "opted_out")
    fake.delay = 0.2
    fake.callbacks_out_of_order = True
    refusal(client)
    send(client, to=OTHER)
    fake.reset()
    assert (fake.messages, fake.requests, fake.callback_log) == ([], [], [])
    assert (fake.delay, fake.callbacks_out_of_order) == (0.0, False)
    assert send(client).status == "queued"


def test_unknown_behaviour_is_rejected(fake: FakeProvider) -> None:
    with pytest.raises(ValueError):
        fake.behave(CITIZEN, "sulky")
    with pytest.raises(TypeError):
        fake.behave(CITIZEN, "opted_out", times=2)


# ---------------------------------------------------------------------------- separate process


def test_separate_process(receiver: Receiver) -> None:
    with FakeProviderProcess(SID, TOKEN) as proc:
        client = make_client(proc.base_url)
        proc.configure(status_interval=0.01)
        proc.behave(CITIZEN, "opted_out")
        assert refusal(client).code == 21610
        msg = send(client, to=OTHER, status_callback=f"{receiver.base_url}/status")
        assert [m["sid"] for m in proc.messages] == [msg.sid]
        assert [r["status"] for r in proc.requests] == [400, 201]
        deadline = time.monotonic() + 5
        while len(receiver.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.statuses(msg.sid) == ["sent", "delivered"]
        assert all(c["valid"] for c in receiver.calls)  # signed with the callback token
        url = proc.add_media(b"GIF89a", "image/gif")
        assert requests.get(url, auth=(SID, TOKEN), timeout=5).content == b"GIF89a"
        proc.reset()
        assert proc.messages == []
        process = proc._proc
    assert process is not None and process.returncode == 0  # SIGTERM ends it cleanly
