"""A transcription backend for tests: it 'hears' the audio's bytes as UTF-8 text."""

from __future__ import annotations


class BytesAsText:
    name = "bytes-as-text"

    def transcribe(self, audio: bytes, content_type: str, language: str) -> str | None:
        text = audio.decode("utf-8", "replace").strip()
        return f"[{language}] {text}" if text else None
