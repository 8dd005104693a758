"""The citizen's status page (/track/{protocol}), the link in their SMS."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("track", __name__, url_prefix="/track", template_folder="templates")
