"""Transcription of call recordings, as a pluggable step.

The provider's own recording transcription is English-only, so the default backend is the
spoken-input transcript that <Gather input="speech" language="it-IT"> already gave us: it
does nothing more. A municipality can plug in another backend (a local speech model, a
contracted service) with TRANSCRIBER="package.module:ClassName"; its text is added to the case
history when the recording becomes available.
"""

from __future__ import annotations

import importlib
from typing import Protocol


class Transcriber(Protocol):
    name: str

    def transcribe(self, audio: bytes, content_type: str, language: str) -> str | None:
        """The text of the audio, or None when this backend has nothing to add."""
        ...


class SpokenInput:
    """The default: the transcript of the caller's spoken input is already the case's text."""

    name = "spoken-input"

    def transcribe(self, audio: bytes, content_type: str, language: str) -> str | None:
        return None


def load_transcriber(spec: str | None) -> Transcriber:
    if not spec or spec == SpokenInput.name:
        return SpokenInput()
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"TRANSCRIBER must be 'module:ClassName', not {spec!r}")
    cls = getattr(importlib.import_module(module_name), attr)
    backend: Transcriber = cls()
    return backend
