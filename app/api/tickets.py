"""/api/ws-tickets: trade the caller's key for a single-use ticket to open `/ws`."""

from __future__ import annotations

from typing import Any

from flask import current_app

from app.api import api_blueprint
from app.auth import digest_of_request
from app.tickets import TICKET_SECONDS

bp = api_blueprint("tickets", __name__)


@bp.post("")
def issue() -> tuple[dict[str, Any], int]:
    """A ticket for `/ws?ticket=...`, good for one handshake within a minute."""
    ticket = current_app.extensions["ws_tickets"].issue(digest_of_request())
    return {"success": True, "ticket": ticket, "expires_in": TICKET_SECONDS}, 201
