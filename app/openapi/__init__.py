"""The API's description, public: `GET /api/openapi.json` (OpenAPI 3.1) and `GET /api/docs`
(the same, as a page rendered here, with no script and nothing from another site).

The document is built from the routes' schemas on the first request and kept for the
life of the app (app/openapi/document.py); it says what the API is, never how this
deployment is set up, so it needs no key.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template

from app.openapi.document import build
from app.openapi.outline import outline

bp = Blueprint("openapi", __name__, template_folder="templates", static_folder="static",
               static_url_path="/api/docs/static")

# Only this site's stylesheet (and the empty icon): the page runs no script, loads nothing
# else, and sits in no frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def current_document() -> dict[str, Any]:
    """The app's document, built once (a concurrent first build just builds it twice)."""
    document: dict[str, Any] | None = current_app.extensions.get("openapi")
    if document is None:
        document = current_app.extensions["openapi"] = build(current_app.view_functions)
    return document


@bp.get("/api/openapi.json")
def spec() -> Response:
    return jsonify(current_document())


@bp.get("/api/docs")
def docs() -> str:
    return render_template("openapi/docs.html", **outline(current_document()))


@bp.after_request
def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response
