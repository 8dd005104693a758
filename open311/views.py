"""Open311 GeoReport v2 (/open311/v2): the civic-reporting interface outside apps speak."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("open311", __name__, url_prefix="/open311/v2")
