"""/dashboard: the operator console, server-rendered, with live updates over /ws.

Each page is rendered from Redis (so an API restart loses nothing it shows) with
its data embedded as JSON; app/console/static/console.js keeps it live from the
`/ws` event stream, resuming from the last event id after a dropped connection.
Actions are the API's own routes, called with the session cookie and its CSRF
token (app/auth.py), so one set of rules and one audit trail serve both.
Every asset is served from here: the console works with no internet access.
"""

from __future__ import annotations

from flask import Blueprint, Response

bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")

# The console runs only its own scripts and talks only to this origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@bp.after_request
def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


from app.console import pages  # noqa: E402,F401  (registers the routes)
