"""The citizen's status page (/track/{protocol}), the link in their SMS."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, render_template, request

from cases.errors import NotFound
from cases.i18n import plural, words
from cases.tracking import Ambiguous, locate, pick_language, public_view
from infra.runtime import runtime
from infra.web import ctx_for, db

bp = Blueprint("track", __name__, url_prefix="/track", template_folder="templates")
log = logging.getLogger(__name__)

# The token is in the URL: keep it out of caches, referrers and search engines.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers.update(HEADERS)
    return resp


def _accepted() -> str | None:
    return request.accept_languages.best_match(["it", "en"])


def _page(name: str, status: int, lang: str, **values: object) -> tuple[str, int]:
    page = render_template(
        f"track/{name}.html",
        lang=lang,
        en=lang == "en",
        t=lambda key: words("track", lang, key, {}),
        tn=lambda one, many, n: plural("track", lang, one, many, n),
        **values,
    )
    return page, status


@bp.get("/<int:year>/<number>")
def slash_form(year: int, number: str) -> tuple[str, int]:
    """A number copied as printed (2026/0000123) lands on the same page as the link's form."""
    return status_page(f"{year}-{number}")


@bp.get("/<protocol>")
def status_page(protocol: str) -> tuple[str, int]:
    """Status and office for anyone; the public timeline with the case's token (`t`)."""

    config = runtime().config
    token = request.args.get("t") or None
    asked = request.args.get("lang")
    muni_code = request.args.get("m") or None
    try:
        found = locate(db(), config.municipality, protocol, token, muni_code)
    except NotFound as exc:
        log.info("track: %s", exc)
        return _page("not_found", 404, pick_language(asked, None, _accepted()))
    except Ambiguous as exc:
        log.info("track: %r is held by %d municipalities, asking", protocol[:40], len(exc.choices))
        lang = pick_language(asked, None, _accepted())
        return _page("choose", 200, lang, protocol=protocol, choices=exc.choices)
    if found.wrong_token:
        # Same page as without a token: the answer must not tell a guess from a miss.
        log.warning("track: wrong token for case %s (%s)", found.case.protocol, found.muni.code)
    lang = pick_language(asked, found.case.language, _accepted())
    ctx = ctx_for(found.muni)
    view = public_view(ctx, found.case, full=found.full, language=lang)
    return _page("status", 200, lang, v=view, token=token if found.full else None, m=muni_code)
