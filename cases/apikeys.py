"""Open311 API keys for outside apps: issued once in plain text, kept only as a SHA-256."""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cases.errors import Invalid
from cases.models import ApiKey
from cases.notify import Ctx
from cases.services import hash_token

_NAME = re.compile(r"^[\w][\w .@()/-]{0,119}$")
# A key is 43 url-safe characters; anything much longer is not one of ours (cheap reject).
MAX_KEY_LENGTH = 128


def create_api_key(s: Session, ctx: Ctx, name: str) -> tuple[ApiKey, str]:
    """Issue a key bound to the municipality; returns the row and the key (shown only once)."""
    name = (name or "").strip()
    if not _NAME.match(name):
        raise Invalid("an API key needs a name (the app's), at most 120 letters, digits, ' .@()/-'")
    taken = s.scalar(
        select(ApiKey.id).where(
            ApiKey.municipality == ctx.muni.code, ApiKey.name == name, ApiKey.active.is_(True)
        )
    )
    if taken is not None:
        raise Invalid(f"an active API key named {name!r} already exists in {ctx.muni.code}")
    plaintext = secrets.token_urlsafe(32)
    row = ApiKey(
        municipality=ctx.muni.code,
        name=name,
        key_hash=hash_token(plaintext),
        active=True,
        created_at=ctx.now,
    )
    s.add(row)
    s.flush()
    return row, plaintext


def api_key_by_plaintext(s: Session, plaintext: str, now: datetime) -> ApiKey | None:
    """The active key with this value, marked as used now; None for a missing or wrong key."""
    if not plaintext or len(plaintext) > MAX_KEY_LENGTH:
        return None
    row = api_key_by_hash(s, hash_token(plaintext))
    if row is not None:
        row.last_used_at = now  # written with the caller's transaction (a read-only one drops it)
    return row


def api_key_by_hash(s: Session, key_hash: str) -> ApiKey | None:
    """The active key with this hash (a request kept while the register was away has only
    the hash of its key); None otherwise."""
    row = s.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
    return row if row is not None and row.active else None
