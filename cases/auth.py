"""Staff passwords and console logins: Argon2id hashes, lockout, server-side sessions.

A console session is a random id in the browser's cookie and a row here keyed by its SHA-256,
so a logout or an expiry takes effect on every host at once, and a stolen database holds no
usable session.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cases.errors import Invalid
from cases.models import StaffSession, User
from cases.services import hash_token

_hasher = PasswordHasher()  # Argon2id, the library's current RFC 9106 low-memory profile


@cache
def _dummy_hash() -> str:
    """Verifying against this keeps an unknown name as slow as a wrong password (no user
    oracle). Made on first need, not at import: an Argon2 hash costs ~0.1 s, which every web
    process and CLI command paid at start-up."""
    return _hasher.hash("not a password of anyone's")


MIN_PASSWORD = 10
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)


@dataclass(frozen=True)
class SessionPolicy:
    """How long a login lasts: an absolute limit, and an idle limit between requests."""

    lifetime: timedelta = timedelta(hours=10)
    idle: timedelta = timedelta(minutes=60)


def set_password(user: User, password: str) -> None:
    """Store a new password's Argon2id hash; refuses passwords too short to resist guessing."""
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"the password must be at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise Invalid("the password is longer than 1024 characters")
    user.password_hash = _hasher.hash(password)
    user.failed_logins = 0
    user.locked_until = None


def check_login(s: Session, municipality: str, name: str, password: str, now: datetime) -> User:
    """The active user with this name and password; Invalid (one message for every cause)."""
    wrong = Invalid("wrong name or password, or the account is locked")
    user = s.scalar(
        select(User)
        .where(User.municipality == municipality, User.name == name.strip())
        .with_for_update()
    )
    if user is None or not user.active or not user.password_hash:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_dummy_hash(), password)
        raise wrong
    if not verify_password(user, password, now):
        raise wrong
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    return user


def verify_password(user: User, password: str, now: datetime) -> bool:
    """The one check of a user's password, for a login and for a password change alike: one
    Argon2 verification whatever the outcome (a locked account costs the same as a wrong
    password, so timing tells nothing), a wrong one counted, and MAX_FAILURES of them lock the
    account for LOCKOUT. False while locked, even for the right password."""
    right = False
    with contextlib.suppress(VerificationError, InvalidHashError):
        right = _hasher.verify(user.password_hash or _dummy_hash(), password)
    if user.locked_until is not None and user.locked_until > now:
        return False
    if not right:
        user.failed_logins = (user.failed_logins or 0) + 1
        if user.failed_logins >= MAX_FAILURES:
            user.locked_until = now + LOCKOUT
            user.failed_logins = 0
    return bool(right)


def start_session(
    s: Session, user: User, now: datetime, policy: SessionPolicy, language: str = "it"
) -> str:
    """A new login for `user`; returns the id for the cookie (only its hash is stored)."""
    sid = secrets.token_urlsafe(32)
    s.add(
        StaffSession(
            id_hash=hash_token(sid),
            user_id=user.id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.lifetime,
            language=language,
        )
    )
    return sid


def session_user(
    s: Session, sid: str, now: datetime, policy: SessionPolicy
) -> tuple[StaffSession, User] | None:
    """The live session and its active user, touching it; None when expired, idle or revoked."""
    if not sid:
        return None
    row = s.get(StaffSession, hash_token(sid))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    if row.last_seen_at + policy.idle <= now:
        return None
    user = s.get(User, row.user_id)
    if user is None or not user.active:
        return None
    # Touch at most once a minute: a page with many requests writes the row once.
    if now - row.last_seen_at > timedelta(minutes=1):
        row.last_seen_at = now
    return row, user


def end_session(s: Session, sid: str, now: datetime) -> None:
    """Revoke a login (logout); harmless when it is already gone."""
    if sid:
        s.execute(
            update(StaffSession)
            .where(StaffSession.id_hash == hash_token(sid), StaffSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )


def end_all_sessions(
    s: Session, user: User, now: datetime, keep: StaffSession | None = None
) -> None:
    """Revoke every login of a user (password change, account disabled), but `keep`."""
    q = update(StaffSession).where(
        StaffSession.user_id == user.id, StaffSession.revoked_at.is_(None)
    )
    if keep is not None:
        q = q.where(StaffSession.id_hash != keep.id_hash)
    s.execute(q.values(revoked_at=now))


def change_password(
    s: Session, user: User, current: str, new: str, now: datetime, keep: StaffSession | None
) -> None:
    """A user's own password change: the current one must be right (a wrong one counts
    towards the lockout: the caller commits it even when this refuses); every other login
    ends."""
    if not user.password_hash:
        raise Invalid("this account has no password yet: ask an administrator")
    if not verify_password(user, current, now):  # counted, and locked, as a login is
        raise Invalid("the current password is wrong, or the account is locked")
    if new == current:
        raise Invalid("the new password must differ from the current one")
    set_password(user, new)
    end_all_sessions(s, user, now, keep)
