"""The one source of 'now', so tests can cross midnight and years deterministically."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
