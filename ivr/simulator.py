"""A switchboard in the terminal: plays our TwiML as the provider would, signing every request.

Used by `lineadiretta simulate call` (interactive, or from a script of keys and phrases) and
by the tests, which drive every path of a call through it.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

Transport = Callable[[str, dict[str, str]], tuple[int, str]]
HANGUP = "<hangup>"


@dataclass
class CallLog:
    said: list[str] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str], int]] = field(default_factory=list)
    ended_by: str = ""
    sid: str = ""

    @property
    def text(self) -> str:
        return "\n".join(self.said)


class Switchboard:
    def __init__(
        self,
        post: Transport,
        *,
        from_: str,
        to: str,
        inputs: Iterable[str] | None = None,
        ask: Callable[[str], str] | None = None,
        out: Callable[[str], None] = lambda _line: None,
        dial_result: str = "no-answer",
        queue_result: str = "leave",
        call_sid: str | None = None,
        recording_url: Callable[[str], str] | None = None,
    ) -> None:
        self.post = post
        self.base = {
            "CallSid": call_sid or "CA" + secrets.token_hex(16),
            "AccountSid": "AC" + "0" * 32,
            "From": from_,
            "To": to,
            "CallStatus": "in-progress",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        self.inputs: Iterator[str] | None = iter(inputs) if inputs is not None else None
        self.ask = ask
        self.out = out
        self.dial_result = dial_result
        self.queue_result = queue_result
        self.log = CallLog(sid=self.base["CallSid"])
        self.recordings: list[str] = []
        self.recording_url = recording_url or (
            lambda rid: (
                f"https://api.twilio.com/2010-04-01/Accounts/{self.base['AccountSid']}/Recordings/{rid}"
            )
        )
        self.spoken: list[str] = []

    # -- plumbing

    def _request(self, path: str, extra: dict[str, str] | None = None) -> str | None:
        form = {**self.base, **(extra or {})}
        status, body = self.post(path, form)
        self.log.requests.append((path, form, status))
        if status != 200:
            self._say(f"[HTTP {status} from {path}]")
            return None
        return body

    def _say(self, text: str) -> None:
        self.log.said.append(text)
        self.out(text)

    def _next_input(self, prompt: str) -> str:
        if self.inputs is not None:
            return next(self.inputs, HANGUP)
        if self.ask is not None:
            return self.ask(prompt)
        return HANGUP

    # -- the call

    def run(self, max_documents: int = 100) -> CallLog:
        body = self._request("/ivr/incoming", {"CallStatus": "ringing"})
        documents = 0
        while body is not None and documents < max_documents:
            documents += 1
            body = self._play(body)
        self._finish()
        return self.log

    def _play(self, body: str) -> str | None:
        """Run one TwiML document; returns the next document, or None when the call ends."""
        root = ET.fromstring(body)
        for verb in root:
            tag = verb.tag
            if tag == "Say":
                self._say(verb.text or "")
            elif tag == "Play":
                self._say("[music]")
            elif tag == "Start":
                for noun in verb:
                    if noun.tag == "Recording" and noun.get("recordingStatusCallback"):
                        self.recordings.append(noun.get("recordingStatusCallback", ""))
            elif tag == "Gather":
                for inner in verb:
                    if inner.tag == "Say":
                        self._say(inner.text or "")
                answer = self._next_input("> ")
                if answer == HANGUP:
                    self.log.ended_by = "caller"
                    return None
                extra: dict[str, str] = {}
                kinds = (verb.get("input") or "dtmf").split()
                finish = verb.get("finishOnKey", "#")
                if answer and all(c in "0123456789*#" for c in answer) and "dtmf" in kinds:
                    extra["Digits"] = answer[:-1] if finish and answer.endswith(finish) else answer
                elif answer and "speech" in kinds:
                    extra["SpeechResult"], extra["Confidence"] = answer, "0.92"
                    self.spoken.append(answer)
                if not extra and verb.get("actionOnEmptyResult") != "true":
                    continue  # silence: the provider moves on to the next verb
                return self._request(verb.get("action", "/ivr/incoming"), extra)
            elif tag == "Redirect":
                return self._request(verb.text or "/ivr/incoming")
            elif tag == "Dial":
                self._say(f"[dialling {', '.join(n.text or '' for n in verb)}: {self.dial_result}]")
                if verb.get("action"):
                    return self._request(
                        verb.get("action", ""), {"DialCallStatus": self.dial_result}
                    )
                if self.dial_result == "completed":
                    self.log.ended_by = "dial"
                    return None
            elif tag == "Enqueue":
                self._say(f"[queued in {verb.text}]")
                result = self.queue_result
                wait = verb.get("waitUrl")
                for seconds in (0, 30, 60, 90, 600):
                    if not wait:
                        break
                    hold = self._request(wait, {"QueueTime": str(seconds), "QueueSid": "QU1"})
                    if hold is None:
                        break
                    hold_root = ET.fromstring(hold)
                    for v in hold_root:
                        if v.tag == "Say":
                            self._say(v.text or "")
                    if any(v.tag == "Leave" for v in hold_root):
                        result = "leave"
                        break
                return self._request(verb.get("action", ""), {"QueueResult": result})
            elif tag == "Record":
                answer = self._next_input("(recording) > ")
                if answer == HANGUP:
                    return None
                self.spoken.append(answer)
                return self._request(
                    verb.get("action", ""),
                    {
                        "RecordingUrl": f"https://api.twilio.com/Recordings/RE{secrets.token_hex(16)}",
                        "RecordingSid": "RE" + secrets.token_hex(16),
                        "RecordingDuration": "7",
                    },
                )
            elif tag == "Hangup":
                self.log.ended_by = "system"
                return None
        self.log.ended_by = self.log.ended_by or "end of document"
        return None

    def _finish(self) -> None:
        """After the call: its status callback, then the recordings once processed."""
        self._request("/ivr/status", {"CallStatus": "completed", "CallDuration": "42"})
        for url in dict.fromkeys(self.recordings):
            rid = "RE" + secrets.token_hex(16)
            self._request(
                url,
                {
                    "RecordingSid": rid,
                    "RecordingStatus": "completed",
                    "RecordingUrl": self.recording_url(rid),
                    "RecordingDuration": str(
                        max(3, 2 * sum(len(s.split()) for s in self.spoken) // 3)
                    ),
                    "RecordingChannels": "1",
                    "RecordingSource": "StartCallRecordingTwiML",
                },
            )
