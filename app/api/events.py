"""/api/events: the operators' view of every event; and the history reader the
job and workflow endpoints share."""

from __future__ import annotations

from typing import Any

from app.api import api_blueprint, query
from app.auth import require_staff
from app.schemas.events import EVENT_QUERY
from tasks.core.events import EVERYTHING, Feed
from tasks.services import current_services

bp = api_blueprint("events", __name__)


@bp.get("")
def all_events() -> dict[str, Any]:
    """Every event after `since`, for operators (a tenant reads its jobs' and workflows')."""
    require_staff()
    return history(EVERYTHING)


def history(feed: Feed) -> dict[str, Any]:
    """One page of `feed` after `since`; `next_since` continues when the page is full."""
    args = query(EVENT_QUERY, "INVALID_QUERY", "Invalid event query")
    events = current_services().events.read(feed, args["since"], args["limit"])
    full = len(events) == args["limit"]
    return {"success": True, "events": events, "next_since": events[-1]["id"] if full else None}
