"""/api/audit (operators and viewers): every operator action, newest first."""

from __future__ import annotations

from typing import Any

from app.api import api_blueprint, query
from app.schemas.audit import AUDIT_QUERY
from tasks.services import current_services

bp = api_blueprint("audit", __name__, operators_only=True)


@bp.get("")
def audit_log() -> dict[str, Any]:
    """Up to `limit` entries older than `before` (an entry id); `next_before` continues."""
    args = query(AUDIT_QUERY, "INVALID_QUERY", "Invalid audit query")
    entries = current_services().audit.newest(args["limit"], args.get("before", "+"))
    full = len(entries) == args["limit"]
    return {"success": True, "entries": entries,
            "next_before": entries[-1]["id"] if full else None}
