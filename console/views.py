"""The operators' web console (/console): server-rendered pages over the domain's functions."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint(
    "console", __name__, url_prefix="/console", template_folder="templates", static_folder="static"
)
