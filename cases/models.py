"""The case register's tables (SQLAlchemy 2 style). Rules that matter are also DB constraints."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cases.db import Base, UTCDateTime


class Status(enum.StrEnum):
    RECEIVED = "received"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"
    DUPLICATE = "duplicate"
    NOT_COMPETENT = "not_competent"
    ANNULLED = "annulled"


OPEN_STATUSES = (Status.RECEIVED, Status.ASSIGNED, Status.IN_PROGRESS, Status.RESOLVED)
ROUTED_OPEN = (Status.ASSIGNED, Status.IN_PROGRESS, Status.RESOLVED)  # open, with an office


def status_in(statuses: Iterable[Status]) -> ColumnElement[bool]:
    """``cases.status IN ('assigned', ...)`` with the values written into the SQL, not bound:
    the work lists' partial indexes (migration 0008) are chosen by matching their predicate,
    which PostgreSQL can prove only from constants, also in a prepared statement's generic
    plan. The values are the enum's own, never input."""
    return Case.status.in_([literal_column(f"'{Status(x).value}'") for x in statuses])


class Channel(enum.StrEnum):
    VOICE = "voice"
    SMS = "sms"
    WEB = "web"
    COUNTER = "counter"
    API = "api"
    EMAIL = "email"


class Role(enum.StrEnum):
    URP = "urp"
    REFERENT = "referent"
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


def _in(values: type[enum.StrEnum]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


class ProtocolCounter(Base):
    """One row per municipality and year; incremented in the registering transaction."""

    __tablename__ = "protocol_counters"
    municipality: Mapped[str] = mapped_column(String(64), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(f"role IN ({_in(Role)})", name="role"),
        CheckConstraint(
            "role NOT IN ('referent', 'operator') OR office IS NOT NULL", name="office_staff"
        ),
        UniqueConstraint("municipality", "name"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    municipality: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(120))
    full_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))
    office: Mapped[str | None] = mapped_column(String(32))
    phone: Mapped[str | None] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def display_name(self) -> str:
        return self.full_name or self.name


class Case(Base):
    """A protocolled case. Registered fields are immutable: a DB trigger refuses their update."""

    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("municipality", "year", "number"),
        CheckConstraint(f"status IN ({_in(Status)})", name="status"),
        CheckConstraint(f"channel IN ({_in(Channel)})", name="channel"),
        CheckConstraint("number >= 1", name="number_positive"),
        CheckConstraint(
            "(status = 'annulled') = (annulled_at IS NOT NULL)", name="annulment_recorded"
        ),
        CheckConstraint("status <> 'duplicate' OR master_id IS NOT NULL", name="duplicate_master"),
        CheckConstraint(
            "status IN ('received', 'annulled', 'duplicate', 'not_competent') OR office IS NOT NULL",
            name="office_after_assign",
        ),
        Index("ix_cases_muni_status", "municipality", "status"),
        Index("ix_cases_muni_phone", "municipality", "phone"),
        Index(
            "ix_cases_muni_registered_cover",
            "municipality",
            "registered_at",
            postgresql_include=["status", "channel", "category", "office"],
        ),  # migration 0009; the work lists' partial indexes are in migrations 0008-0009
        Index("ux_cases_intake_key", "municipality", "intake_key", unique=True),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    # --- registered fields (DPR 445/2000 art. 53): immutable once written ---
    municipality: Mapped[str] = mapped_column(String(64))
    year: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    channel: Mapped[str] = mapped_column(String(16))
    phone: Mapped[str | None] = mapped_column(String(20))
    original_text: Mapped[str] = mapped_column(Text, default="")
    registered_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # when the contact reached us, if before its registration (kept in a host's spool while
    # the register was away); NULL: received when registered
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # what registers this contact only once (a spooled MessageSid, CallSid, idempotency key)
    intake_key: Mapped[str | None] = mapped_column(String(120))
    # --- working fields ---
    language: Mapped[str] = mapped_column(String(2), default="it")
    category: Mapped[str | None] = mapped_column(String(64))
    suggested_category: Mapped[str | None] = mapped_column(String(64))
    suggestion_confidence: Mapped[float | None] = mapped_column()
    office: Mapped[str | None] = mapped_column(String(32))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(20), default=Status.RECEIVED.value)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    master_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    overdue_flagged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    track_token: Mapped[str] = mapped_column(String(43), unique=True)
    address: Mapped[str | None] = mapped_column(String(300))
    lat: Mapped[float | None] = mapped_column()
    long: Mapped[float | None] = mapped_column()
    # --- annulment (art. 54): the registration stays readable ---
    annulled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    annulled_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    annul_reason: Mapped[str | None] = mapped_column(Text)

    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id], lazy="joined")
    events: Mapped[list[CaseEvent]] = relationship(
        back_populates="case", order_by="CaseEvent.id", lazy="selectin"
    )
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="case", order_by="Attachment.id", lazy="selectin"
    )
    master: Mapped[Case | None] = relationship(remote_side=[id], foreign_keys=[master_id])

    @property
    def protocol(self) -> str:
        return format_protocol(self.year, self.number)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def is_overdue(self, now: datetime) -> bool:
        """Still open past its due date."""
        return overdue(self.status, self.due_at, now)


def overdue(status: str, due_at: datetime, now: datetime) -> bool:
    """A case in `status`, due at `due_at`, is overdue at `now`: still open past its due date
    (for a case, Case.is_overdue; for a row of columns read without the case, this)."""
    return status in OPEN_STATUSES and due_at < now


def format_protocol(year: int, number: int) -> str:
    return f"{year}/{number:07d}"


class CaseEvent(Base):
    """Append-only history: a DB trigger refuses UPDATE and DELETE."""

    __tablename__ = "case_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_label: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(Text, default="")
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    case: Mapped[Case] = relationship(back_populates="events")


class Attachment(Base):
    """A photo, recording or document attached to a case; immutable once registered."""

    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # photo, recording, document
    source_url: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(String(100))
    size: Mapped[int | None] = mapped_column(Integer)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    storage_path: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending, stored, rejected
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    case: Mapped[Case] = relationship(back_populates="attachments")


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"  # waiting to be sent (or for quiet hours to end)
    CLAIMED = "claimed"  # a worker has it; it is sending
    SENT = "sent"  # the provider accepted it (has a provider id)
    RETRY = "retry"  # errored, will retry
    FAILED = "failed"  # final failure, shown to staff
    SUPPRESSED = "suppressed"  # not sent: opted out, no phone, not a mobile


class Queued:
    """The columns by which texts and e-mails move through the outbox (`cases.outbox`)."""

    municipality: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claim_token: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OutboxMessage(Queued, Base):
    """A text to a citizen, written in the same transaction as the step that causes it."""

    __tablename__ = "outbox"
    PRINTS_NUMBER: ClassVar[tuple[str, ...]] = ("body",)  # rendered from a template
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(OutboxStatus)})", name="status"),
        Index("ix_outbox_status_due", "status", "not_before"),
        Index("ux_outbox_dedupe_key", "dedupe_key", unique=True),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20))
    template: Mapped[str] = mapped_column(String(40))
    language: Mapped[str] = mapped_column(String(2))
    provider_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    delivery_status: Mapped[str | None] = mapped_column(String(20))
    error_code: Mapped[str | None] = mapped_column(String(16))
    delivery_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # set for a text that must be written once whoever tries again (a spooled contact's number)
    dedupe_key: Mapped[str | None] = mapped_column(String(120))


class EmailMessage(Queued, Base):
    """An e-mail to staff (referents), written in the same transaction as the step that causes
    it and sent after commit by a worker; the row is the record, also in sandbox mode."""

    __tablename__ = "email_outbox"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(OutboxStatus)})", name="status"),
        Index("ix_email_outbox_status_due", "status", "not_before"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(String(300))
    message_id: Mapped[str] = mapped_column(String(200), unique=True)  # same on every attempt
    transport: Mapped[str | None] = mapped_column(String(16))  # smtp, sandbox


class StaffNotification(Base):
    """Something a staff member must see: a routed call, a case back from an office, overdue."""

    __tablename__ = "staff_notifications"
    __table_args__ = (Index("ix_staff_notif_user", "user_id", "read_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class JobLock(Base):
    """A lease so that a periodic job never runs twice at once, across hosts."""

    __tablename__ = "job_locks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    until: Mapped[datetime] = mapped_column(UTCDateTime())


class InboundKind(enum.StrEnum):
    NEW_CASE = "new_case"
    FOLLOWUP = "followup"
    STATUS = "status"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    FLOOD = "flood"


class InboundMessage(Base):
    """Every text a citizen sent, kept even when it made no case (flooding, keywords)."""

    __tablename__ = "inbound_messages"
    PRINTS_NUMBER: ClassVar[tuple[str, ...]] = ("reply",)  # our answer, from a template
    __table_args__ = (
        CheckConstraint(f"kind IN ({_in(InboundKind)})", name="kind"),
        Index("ix_inbound_from_time", "municipality", "from_phone", "received_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    municipality: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(8), default="sms")
    provider_sid: Mapped[str] = mapped_column(String(64), unique=True)
    from_phone: Mapped[str] = mapped_column(String(20))
    to_phone: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text, default="")
    num_media: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    language: Mapped[str] = mapped_column(String(2), default="it")
    reply: Mapped[str] = mapped_column(Text, default="")


class OptOut(Base):
    """A citizen who asked for no more texts (keyword, or the provider's 21610)."""

    __tablename__ = "opt_outs"
    municipality: Mapped[str] = mapped_column(String(64), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Call(Base):
    """A phone call's state, kept on the server: any step may land on any worker or host."""

    __tablename__ = "calls"
    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    municipality: Mapped[str] = mapped_column(String(64))
    from_phone: Mapped[str] = mapped_column(String(20))
    to_phone: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(2), default="it")
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_status: Mapped[str | None] = mapped_column(String(20))
    duration_seconds: Mapped[int | None] = mapped_column(Integer)


class CallStep(Base):
    """The answer given to one request of a call, replayed when the provider retries it."""

    __tablename__ = "call_steps"
    __table_args__ = (UniqueConstraint("call_sid", "step", "request_hash"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """An outside app's Open311 key; only its SHA-256 is kept."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    municipality: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(120))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ReplyTemplate(Base):
    """The answer archive: a reply kept by URP staff for a category (or any) and a step."""

    __tablename__ = "reply_templates"
    __table_args__ = (Index("ix_reply_templates_muni", "municipality", "step", "category"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    municipality: Mapped[str] = mapped_column(String(64))
    category: Mapped[str | None] = mapped_column(String(64))  # None: any category
    step: Mapped[str] = mapped_column(String(32))  # close, not_competent, note
    language: Mapped[str] = mapped_column(String(2), default="it")
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class StaffSession(Base):
    """A console login: the cookie carries a random id, the row its SHA-256 and its limits."""

    __tablename__ = "staff_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    language: Mapped[str] = mapped_column(String(2), default="it")
