"""The test tiers are wired: scripts/test hands the tests a real PostgreSQL and Redis.

Without them these tests skip, except in CI (CI=true), where they fail.
"""

import os

import pytest
import redis
from sqlalchemy import create_engine, text


def _service_url(var: str, service: str) -> str:
    url = os.environ.get(var)
    if not url:
        reason = f"{var} is not set: {service} is not available (run ./scripts/test)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires {service}")
        pytest.skip(reason)
    return url


@pytest.mark.postgres
def test_postgresql_is_reachable() -> None:
    engine = create_engine(_service_url("TEST_DATABASE_URL", "PostgreSQL"))
    try:
        with engine.connect() as conn:
            version = conn.execute(text("select version()")).scalar_one()
    finally:
        engine.dispose()
    assert "PostgreSQL" in version


@pytest.mark.redis
def test_redis_is_reachable() -> None:
    client = redis.Redis.from_url(_service_url("TEST_REDIS_URL", "Redis"))
    try:
        assert client.ping() is True
    finally:
        client.close()
