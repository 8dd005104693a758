"""The service's own endpoints for whoever runs it: /healthz (a load balancer's readiness
check) and /metrics (Prometheus' text format). No personal data."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from infra.runtime import runtime

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    rt = runtime()
    checks: dict[str, Any] = {}
    try:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("healthz: database unreachable: %s", exc.__class__.__name__)
        checks["database"] = "unreachable"
    if rt.redis_url:
        try:
            redis.Redis.from_url(rt.redis_url, socket_timeout=1).ping()
            checks["broker"] = "ok"
        except Exception as exc:
            log.warning("healthz: broker unreachable: %s", exc.__class__.__name__)
            checks["broker"] = "unreachable"
    else:
        checks["broker"] = "embedded"
    try:
        spooled = rt.spool.stats(runtime().clock())
    except Exception as exc:  # the host's disk: nothing can be kept while the DB is away
        log.error("healthz: spool unusable: %s", exc.__class__.__name__)
        spooled = None
    if spooled is not None:
        checks["spool"] = {
            "depth": spooled.depth,
            "oldest_age_seconds": spooled.oldest_age_seconds,
            "held": spooled.held,
        }
    # The broker being down degrades sending, not intake; the database being away degrades
    # intake to the spool: still ready, as long as the spool can keep what arrives.
    if checks["database"] == "ok" and spooled is not None and spooled.depth == 0:
        status, code = "ok", 200
    elif spooled is not None:
        status, code = "degraded: spooling", 200
    elif checks["database"] == "ok":
        status, code = "degraded: no spool", 200
    else:
        status, code = "unavailable", 503
    return jsonify(status=status, **checks), code


@bp.get("/metrics")
def metrics() -> Any:
    """What an operator alerts on."""
    spooled = runtime().spool.stats(runtime().clock())
    lines = [
        "# HELP lineadiretta_spool_depth Contacts in this host's spool, waiting for the register.",
        "# TYPE lineadiretta_spool_depth gauge",
        f"lineadiretta_spool_depth {spooled.depth}",
        "# HELP lineadiretta_spool_oldest_age_seconds Age of the oldest waiting contact.",
        "# TYPE lineadiretta_spool_oldest_age_seconds gauge",
        f"lineadiretta_spool_oldest_age_seconds {spooled.oldest_age_seconds or 0:.1f}",
        "# HELP lineadiretta_spool_held Spooled contacts that failed repeatedly: staff look.",
        "# TYPE lineadiretta_spool_held gauge",
        f"lineadiretta_spool_held {spooled.held}",
    ]
    return Response("\n".join(lines) + "\n", mimetype="text/plain")
