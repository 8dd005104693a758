"""The process's settings from its environment, declared once and read strictly (as
`cases.config` reads config.toml): a value that is not what its variable takes stops start-up
with a message naming the variable. Unset or empty means the default."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cases.config import ConfigError

Seconds = Annotated[float, Field(gt=0, le=86_400)]
PerMinute = Annotated[float, Field(ge=0, le=100_000)]

# how long a claimed text may stay unrecorded before the sweeper reconciles it
SMS_CLAIM_TIMEOUT = timedelta(minutes=2)


class Settings(BaseModel):
    """Each field is the environment variable of the same name (CONFIG_PATH is read from
    LINEADIRETTA_CONFIG)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    SECRET_KEY: str | None = None
    DATABASE_URL: str | None = None
    REDIS_URL: str | None = None
    PUBLIC_BASE_URL: str | None = None
    CONFIG_PATH: str = "config.toml"
    TWILIO_ACCOUNT_SID: str | None = None
    TWILIO_AUTH_TOKEN: str | None = None
    TWILIO_API_BASE_URL: str | None = None
    SMS_CLAIM_TIMEOUT_SECONDS: Annotated[int, Field(ge=10, le=86_400)] = int(
        SMS_CLAIM_TIMEOUT.total_seconds()
    )
    SMS_REQUEUE_SECONDS: Annotated[int, Field(ge=1, le=86_400)] = 60
    SWEEP_EVERY_SECONDS: Seconds = 10.0
    OVERDUE_EVERY_MINUTES: Annotated[float, Field(gt=0, le=1440)] = 15.0
    TRANSCRIBER: str | None = None
    # how many reverse proxies stand in front (their X-Forwarded-* headers are trusted)
    PROXY_HOPS: Annotated[int, Field(ge=0, le=10)] = 0
    CONSOLE_LOGINS_PER_MINUTE: PerMinute = 10.0
    OPEN311_POSTS_PER_MINUTE: PerMinute = 30.0
    # Open311 photos from private addresses (a test bench's own media server), never in
    # production
    OPEN311_ALLOW_PRIVATE_MEDIA: bool = False
    # calls' navigation state: this Redis, else REDIS_URL's (see ivr.views)
    IVR_REDIS_URL: str | None = None
    IVR_REDIS_PREFIX: str | None = None
    # this host's spool: contacts kept while the register is away (see infra.spool)
    SPOOL_PATH: str | None = None
    # host names requests may name besides PUBLIC_BASE_URL's (comma-separated)
    TRUSTED_HOSTS: tuple[str, ...] = ()
    # `lineadiretta worker` replaces a Celery worker that receives nothing while tasks wait
    WORKER_STUCK_SECONDS: Seconds = 120.0
    # staff e-mails: SMTP_URL (smtp://user:pass@host:587, smtps://host:465), or SMTP_HOST and
    # the rest; none: the sandbox (workers.mailer.smtp_settings reads them together)
    SMTP_URL: str | None = None
    SMTP_HOST: str | None = None
    SMTP_PORT: Annotated[int, Field(ge=1, le=65_535)] | None = None
    SMTP_USER: str | None = None
    SMTP_PASSWORD: str | None = None
    SMTP_FROM: str | None = None

    @field_validator("TRUSTED_HOSTS", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(h.strip() for h in value.split(",") if h.strip())
        return value


_RENAMED = {"CONFIG_PATH": "LINEADIRETTA_CONFIG"}


def load_settings(environ: Mapping[str, str]) -> Settings:
    """The settings in `environ`; ConfigError naming each variable with a bad value."""
    given: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = environ.get(_RENAMED.get(name, name), "")
        if value.strip():
            given[name] = value.strip()
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_RENAMED.get(str(e['loc'][0]), e['loc'][0])}={str(given.get(str(e['loc'][0])))[:40]!r}: "
            f"{e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"environment: {problems}") from None
